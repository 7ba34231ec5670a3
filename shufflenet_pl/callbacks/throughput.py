"""Training speed as images per second, for each device and the whole job, with the step time, the
share of it spent waiting for data, peak memory and the images seen (Lightning's own
``ThroughputMonitor`` needs a ``batch_size_fn``, counts FLOPs and does not split off the data wait)."""

import resource
import sys
import time
from typing import Any, Dict, Mapping, Optional

import lightning as L
import torch
from lightning.pytorch.loggers import WandbLogger

from ..tracking import metrics as keys

__all__ = ["ImagesPerSecondMonitor"]


def _batch_size(batch: Any) -> int:
    """Number of samples in a batch: the first dimension of its first tensor."""
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0])
    if isinstance(batch, (list, tuple)) and batch:
        return _batch_size(batch[0])
    if isinstance(batch, Mapping) and batch:
        return _batch_size(next(iter(batch.values())))
    raise ValueError(
        f"ImagesPerSecondMonitor: cannot tell the batch size of a {type(batch).__name__}; "
        "batches must be tensors or (nested) tuples, lists or dicts of them"
    )


def _peak_host_memory_gb() -> float:
    """Peak resident set size of this process (loader workers not included)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**30 if sys.platform == "darwin" else peak / 2**20  # bytes on macOS, KiB on Linux


class ImagesPerSecondMonitor(L.Callback):
    """Measure and log training throughput, for each device and for the whole job.

    Every ``log_every_n_steps`` optimizer steps (the trainer's setting by default, aligned with the
    rows of ``train/loss``), at the start of each validation and at the end of training, the window
    since the last log is reduced over all processes (one ``all_gather``) and logged:

    - ``perf/images_per_sec``: training images per second of the whole job (sum over processes);
    - ``perf/images_per_sec_per_device``: the same per process, averaged over processes;
    - ``perf/step_time_ms``: mean wall time of a training step;
    - ``perf/data_wait_share``: share of the step time between one batch's end and the next one's
      start, summed over processes: waiting for the loader, the copy to the device and the loop's
      own bookkeeping (logging); near 0 when the device is the bottleneck, near 1 when the loader is;
    - ``perf/peak_device_memory_gb``: on CUDA, the largest ``max_memory_allocated`` in the window over
      processes; ``perf/peak_host_memory_gb``: the largest peak resident set size of a training process;
    - ``trainer/images_seen``: training images seen by the whole job. It is saved in checkpoints, so
      after a restart it continues where it stopped; W&B charts can use it as their x-axis.

    A step lasts from the end of one training batch to the end of the next, so everything the loop
    does in between counts; the first step of an epoch starts at the epoch start (loader start-up
    counts as waiting for data). Validation is not part of any step. On CUDA the device is
    synchronised only where a window ends, so the measurement itself does not slow training.

    Args:
        log_every_n_steps: optimizer steps per window; ``None`` uses ``trainer.log_every_n_steps``,
            0 logs only at validation and at the end of training.
        progress_bar: show the job's images/s in the progress bar.
    """

    def __init__(self, log_every_n_steps: Optional[int] = None, progress_bar: bool = True) -> None:
        if log_every_n_steps is not None and log_every_n_steps < 0:
            raise ValueError(f"ImagesPerSecondMonitor: log_every_n_steps={log_every_n_steps} must be >= 0")
        self.log_every_n_steps = log_every_n_steps
        self.progress_bar = progress_bar
        self.images_seen = 0
        self._anchor: Optional[float] = None  # when the current step started
        self._wait = 0.0  # data wait of the current step
        self._reset_window()

    @property
    def state_key(self) -> str:
        # Checkpoints hold images_seen under the class's other name, ThroughputMonitor (the default
        # key of a class of that name): runs resume counting from checkpoints of either name.
        return "ThroughputMonitor"

    def _reset_window(self) -> None:
        self._window_steps = 0
        self._window_images = 0
        self._window_time = 0.0
        self._window_wait = 0.0

    def state_dict(self) -> Dict[str, Any]:
        return {"images_seen": self.images_seen}

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        self.images_seen = int(state_dict.get("images_seen", 0))

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit" or not trainer.is_global_zero:
            return
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                keys.define_wandb_metrics(logger.experiment, images_seen_axis=True)

    def _should_log(self, trainer: L.Trainer) -> bool:
        every = trainer.log_every_n_steps if self.log_every_n_steps is None else self.log_every_n_steps
        should_accumulate = getattr(trainer.fit_loop, "_should_accumulate", lambda: False)()
        # global_step counts optimizer steps and is equal on all ranks: every rank gathers at the same step.
        return every > 0 and not should_accumulate and trainer.global_step % every == 0

    @staticmethod
    def _synchronize(pl_module: L.LightningModule) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._anchor = time.perf_counter()

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        now = time.perf_counter()
        if self._anchor is None:
            self._anchor = now
        self._wait = now - self._anchor

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        log_now = self._should_log(trainer)
        if log_now or trainer.is_last_batch:
            self._synchronize(pl_module)  # queued GPU work belongs to this step
        now = time.perf_counter()
        if self._anchor is not None:
            self._window_steps += 1
            self._window_images += _batch_size(batch)
            self._window_time += now - self._anchor
            self._window_wait += self._wait
        self._anchor = now
        if log_now:
            metrics = self._flush(trainer, pl_module)
            if metrics and self.progress_bar:
                pl_module.log(
                    "images/s", metrics[keys.IMAGES_PER_SEC], prog_bar=True, logger=False, on_step=True, on_epoch=False
                )

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == "fit" and not trainer.sanity_checking:
            # Close the window so that validation rows see the images seen up to now.
            self._flush(trainer, pl_module)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == "fit" and not trainer.sanity_checking:
            self._anchor = time.perf_counter()  # validation is not part of the next step

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._flush(trainer, pl_module)

    def _flush(self, trainer: L.Trainer, pl_module: L.LightningModule) -> Dict[str, float]:
        """Reduce the window over all processes, log it and start a new one. Every rank calls this at
        the same point with the same step count (the batches per rank are equal in DDP)."""
        if self._window_steps == 0:
            return {}
        cuda = pl_module.device.type == "cuda"
        device_peak = torch.cuda.max_memory_allocated(pl_module.device) / 2**30 if cuda else 0.0
        local = torch.tensor(
            [
                self._window_images,
                self._window_time,
                self._window_wait,
                self._window_steps,
                self._window_images / max(self._window_time, 1e-12),
                device_peak,
                _peak_host_memory_gb(),
            ],
            # NCCL reduces CUDA tensors only; elsewhere the CPU (float64 exists on neither MPS nor every backend).
            dtype=torch.float64,
            device=pl_module.device if cuda else torch.device("cpu"),
        )
        gathered = trainer.strategy.all_gather(local).reshape(-1, local.numel()).cpu()
        images, step_time, wait, steps, per_device, device_peak, host_peak = gathered.T
        self.images_seen += int(images.sum().item())
        metrics: Dict[str, float] = {
            keys.IMAGES_SEEN: self.images_seen,
            keys.IMAGES_PER_SEC: float(per_device.sum()),
            keys.IMAGES_PER_SEC_PER_DEVICE: float(per_device.mean()),
            keys.STEP_TIME_MS: float(1000 * (step_time / steps).mean()),
            keys.DATA_WAIT_SHARE: float(wait.sum() / step_time.sum()),
            keys.PEAK_HOST_MEMORY_GB: float(host_peak.max()),
        }
        if cuda:
            metrics[keys.PEAK_DEVICE_MEMORY_GB] = float(device_peak.max())
            torch.cuda.reset_peak_memory_stats(pl_module.device)
        # The trainer's own logging path: same step value and "epoch" as the rows of train/loss.
        trainer._logger_connector.log_metrics(metrics)
        self._reset_window()
        return metrics
