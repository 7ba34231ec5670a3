"""One trainer per checkpoint folder: a lock held by the running job.

The lock is a POSIX record lock (``fcntl.lockf``) on ``<folder>/.trainer.lock``, held for as long as
the training process lives; the file names its holder (process, host, start time). The kernel (or the
NFS lock manager) drops the lock when the holder dies, so a lock file left by a dead process is taken
over by the next trainer, which says so. A second trainer into the same folder is refused with one
line naming the running one.
"""

import errno
import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import Any, Dict, Optional

from .errors import InputError

__all__ = ["FolderInUse", "FolderLock", "LOCK_NAME", "lock_holder"]

LOCK_NAME = ".trainer.lock"


class FolderInUse(InputError):
    """Another running trainer holds the folder's lock; the message names it."""


def _describe(holder: Dict[str, Any]) -> str:
    if not holder:
        return "another process"
    return f"pid {holder.get('pid')} on {holder.get('host')} (since {holder.get('started')})"


def _read(fd: int) -> Dict[str, Any]:
    raw = os.pread(fd, 4096, 0).decode("utf-8", errors="replace").strip()
    try:
        data = json.loads(raw) if raw else {}
    except json.JSONDecodeError:
        return {}
    return data if isinstance(data, dict) else {}


def _try_lock(fd: int) -> bool:
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        if err.errno in (errno.EACCES, errno.EAGAIN):
            return False
        raise
    return True


def lock_holder(folder: Path | str) -> Optional[Dict[str, Any]]:
    """Who holds ``folder``'s lock now (``{}`` if the file does not say), or ``None`` when no running
    process holds it. Asked from another process than the holder (POSIX locks are per process)."""
    path = Path(folder) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return None
    try:
        if _try_lock(fd):
            fcntl.lockf(fd, fcntl.LOCK_UN)
            return None
        return _read(fd)
    finally:
        os.close(fd)


class FolderLock:
    """The lock of one checkpoint folder, for this process.

    Args:
        folder: the folder trained into (made if missing).
    """

    def __init__(self, folder: Path | str) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self._fd: Optional[int] = None
        self.taken_over: Dict[str, Any] = {}

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> "FolderLock":
        """Take the lock, or raise :class:`FolderInUse` naming the process that holds it. A lock file
        of a process that is gone is taken over; ``taken_over`` then describes that process."""
        if self._fd is not None:
            return self
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        if not _try_lock(fd):
            holder = _read(fd)
            os.close(fd)
            raise FolderInUse(
                f"{self.folder} is in use by a running trainer: {_describe(holder)}; "
                f"wait for it to end or stop it, then try again"
            )
        previous = _read(fd)
        mine = {"pid": os.getpid(), "host": socket.gethostname()}
        if previous and {k: previous.get(k) for k in mine} != mine:
            self.taken_over = previous
        record = {**mine, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
        os.fsync(fd)
        self._fd = fd
        return self

    def release(self) -> None:
        """Drop the lock; the file stays (a later trainer overwrites its record)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)
        except OSError:
            pass
        os.close(fd)  # closing drops the record lock

    def describe_taken_over(self) -> str:
        return _describe(self.taken_over)
