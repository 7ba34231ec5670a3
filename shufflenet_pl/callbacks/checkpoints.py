"""Checkpoint callbacks: Lightning's ``ModelCheckpoint`` made safe to resume from after any fault
(:class:`VerifiedModelCheckpoint`) and a wall-clock ``last.ckpt`` (:class:`TimedCheckpoint`)."""

import sys
import time
from pathlib import Path
from typing import Any, Optional

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint

from ..checkpoints import use_verified_checkpoints
from ..joblock import FolderInUse, FolderLock

__all__ = [
    "DEFAULT_EVERY_MINUTES",
    "MAX_SAVE_SHARE",
    "TimedCheckpoint",
    "VerifiedModelCheckpoint",
    "checkpoint_dir",
    "save_last_checkpoint",
]


class VerifiedModelCheckpoint(ModelCheckpoint):
    """Lightning's ``ModelCheckpoint`` whose ``last.ckpt`` is refreshed at every save point, whose
    files are written atomically with a checksum, and whose folder one trainer at a time trains into.

    Lightning 2.6 writes ``last.ckpt`` only when a top-k checkpoint was written at the same step, so an
    epoch that does not improve the monitored metric leaves ``last.ckpt`` behind, and a crashed run
    would resume from an older epoch. Here ``last.ckpt`` always holds the newest state. While ``fit``
    runs, rank 0 holds the folder's :class:`~shufflenet_pl.joblock.FolderLock`: a second trainer into
    the same folder stops, on all its ranks, with one line naming the running one.
    """

    _lock: Optional[FolderLock] = None

    @property
    def state_key(self) -> str:
        # Checkpoints hold this callback's state (best and last paths, top k) under the key that
        # Lightning gives a ModelCheckpoint of the same settings, the class's other name: runs resume
        # it from checkpoints of either name.
        return "ModelCheckpoint" + super().state_key.removeprefix(type(self).__qualname__)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        use_verified_checkpoints(trainer)
        super().setup(trainer, pl_module, stage)
        if stage != "fit" or not self.dirpath:
            return
        refusal = None
        if trainer.is_global_zero:
            lock = FolderLock(self.dirpath)
            try:
                self._lock = lock.acquire()
            except FolderInUse as err:
                refusal = str(err)
            else:
                if lock.taken_over:
                    print(
                        f"[shufflenet-pl] took over the lock of {self.dirpath} from {lock.describe_taken_over()}, "
                        "which no longer runs",
                        file=sys.stderr,
                        flush=True,
                    )
        refusal = trainer.strategy.broadcast(refusal)
        if refusal:
            raise FolderInUse(refusal)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().teardown(trainer, pl_module, stage)
        self._release()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        super().on_exception(trainer, pl_module, exception)
        self._release()

    def _should_remove_checkpoint(self, trainer: L.Trainer, previous: str, current: str) -> bool:
        # Lightning keeps the file a fit resumed from even when it drops out of the top k; one of this
        # callback's own top-k files (in its folder) goes like any other, so that save_top_k holds
        # across resumes and fallbacks.
        if previous != current and trainer.ckpt_path is not None and self.dirpath is not None:
            resumed = Path(trainer.ckpt_path).absolute()
            if Path(previous).absolute() == resumed and resumed.parent == Path(self.dirpath).absolute():
                return True
        return super()._should_remove_checkpoint(trainer, previous, current)

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer):
            self._refresh_last(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self._refresh_last(trainer)

    def _refresh_last(self, trainer: L.Trainer) -> None:
        if (
            self.save_last
            and not self._should_skip_saving_checkpoint(trainer)
            and self._last_global_step_saved != trainer.global_step
        ):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))


def checkpoint_dir(trainer: L.Trainer, dirpath: Optional[str] = None) -> Path:
    """``dirpath``, else the first ``ModelCheckpoint``'s folder, else ``<default_root_dir>/checkpoints``."""
    if dirpath:
        return Path(dirpath)
    for callback in trainer.checkpoint_callbacks:
        if isinstance(callback, ModelCheckpoint) and callback.dirpath:
            return Path(callback.dirpath)
    return Path(trainer.default_root_dir) / "checkpoints"


def save_last_checkpoint(trainer: L.Trainer, directory: Path) -> Path:
    """Save ``<directory>/last.ckpt`` now, on all ranks together (collective; rank 0 writes), through a
    temporary file in ``directory`` renamed into place with its checksum: a kill or a full disk
    mid-write never leaves a torn ``last.ckpt``."""
    final = directory / f"{ModelCheckpoint.CHECKPOINT_NAME_LAST}{ModelCheckpoint.FILE_EXTENSION}"
    # The saved ModelCheckpoint state must call this file "last", or after a restart it would write
    # last-v1.ckpt next to it instead of replacing it.
    for callback in trainer.checkpoint_callbacks:
        if (
            isinstance(callback, ModelCheckpoint)
            and callback.save_last
            and callback.dirpath
            and Path(callback.dirpath).resolve() == directory.resolve()
        ):
            callback.last_model_path = str(final)
    use_verified_checkpoints(trainer)
    trainer.save_checkpoint(final)  # collective; its CheckpointIO writes atomically
    return final


#: Minutes between periodic saves by default: a failure redoes at most about this much training.
DEFAULT_EVERY_MINUTES = 2.0
#: By default, saving costs at most this share of training: where a save takes longer than this
#: share of the interval, the interval is stretched to ``save time / share``.
MAX_SAVE_SHARE = 0.01


class TimedCheckpoint(L.Callback):
    """Save ``last.ckpt`` every ``every_minutes`` of training, at a batch boundary, atomically, with the
    optimizer, schedule, loop counters and the loader's position: a crash or a lost node redoes the
    training since the last save, at most that much (epoch-end checkpoints alone can lose a whole
    ImageNet epoch).

    Each save is timed. By default (no ``every_minutes``) it saves every :data:`DEFAULT_EVERY_MINUTES`,
    and where saving would cost more than :data:`MAX_SAVE_SHARE` of training at that interval (a
    slow file system, a large model) the interval is stretched to ``save time / MAX_SAVE_SHARE`` and
    one line says so. An explicit ``every_minutes`` is kept as given.

    Args:
        every_minutes: wall-clock minutes between saves; ``None``: the default above.
        dirpath: folder of ``last.ckpt``; ``None``: the ``ModelCheckpoint``'s folder.
    """

    def __init__(self, every_minutes: Optional[float] = None, dirpath: Optional[str] = None) -> None:
        if every_minutes is not None and not every_minutes > 0:
            raise ValueError(f"TimedCheckpoint.every_minutes must be > 0, got {every_minutes}")
        self.every_minutes = every_minutes
        self.dirpath = dirpath
        self._adapts = every_minutes is None
        self._interval_s = 60 * (DEFAULT_EVERY_MINUTES if every_minutes is None else every_minutes)
        self._last_save = time.monotonic()

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        use_verified_checkpoints(trainer)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._last_save = time.monotonic()

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        due = time.monotonic() - self._last_save >= self._interval_s
        # One small all-reduce per step: every rank saves at the same step or none does.
        if not trainer.strategy.reduce_boolean_decision(due, all=False):
            return
        start = time.monotonic()
        path = save_last_checkpoint(trainer, checkpoint_dir(trainer, self.dirpath))
        self._last_save = time.monotonic()
        seconds = self._last_save - start
        if not trainer.is_global_zero:
            return
        print(
            f"[shufflenet-pl] saved {path} at global step {trainer.global_step} in {seconds:.2f} s "
            f"(every {self._interval_s / 60:g} min)",
            file=sys.stderr,
            flush=True,
        )
        if self._adapts and seconds > MAX_SAVE_SHARE * self._interval_s:
            self._interval_s = seconds / MAX_SAVE_SHARE
            print(
                f"[shufflenet-pl] saving takes {seconds:.2f} s: checkpoints now every {self._interval_s / 60:.1f} min "
                f"so that saving costs at most {100 * MAX_SAVE_SHARE:g} % of training",
                file=sys.stderr,
                flush=True,
            )
