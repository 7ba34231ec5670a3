"""Start an FFCV epoch that can neither hang on a failed loader thread nor fail under inference mode.

FFCV's ``Loader.__iter__`` (ffcv 1.0.2, ``ffcv/loader/loader.py``) returns an ``EpochIterator``
(``ffcv/loader/epoch_iterator.py``): a thread that runs the compiled pipelines into buffers allocated
when the epoch starts, and a queue that the main thread reads with a blocking ``get()``. It has two
flaws:

1. The thread catches only ``StopIteration``. Any other exception (a failing pipeline op, a corrupt
   sample) ends the thread with a traceback on stderr, and the main thread waits on the queue forever,
   at 0 % CPU; Lightning's SIGTERM handler only sets a flag, so SIGTERM does not end that wait either.
2. Lightning runs ``validate``/``test``/``predict`` under ``torch.inference_mode``. The epoch's
   buffers are allocated in the main thread, so they are inference tensors; inference mode is
   thread-local, so the loader thread's in-place writes into them (``ToTorchImage``, ``ToDevice``)
   raise "Inplace update to inference tensor outside InferenceMode is not allowed" -- and then 1.

:func:`start_epoch` does what ``Loader.__iter__`` does, with two changes: the epoch starts with
inference mode off (normal tensors, which the main thread may read under inference mode), and the
iterator is a :class:`WatchedEpochIterator`, whose main-thread wait is a loop of short waits that
re-raises the loader thread's exception (after the batches it finished before failing) and calls an
``interrupt`` callback meanwhile (the datamodule's: stop when Lightning received SIGTERM).
"""

from queue import Empty, Queue
from typing import Any, Callable, Optional, Sequence

import torch
from ffcv.loader import Loader
from ffcv.loader.epoch_iterator import EpochIterator
from ffcv.pipeline.compiler import Compiler

__all__ = ["POLL_SECONDS", "WatchedEpochIterator", "start_epoch"]

# How often a waiting main thread checks that the loader thread still runs (and calls ``interrupt``).
# A wait ends as soon as a batch is queued, so this costs no throughput.
POLL_SECONDS = 0.2


class _WatchedQueue(Queue):
    """The epoch's output queue: a blocking ``get()`` waits in steps of :data:`POLL_SECONDS` and
    ends with the producer's failure when the producer thread is gone."""

    def __init__(self, maxsize: int, producer: "WatchedEpochIterator") -> None:
        super().__init__(maxsize)
        self._producer = producer

    def get(self, block: bool = True, timeout: Optional[float] = None) -> Any:
        if not block or timeout is not None:
            return super().get(block, timeout)
        while True:
            try:
                return super().get(timeout=POLL_SECONDS)
            except Empty:
                pass
            if not self._producer.is_alive():
                try:  # whatever it queued just before it ended
                    return super().get_nowait()
                except Empty:
                    raise self._producer.failure() from None
            self._producer.wait_hook()


class WatchedEpochIterator(EpochIterator):
    """FFCV's ``EpochIterator`` whose loader-thread exception is raised in the thread that iterates.

    Args:
        loader: the FFCV ``Loader``.
        order: the sample indices of this epoch.
        interrupt: called in the iterating thread every :data:`POLL_SECONDS` while it waits for a
            batch; it may raise to end the wait (e.g. Lightning's ``SIGTERMException``).
    """

    def __init__(self, loader: Loader, order: Sequence[int], interrupt: Optional[Callable[[], None]] = None) -> None:
        self.error: Optional[BaseException] = None
        self._interrupt = interrupt
        super().__init__(loader, order)  # allocates the buffers and ends with self.start()

    def start(self) -> None:
        self.output_queue = _WatchedQueue(self.output_queue.maxsize, self)
        super().start()

    def run(self) -> None:
        try:
            super().run()
        except BaseException as error:  # noqa: B036 - handed to the iterating thread, which raises it
            self.error = error

    def wait_hook(self) -> None:
        """Called by the waiting main thread while the loader thread is alive."""
        if self._interrupt is not None:
            try:
                self._interrupt()
            except BaseException:
                self.close()
                raise

    def failure(self) -> BaseException:
        """The exception that ended the loader thread (the epoch is closed)."""
        self.close()
        if self.error is None:
            return RuntimeError(f"FFCV's loader thread for {self.loader.fname} ended before the end of the epoch")
        self.error.add_note(f"(raised in FFCV's loader thread reading {self.loader.fname})")
        return self.error


def start_epoch(loader: Loader, interrupt: Optional[Callable[[], None]] = None) -> WatchedEpochIterator:
    """The next epoch of ``loader``, as ``iter(loader)`` starts it, in a :class:`WatchedEpochIterator`
    whose buffers are normal tensors even when the caller runs under ``torch.inference_mode``.

    Args:
        loader: the FFCV ``Loader``.
        interrupt: see :class:`WatchedEpochIterator`.
    """
    with torch.inference_mode(False):
        # ffcv 1.0.2's Loader.__iter__, constructing our iterator.
        Compiler.set_num_threads(loader.num_workers)
        order = loader.next_traversal_order()
        selected_order = order[: len(loader) * loader.batch_size]
        loader.next_epoch += 1
        if loader.code is None or loader.recompile:
            loader.generate_code()
        return WatchedEpochIterator(loader, selected_order, interrupt)
