"""Requeue on preemption or time limit without losing or repeating an optimizer step.

SLURM sends submitit's signal (``USR2``; ``--signal=USR2@<delay>``) to every task of a job some time
before its time limit, and at preemption on clusters with ``PreemptParameters=send_user_signal``
(submitit's own test helper ``job._interrupt()`` sends SIGTERM, then USR2). submitit's handler then,
on global rank 0 only, calls the job's ``checkpoint()`` and requeues at once — from inside a signal
handler, in the middle of a step, while the other ranks keep training. A checkpoint written there
would be torn, and one written by rank 0 alone would deadlock DDP. So the job defers the signal:

1. :meth:`PreemptionSignal.install` (the first thing a job does) swaps submitit's handler for one
   that only records the signal, and does the same for SIGTERM (``scancel``, preemption without a
   user signal): Lightning's SIGTERM handler would stop at the next step without a checkpoint.
   SIGTERM alone saves and stops without requeue (SLURM requeues a preempted job itself; a cancel
   must end). Lightning's own SLURM requeue (``auto_requeue``, on SIGUSR1) is off (the launcher sets
   ``SLURMEnvironment(auto_requeue=False)``): submitit is the only owner.
2. :class:`~shufflenet_pl.callbacks.PreemptionCheckpoint`, a callback, asks all ranks at every
   training batch end whether one of them got the signal (one all-reduce of a flag; the signal's
   record is the :class:`~shufflenet_pl.callbacks.preemption.StopRequest` it polls, set by
   ``install``). When one did, all ranks save ``last.ckpt`` together at that batch boundary
   (written to a temporary file, then renamed), with the optimizer, LR schedule, loop counters,
   callback states and the train loader's position, and stop before the next batch.
3. The job (:mod:`cluster.job`) then hands the signal back to submitit on rank 0, which calls
   ``TrainingJob.checkpoint()`` and requeues. The requeued job resumes from ``last.ckpt``.
"""

import os
import signal
import sys
import types
from typing import Any, Callable, Optional, Union

# The callback is training code; its old home here stays an import path (job configs name it).
from shufflenet_pl.callbacks.preemption import Preempted, PreemptionCheckpoint, listen_for_stop

__all__ = ["PREEMPTION", "Preempted", "PreemptionCheckpoint", "PreemptionSignal"]

_Handler = Union[Callable[[int, Optional[types.FrameType]], Any], int, None]


class PreemptionSignal:
    """Process-wide record of submitit's preemption/timeout signal, deferred to a safe point: the
    :class:`~shufflenet_pl.callbacks.preemption.StopRequest` that ``PreemptionCheckpoint`` polls."""

    def __init__(self) -> None:
        self.signum: Optional[int] = None
        self.received = False
        #: submitit's signal came (time limit, preemption with a user signal): requeue after the save.
        self.requeue_requested = False
        self._submitit_handler: _Handler = None
        self._sigterm_handler: _Handler = None

    @property
    def installed(self) -> bool:
        return self.signum is not None

    def install(self, signum: Optional[int] = None) -> None:
        """Record ``signum`` (default: submitit's, ``USR2`` unless ``SUBMITIT_PREEMPT_SIGNAL`` says
        otherwise) instead of letting submitit's handler requeue at once. Call in the job's main
        thread, after submitit has set its handlers."""
        if signum is None:
            signum = getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2"))
        self.signum = int(signum)
        self.received = self.requeue_requested = False
        self._submitit_handler = signal.getsignal(self.signum)
        signal.signal(self.signum, self._record)
        # SIGTERM (scancel, preemption without a user signal; KillWait, 30 s by default, before SIGKILL):
        # save at the next batch end too, then stop without requeue.
        self._sigterm_handler = signal.getsignal(signal.SIGTERM)
        signal.signal(signal.SIGTERM, self._record)
        listen_for_stop(self)

    def uninstall(self) -> None:
        """Give the signals back to the handlers that ``install`` replaced."""
        if self.signum is not None:
            signal.signal(self.signum, self._submitit_handler if self._submitit_handler is not None else signal.SIG_DFL)
            signal.signal(
                signal.SIGTERM, self._sigterm_handler if self._sigterm_handler is not None else signal.SIG_DFL
            )
        self.signum = None
        self.received = self.requeue_requested = False
        listen_for_stop(None)

    def _record(self, signum: int, frame: Optional[types.FrameType]) -> None:
        if not self.received:
            # stderr is the job's log; say when the signal came, the checkpoint follows at a batch end.
            print(
                f"[shufflenet-pl] got signal {signal.Signals(signum).name}: saving last.ckpt at the next batch end",
                file=sys.stderr,
                flush=True,
            )
        self.received = True
        if signum == self.signum:
            self.requeue_requested = True

    def hand_over(self) -> None:
        """Give the recorded signal to submitit's handler: on global rank 0 it calls the job's
        ``checkpoint()``, requeues the job and exits; elsewhere it returns."""
        handler = self._submitit_handler
        if callable(handler) and self.signum is not None:
            handler(self.signum, None)


#: The job's one instance (signals are per process).
PREEMPTION = PreemptionSignal()
