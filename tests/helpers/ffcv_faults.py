"""Faults injected into real FFCV pipelines: ops that raise or stall inside FFCV's loader thread, and
a datamodule that puts one into its validation pipeline (usable as a CLI ``--data`` class_path with
``tests/`` on ``PYTHONPATH``)."""

import threading
import time
from pathlib import Path
from typing import Any, Callable, Literal, Optional, Tuple

import torch
from ffcv.pipeline.operation import Operation
from ffcv.pipeline.state import State

from shufflenet_pl.data.ffcv import FFCVImageNetDataModule

FAULT_MESSAGE = "injected fault in the loader thread"


class RaiseOnBatch(Operation):
    """Pass batches through (after ``ToTensor``: plain Python, not JIT-compiled) and raise a
    ``ValueError`` on batch ``at`` (counted from 0), recording when (``time.monotonic()``)."""

    def __init__(self, at: int) -> None:
        super().__init__()
        self.at = at
        self.calls = 0
        self.raised_at: Optional[float] = None

    def generate_code(self) -> Callable:
        def fault(images: torch.Tensor, dst: Any) -> torch.Tensor:
            if self.calls == self.at:
                self.raised_at = time.monotonic()
                raise ValueError(f"{FAULT_MESSAGE} at batch {self.at}")
            self.calls += 1
            return images

        return fault

    def declare_state_and_memory(self, previous_state: State) -> Tuple[State, None]:
        return previous_state, None


class StallOnBatch(RaiseOnBatch):
    """Pass batches through, then block forever on batch ``at`` (a loader that never delivers),
    touching ``marker`` (if given) when it starts blocking."""

    def __init__(self, at: int, marker: Optional[str] = None) -> None:
        super().__init__(at)
        self.marker = marker
        self.stalled = threading.Event()

    def generate_code(self) -> Callable:
        def stall(images: torch.Tensor, dst: Any) -> torch.Tensor:
            if self.calls == self.at:
                self.stalled.set()
                if self.marker:
                    Path(self.marker).touch()
                threading.Event().wait()
            self.calls += 1
            return images

        return stall


class FaultyFFCVDataModule(FFCVImageNetDataModule):
    """The FFCV datamodule with ``fault`` (``raise`` or ``stall``) on validation batch ``fault_batch``
    (CPU pipelines: the op goes right after ``ToTensor``)."""

    def __init__(
        self,
        fault: Literal["raise", "stall"] = "raise",
        fault_batch: int = 1,
        marker: Optional[str] = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.fault_op = RaiseOnBatch(fault_batch) if fault == "raise" else StallOnBatch(fault_batch, marker)

    def _make_loader(self, path: Path, image_pipeline: list, device: torch.device) -> Any:
        if path == self.val_path:
            from ffcv.transforms import ToTensor

            at = next(i for i, op in enumerate(image_pipeline) if isinstance(op, ToTensor)) + 1
            image_pipeline = [*image_pipeline[:at], self.fault_op, *image_pipeline[at:]]
        return super()._make_loader(path, image_pipeline, device)
