"""What a run prints while it trains: its model summary and its progress.

- :class:`ConciseModelSummary` is Lightning's model summary without the FLOPs column and total when
  nothing was counted (Lightning counts FLOPs only with an ``example_input_array``; "0" misleads).
- :class:`LogFriendlyProgressBar` is Lightning's tqdm bar on a terminal; when stdout is a file (a job's
  log), it prints one plain line every ``log_every_percent`` % of an epoch and one per validation
  instead of hundreds of carriage-return redraws.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from typing import Any, Dict, Optional

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelSummary, TQDMProgressBar
from lightning.pytorch.callbacks.progress.tqdm_progress import Tqdm
from lightning.pytorch.utilities.model_summary.model_summary import _format_summary_table

__all__ = ["ConciseModelSummary", "LogFriendlyProgressBar"]

log = logging.getLogger("lightning.pytorch.callbacks.model_summary")


class ConciseModelSummary(ModelSummary):
    """Lightning's summary, without FLOPs when none were counted."""

    @staticmethod
    def summarize(
        summary_data: list,
        total_parameters: int,
        trainable_parameters: int,
        model_size: float,
        total_training_modes: Dict[str, int],
        total_flops: int = 0,
        **summarize_kwargs: Any,
    ) -> None:
        if total_flops:
            ModelSummary.summarize(
                summary_data,
                total_parameters,
                trainable_parameters,
                model_size,
                total_training_modes,
                total_flops,
                **summarize_kwargs,
            )
            return
        columns = [column for column in summary_data if column[0] != "FLOPs"]
        table = _format_summary_table(
            total_parameters, trainable_parameters, model_size, total_training_modes, 0, *columns
        )
        log.info("\n" + table.rsplit("\n", 1)[0])  # the last line is "0 Total Flops"


TRAIN_LOSS = "train/loss"


class LogFriendlyProgressBar(TQDMProgressBar):
    """tqdm on a terminal; on a file, a plain line every ``log_every_percent`` % of each epoch."""

    def __init__(
        self,
        refresh_rate: int = 1,
        process_position: int = 0,
        leave: bool = False,
        log_every_percent: int = 10,
        interactive: Optional[bool] = None,
    ) -> None:
        super().__init__(refresh_rate=refresh_rate, process_position=process_position, leave=leave)
        if not 0 < log_every_percent <= 100:
            raise ValueError(f"log_every_percent must be in (0, 100], got {log_every_percent}")
        self.log_every_percent = log_every_percent
        self.interactive = sys.stdout.isatty() if interactive is None else interactive
        self._epoch_started = time.monotonic()
        self.loss_refresh_s = 0.5
        self._loss: Optional[float] = None
        self._loss_read_at = 0.0

    # Bars are created silent on a file: tqdm would draw them at creation already.
    def _silent(self) -> Tqdm:
        return Tqdm(disable=True, file=sys.stdout)

    def init_sanity_tqdm(self) -> Tqdm:
        return super().init_sanity_tqdm() if self.interactive else self._silent()

    def init_train_tqdm(self) -> Tqdm:
        return super().init_train_tqdm() if self.interactive else self._silent()

    def init_validation_tqdm(self) -> Tqdm:
        return super().init_validation_tqdm() if self.interactive else self._silent()

    def init_test_tqdm(self) -> Tqdm:
        return super().init_test_tqdm() if self.interactive else self._silent()

    def init_predict_tqdm(self) -> Tqdm:
        return super().init_predict_tqdm() if self.interactive else self._silent()

    def get_metrics(self, trainer: Trainer, pl_module: LightningModule) -> Dict[str, Any]:
        """Lightning's bar metrics plus the latest ``train/loss``, read from the device at most every
        ``loss_refresh_s`` seconds: the module does not log it as a progress-bar value, which would make
        Lightning read it (and wait for the device) after every batch."""
        metrics = super().get_metrics(trainer, pl_module)
        loss = trainer.callback_metrics.get(TRAIN_LOSS)
        if loss is not None and TRAIN_LOSS not in metrics:
            now = time.monotonic()
            if self._loss is None or now - self._loss_read_at >= self.loss_refresh_s:
                self._loss, self._loss_read_at = float(loss), now
            metrics[TRAIN_LOSS] = self._loss
        return metrics

    def _line(self, text: str, metrics: Dict[str, Any]) -> None:
        shown = " ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items() if k != "v_num"
        )
        print(f"{text} {shown}".rstrip(), file=sys.stdout, flush=True)

    def on_train_epoch_start(self, trainer: Trainer, *args: Any) -> None:
        super().on_train_epoch_start(trainer, *args)
        self._epoch_started = time.monotonic()

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        total = self.total_train_batches
        if self.interactive or self.is_disabled or not math.isfinite(total):
            return
        n, total = batch_idx + 1, int(total)
        every = max(1, math.ceil(total * self.log_every_percent / 100))
        if n % every == 0 or n == total:
            elapsed = time.monotonic() - self._epoch_started
            self._line(
                f"Epoch {trainer.current_epoch}: {100 * n // total:3d}% {n}/{total} [{elapsed:.0f} s]",
                self.get_metrics(trainer, pl_module),
            )

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if self.interactive or self.is_disabled or trainer.sanity_checking or trainer.state.fn != "fit":
            return
        metrics = {k: v for k, v in self.get_metrics(trainer, pl_module).items() if k.startswith("val/")}
        self._line(f"Epoch {trainer.current_epoch}: validation", metrics)
