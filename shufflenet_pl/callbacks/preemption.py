"""Save and stop at a batch boundary when the job is told to stop (preemption, time limit, ``scancel``).

A signal handler may not checkpoint: it runs in the middle of a step, and a save by one rank alone
deadlocks DDP. So the handler only records the signal in a :class:`StopRequest`; the job makes it
the one that :class:`PreemptionCheckpoint` polls (:func:`listen_for_stop`), and the callback then
saves ``last.ckpt`` on all ranks together at the next batch end and leaves ``fit`` by raising
:class:`Preempted`. The signals themselves are the launcher's (:mod:`cluster.requeue`).
"""

import signal
import sys
import types
from pathlib import Path
from typing import Any, Callable, Optional, Protocol, Union

import lightning as L
from lightning.pytorch.callbacks import Callback

from .checkpoints import checkpoint_dir, save_last_checkpoint

__all__ = ["Preempted", "PreemptionCheckpoint", "StopRequest", "listen_for_stop", "stop_request"]

_Handler = Union[Callable[[int, Optional[types.FrameType]], Any], int, None]


class StopRequest(Protocol):
    """Whether this process was asked to stop; a signal handler sets ``received``."""

    received: bool


_listened: Optional[StopRequest] = None


def listen_for_stop(request: Optional[StopRequest]) -> None:
    """Make ``request`` the one that every :class:`PreemptionCheckpoint` of this process polls;
    ``None`` stops listening (the callbacks are then inert)."""
    global _listened
    _listened = request


def stop_request() -> Optional[StopRequest]:
    """The request that :class:`PreemptionCheckpoint` polls, if any."""
    return _listened


class Preempted(Exception):
    """Raised by :class:`PreemptionCheckpoint` once ``last.ckpt`` is saved, to leave ``Trainer.fit``."""

    def __init__(self, checkpoint: Path, global_step: int) -> None:
        super().__init__(f"preempted: saved {checkpoint} at global step {global_step}")
        self.checkpoint = checkpoint
        self.global_step = global_step


class PreemptionCheckpoint(Callback):
    """Save ``last.ckpt`` at the first training batch boundary after the preemption signal, on all
    ranks together, then stop training by raising :class:`Preempted` before the next batch.

    Inert unless a :class:`StopRequest` is listened for (the launcher's jobs install one), so a job's
    ``config.yaml`` also runs as a plain ``shufflenet-pl fit --config``.

    Args:
        dirpath: folder of ``last.ckpt``; ``None`` takes the first ``ModelCheckpoint``'s ``dirpath``,
            else ``<default_root_dir>/checkpoints``.
    """

    def __init__(self, dirpath: Optional[str] = None) -> None:
        self.dirpath = dirpath
        self.saved: Optional[Path] = None
        self._sigterm_before_lightning: _Handler = None

    def _checkpoint_dir(self, trainer: L.Trainer) -> Path:
        return checkpoint_dir(trainer, self.dirpath)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # Before Lightning registers its SIGTERM handler (right before the run starts).
        self._sigterm_before_lightning = signal.getsignal(signal.SIGTERM)

    def _keep_sigterm_harmless(self) -> None:
        # Lightning's SIGTERM handler stops at the next step without a checkpoint (and broadcasts
        # from inside the handler); under submitit SIGTERM precedes the USR2 that we act on.
        if _listened is not None and self._sigterm_before_lightning is not None:
            signal.signal(signal.SIGTERM, self._sigterm_before_lightning)

    def on_sanity_check_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._keep_sigterm_harmless()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._keep_sigterm_harmless()
        if _listened is not None and trainer.is_global_zero:
            print(
                f"[shufflenet-pl] training from global step {trainer.global_step} (epoch {trainer.current_epoch}) "
                f"on {trainer.world_size} process(es)",
                file=sys.stderr,
                flush=True,
            )

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        request = _listened
        if request is None or self.saved is not None:
            return
        # Every rank takes part in the reduction at every step, so all of them stop at the same one.
        if not trainer.strategy.reduce_boolean_decision(request.received, all=False):
            return
        if trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            return  # the epoch's end (validation, epoch-end checkpoints) comes first; stop at the next batch
        self.saved = self._save(trainer)

    def _save(self, trainer: L.Trainer) -> Path:
        final = save_last_checkpoint(trainer, self._checkpoint_dir(trainer))
        if trainer.is_global_zero:
            print(f"[shufflenet-pl] saved {final} at global step {trainer.global_step}", file=sys.stderr, flush=True)
        return final

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        # Stop after the saved step's metrics were logged and any epoch-end work ran, before the next step.
        if self.saved is not None:
            raise Preempted(self.saved, trainer.global_step)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.saved is not None:
            raise Preempted(self.saved, trainer.global_step)
