"""Atomic file writes: every file the project writes (checkpoints, ``.beton`` files and their sidecars,
results, job records) is written to a hidden temporary sibling in the destination's own folder, flushed,
fsynced and renamed over the destination. A rename within one filesystem is atomic, so a reader sees the
previous file or the new one, never a torn one; a full disk or a crash leaves the previous file intact and
no temporary file behind."""

import contextlib
import errno
import os
import socket
from pathlib import Path
from typing import IO, Callable, Iterator

__all__ = [
    "NoSpaceError",
    "atomic_path",
    "atomic_paths",
    "atomic_write",
    "call_atomically",
    "no_space_error",
    "temporary_sibling",
    "write_bytes",
    "write_text",
]


class NoSpaceError(OSError):
    """The destination's filesystem is full; the message names the mount and the file, and says that the
    previous file is intact."""


def temporary_sibling(path: Path) -> Path:
    """A hidden sibling of ``path`` that no other process writes: named by host and process, since ranks on
    several nodes (whose process ids can coincide) may write into the same shared folder."""
    return path.with_name(f".{path.name}.tmp-{socket.gethostname()}-{os.getpid()}")


def _mount_point(path: Path) -> Path:
    path = path.resolve()
    while not path.is_mount() and path != path.parent:
        path = path.parent
    return path


def no_space_error(path: Path, error: OSError) -> NoSpaceError:
    """The one-line error for a full disk while writing ``path``."""
    mount = _mount_point(Path(path).parent)
    state = "the previous file is intact" if Path(path).exists() else "nothing was written"
    return NoSpaceError(errno.ENOSPC, f"no space left on {mount} writing {path}; {state}")


def _fsync_directory(directory: Path) -> None:
    with contextlib.suppress(OSError):  # not every filesystem lets a directory be opened or synced
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` for a writer that takes a file name (``torch.save``, FFCV's
    writer); on success the file is fsynced and renamed to ``path``; on any error it is removed. A full
    disk raises :class:`NoSpaceError`."""
    path = Path(path)
    tmp = temporary_sibling(path)
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        _fsync_directory(path.parent)
    except OSError as error:
        tmp.unlink(missing_ok=True)
        if error.errno == errno.ENOSPC and not isinstance(error, NoSpaceError):
            raise no_space_error(path, error) from error
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_paths(*paths: Path | str) -> Iterator[list[Path]]:
    """:func:`atomic_path` for files that belong together (a checkpoint and its checksum): every
    temporary file is written and fsynced before the first rename, so a full disk or a failed writer
    leaves all of them as they were; they are renamed in the order given."""
    targets = [Path(p) for p in paths]
    temporaries = [temporary_sibling(p) for p in targets]
    try:
        yield temporaries
        for tmp in temporaries:
            _fsync_file(tmp)
        for tmp, target in zip(temporaries, targets):
            os.replace(tmp, target)
        for directory in dict.fromkeys(t.parent for t in targets):
            _fsync_directory(directory)
    except OSError as error:
        for tmp in temporaries:
            tmp.unlink(missing_ok=True)
        if error.errno == errno.ENOSPC and not isinstance(error, NoSpaceError):
            raise no_space_error(targets[0], error) from error
        raise
    except BaseException:
        for tmp in temporaries:
            tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_write(path: Path | str, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary sibling of ``path`` for writing (``"wb"`` or ``"w"``); on success it is flushed,
    fsynced and renamed to ``path``."""
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_write mode must be 'wb' or 'w', got {mode!r}")
    with atomic_path(path) as tmp:
        with open(tmp, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())


def write_bytes(path: Path | str, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_write(path, "wb") as handle:
        handle.write(data)


def write_text(path: Path | str, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_write(path, "w") as handle:
        handle.write(text)


def call_atomically(path: Path | str, write: Callable[[Path], None]) -> None:
    """Run ``write(tmp)`` for a writer that takes a file name, then move the result to ``path``."""
    with atomic_path(path) as tmp:
        write(tmp)
