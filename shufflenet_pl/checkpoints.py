"""Checkpoints written atomically with a checksum, and verified before any resume.

Every checkpoint is serialised in memory, hashed (SHA-256 of the whole file) and written, with a
``<name>.sha256`` sidecar in ``sha256sum`` format, to temporary files in its own folder that are
renamed into place (:func:`shufflenet_pl.files.atomic_paths`). Before a resume the candidate is
verified: its checksum must match the sidecar (a checkpoint without one must load). A checkpoint that
fails is named in one line and skipped for the newest good checkpoint of its folder; the checkpoints
of the discarded timeline (newer than the one resumed from) are removed, so ``save_top_k`` still
holds. When no checkpoint is good, nothing starts over unless asked to.
"""

import hashlib
import io
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch import Trainer

from .errors import InputError
from .files import atomic_paths

__all__ = [
    "CHECKSUM_SUFFIX",
    "CheckpointChoice",
    "NoGoodCheckpoint",
    "VerifiedCheckpointIO",
    "checksum_path",
    "choose_checkpoint",
    "file_digest",
    "use_verified_checkpoints",
    "verify_checkpoint",
]

CHECKSUM_SUFFIX = ".sha256"
_CHUNK = 8 << 20


class NoGoodCheckpoint(InputError):
    """Every checkpoint of a folder failed to verify: the message names them and the way to start over."""


def checksum_path(path: Path | str) -> Path:
    """The sidecar holding ``path``'s SHA-256: ``<path>.sha256``."""
    path = Path(path)
    return path.with_name(path.name + CHECKSUM_SUFFIX)


def file_digest(path: Path | str) -> str:
    """SHA-256 of a whole file, read in 8 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def save_with_checksum(checkpoint: Dict[str, Any], path: Path | str) -> None:
    """``torch.save`` ``checkpoint`` to ``path`` with its checksum sidecar, both atomically in
    ``path``'s folder (a full disk raises :class:`~shufflenet_pl.files.NoSpaceError` and leaves the
    previous pair as it was)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    data = buffer.getbuffer()
    line = f"{hashlib.sha256(data).hexdigest()}  {path.name}\n"
    with atomic_paths(path, checksum_path(path)) as (tmp, tmp_sum):
        with open(tmp, "wb") as handle:
            handle.write(data)
        tmp_sum.write_text(line, encoding="utf-8")


def verify_checkpoint(path: Path | str) -> Optional[str]:
    """``None`` when ``path`` is good, else why not: its checksum differs from the recorded one, or
    (no checksum recorded) it does not load."""
    path = Path(path)
    try:
        if not path.is_file():
            return "no such file"
        sidecar = checksum_path(path)
        if sidecar.is_file():
            recorded = sidecar.read_text(encoding="utf-8").split()[:1]
            if recorded != [file_digest(path)]:
                return f"its SHA-256 differs from the one recorded in {sidecar.name} (damaged or torn)"
            return None
        torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # a torn zip, a damaged pickle, an unreadable file: all mean "do not resume"
        text = str(err).strip().splitlines()
        return f"it does not load ({type(err).__name__}{': ' + text[0][:160] if text else ''})"
    return None


@dataclass
class CheckpointChoice:
    """The checkpoint to resume from (``None``: start from the beginning), the bad ones skipped
    with why, and the discarded timeline's files removed."""

    path: Optional[Path]
    bad: List[Tuple[Path, str]] = field(default_factory=list)
    removed: List[Path] = field(default_factory=list)


def _say(message: str) -> None:
    print(f"[shufflenet-pl] {message}", file=sys.stderr, flush=True)


def choose_checkpoint(
    preferred: Path | str,
    restart_from_scratch: bool = False,
    remove_discarded: bool = True,
    say: Callable[[str], None] = _say,
) -> CheckpointChoice:
    """The newest good checkpoint of ``preferred``'s folder, ``preferred`` first.

    Each bad candidate is named in one line. When a fallback happened and ``remove_discarded``, the
    checkpoints newer than the chosen one (all of them bad) and their sidecars are removed: they are a
    timeline that training does not continue. A folder without checkpoints gives ``path=None``.

    Raises:
        NoGoodCheckpoint: the folder has checkpoints, none of them good, and not ``restart_from_scratch``
            (with it, they are removed and ``path`` is ``None``).
    """
    preferred = Path(preferred)
    folder = preferred.parent
    others = [p for p in folder.glob("*.ckpt") if p != preferred and p.is_file()]
    others.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    candidates = ([preferred] if preferred.exists() else []) + others
    choice = CheckpointChoice(path=None)
    for candidate in candidates:
        why = verify_checkpoint(candidate)
        if why is None:
            choice.path = candidate
            break
        choice.bad.append((candidate, why))
        say(f"skipping {candidate}: {why}")
    if choice.path is None and choice.bad:
        names = ", ".join(p.name for p, _ in choice.bad)
        if not restart_from_scratch:
            raise NoGoodCheckpoint(
                f"no good checkpoint in {folder} ({names} failed to verify); nothing was started: "
                f"--restart-from-scratch starts over from step 0 and removes them"
            )
        choice.removed = _remove([p for p, _ in choice.bad])
        say(f"starting from step 0 (--restart-from-scratch): removed {names}")
    elif choice.path is not None and choice.bad and remove_discarded:
        chosen = choice.path.stat().st_mtime
        choice.removed = _remove([p for p, _ in choice.bad if not p.exists() or p.stat().st_mtime >= chosen])
        if choice.removed:
            say(
                f"resuming from {choice.path}; removed the discarded timeline: "
                + ", ".join(p.name for p in choice.removed)
            )
    return choice


def _remove(paths: List[Path]) -> List[Path]:
    removed = []
    for path in paths:
        for victim in (path, checksum_path(path)):
            try:
                victim.unlink()
            except FileNotFoundError:
                continue
        removed.append(path)
    return removed


class VerifiedCheckpointIO(TorchCheckpointIO):
    """Lightning's ``TorchCheckpointIO`` that writes each checkpoint atomically in its own folder with
    a SHA-256 sidecar (Lightning's own writes go through a file in the system temporary folder, a copy
    across filesystems that a full disk tears), and removes the sidecar with the checkpoint."""

    def save_checkpoint(self, checkpoint: Dict[str, Any], path: Any, storage_options: Optional[Any] = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        save_with_checksum(checkpoint, Path(path))

    def remove_checkpoint(self, path: Any) -> None:
        super().remove_checkpoint(path)
        checksum_path(Path(path)).unlink(missing_ok=True)


def use_verified_checkpoints(trainer: Trainer) -> None:
    """Make ``trainer`` write its checkpoints through :class:`VerifiedCheckpointIO` unless it was given
    another ``CheckpointIO`` than Lightning's default."""
    strategy = trainer.strategy
    current = getattr(strategy, "_checkpoint_io", None)
    if isinstance(current, VerifiedCheckpointIO):
        return
    if current is None or type(current) is TorchCheckpointIO:
        strategy.checkpoint_io = VerifiedCheckpointIO()
