"""Callbacks: Lightning glue that is neither model nor data."""

import csv
import resource
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

import lightning as L
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.callbacks import ModelCheckpoint as _LightningModelCheckpoint
from lightning.pytorch.loggers import WandbLogger

from .checkpoints import use_verified_checkpoints
from .files import atomic_write
from .joblock import FolderInUse, FolderLock
from .tracking import metrics as keys

__all__ = [
    "ModelCheckpoint",
    "PredictionWriter",
    "ProgressiveResizing",
    "ThroughputMonitor",
    "TimedCheckpoint",
    "checkpoint_dir",
    "save_last_checkpoint",
]


class ModelCheckpoint(_LightningModelCheckpoint):
    """Lightning's ``ModelCheckpoint`` whose ``last.ckpt`` is refreshed at every save point, whose
    files are written atomically with a checksum, and whose folder one trainer at a time trains into.

    Lightning 2.6 writes ``last.ckpt`` only when a top-k checkpoint was written at the same step, so an
    epoch that does not improve the monitored metric leaves ``last.ckpt`` behind, and a crashed run
    would resume from an older epoch. Here ``last.ckpt`` always holds the newest state. While ``fit``
    runs, rank 0 holds the folder's :class:`~shufflenet_pl.joblock.FolderLock`: a second trainer into
    the same folder stops, on all its ranks, with one line naming the running one.
    """

    _lock: Optional[FolderLock] = None

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
        if isinstance(callback, _LightningModelCheckpoint) and callback.dirpath:
            return Path(callback.dirpath)
    return Path(trainer.default_root_dir) / "checkpoints"


def save_last_checkpoint(trainer: L.Trainer, directory: Path) -> Path:
    """Save ``<directory>/last.ckpt`` now, on all ranks together (collective; rank 0 writes), through a
    temporary file in ``directory`` renamed into place with its checksum: a kill or a full disk
    mid-write never leaves a torn ``last.ckpt``."""
    final = directory / f"{_LightningModelCheckpoint.CHECKPOINT_NAME_LAST}{_LightningModelCheckpoint.FILE_EXTENSION}"
    # The saved ModelCheckpoint state must call this file "last", or after a restart it would write
    # last-v1.ckpt next to it instead of replacing it.
    for callback in trainer.checkpoint_callbacks:
        if (
            isinstance(callback, _LightningModelCheckpoint)
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


class PredictionWriter(BasePredictionWriter):
    """Write ``predict`` results to ``<output_dir>/predictions.csv``: one row per image with its path
    (when the datamodule has ``predict_samples()``), the top-k class names and probabilities.

    Args:
        output_dir: folder for the CSV; ``None`` uses the trainer's log dir.
    """

    def __init__(self, output_dir: Optional[str] = None) -> None:
        super().__init__(write_interval="epoch")
        self.output_dir = output_dir
        self.path: Optional[Path] = None

    def write_on_epoch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, predictions: Sequence[Any], batch_indices: Sequence[Any]
    ) -> None:
        out_dir = Path(self.output_dir or trainer.log_dir or trainer.default_root_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        rank_suffix = f".rank{trainer.global_rank}" if trainer.world_size > 1 else ""
        self.path = out_dir / f"predictions{rank_suffix}.csv"
        datamodule = trainer.datamodule
        classes: List[str] = list(getattr(datamodule, "classes", []))
        samples = list(datamodule.predict_samples()) if hasattr(datamodule, "predict_samples") else []
        rows = []
        for batch in predictions:
            for top_classes, top_probs in zip(batch["classes"].tolist(), batch["probs"].tolist()):
                names = [classes[c] if c < len(classes) else str(c) for c in top_classes]
                rows.append((names, top_probs))
        with atomic_write(self.path, "w") as f:
            writer = csv.writer(f)
            writer.writerow(["index", "path", "top1", "top1_prob", "topk", "topk_probs"])
            for index, (names, probs) in enumerate(rows):
                path = samples[index] if trainer.world_size == 1 and index < len(samples) else ""
                writer.writerow(
                    [index, path, names[0], f"{probs[0]:.5f}", " ".join(names), " ".join(f"{p:.5f}" for p in probs)]
                )
        print(f"wrote {len(rows)} predictions to {self.path}")


def _batch_size(batch: Any) -> int:
    """Number of samples in a batch: the first dimension of its first tensor."""
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0])
    if isinstance(batch, (list, tuple)) and batch:
        return _batch_size(batch[0])
    if isinstance(batch, Mapping) and batch:
        return _batch_size(next(iter(batch.values())))
    raise ValueError(
        f"ThroughputMonitor: cannot tell the batch size of a {type(batch).__name__}; "
        "batches must be tensors or (nested) tuples, lists or dicts of them"
    )


def _peak_host_memory_gb() -> float:
    """Peak resident set size of this process (loader workers not included)."""
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**30 if sys.platform == "darwin" else peak / 2**20  # bytes on macOS, KiB on Linux


class ThroughputMonitor(L.Callback):
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
            raise ValueError(f"ThroughputMonitor: log_every_n_steps={log_every_n_steps} must be >= 0")
        self.log_every_n_steps = log_every_n_steps
        self.progress_bar = progress_bar
        self.images_seen = 0
        self._anchor: Optional[float] = None  # when the current step started
        self._wait = 0.0  # data wait of the current step
        self._reset_window()

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


class ProgressiveResizing(L.Callback):
    """Progressive resizing (FFCV's ImageNet recipe): the training crop at epoch ``e`` is
    :func:`shufflenet_pl.schedules.progressive_resolution` of ``e``, set on the datamodule
    (``set_train_resolution``, which both the FFCV and the ImageFolder datamodules have) before the
    epoch's first batch is decoded. Validation keeps the datamodule's own ``val_res``.

    A pure function of the epoch has no state to save: a run resumed mid-epoch recomputes the
    resolution of its epoch in ``on_train_start`` (Lightning does not call ``on_train_epoch_start``
    again for a resumed epoch).

    Args:
        min_res: resolution up to epoch ``start_ramp``.
        max_res: resolution from epoch ``end_ramp`` on.
        end_ramp: first epoch at ``max_res``.
        start_ramp: last epoch at ``min_res``.
        multiple: resolutions on the ramp are multiples of this.
    """

    def __init__(
        self, min_res: int = 160, max_res: int = 192, end_ramp: int = 13, start_ramp: int = 11, multiple: int = 32
    ) -> None:
        from .schedules import progressive_resolution

        progressive_resolution(0, min_res, max_res, end_ramp, start_ramp, multiple)  # validates the arguments
        self.min_res, self.max_res = min_res, max_res
        self.start_ramp, self.end_ramp, self.multiple = start_ramp, end_ramp, multiple

    def resolution(self, epoch: int) -> int:
        """Training resolution of ``epoch``."""
        from .schedules import progressive_resolution

        return progressive_resolution(epoch, self.min_res, self.max_res, self.end_ramp, self.start_ramp, self.multiple)

    def _apply(self, trainer: L.Trainer) -> None:
        datamodule = trainer.datamodule
        if not hasattr(datamodule, "set_train_resolution"):
            raise ValueError(
                f"ProgressiveResizing needs a datamodule with set_train_resolution(res); "
                f"{type(datamodule).__name__} has none"
            )
        datamodule.set_train_resolution(self.resolution(trainer.current_epoch))

    def training_resolutions(self, max_epochs: int) -> List[int]:
        """The distinct training resolutions of a run of ``max_epochs`` epochs, in order."""
        return list(dict.fromkeys(self.resolution(epoch) for epoch in range(max(max_epochs, 1))))

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # A compiled step keeps one static graph per resolution; torch recompiles a function at most
        # recompile_limit times, after which it silently falls back to eager.
        if (
            not getattr(pl_module, "hparams", {}).get("compile", False)
            or not trainer.max_epochs
            or trainer.max_epochs < 0
        ):
            return
        import torch._dynamo

        limit = getattr(torch._dynamo.config, "recompile_limit", torch._dynamo.config.cache_size_limit)
        resolutions = self.training_resolutions(trainer.max_epochs)
        if len(resolutions) > limit:
            raise ValueError(
                f"ProgressiveResizing: {len(resolutions)} training resolutions ({resolutions[0]}..{resolutions[-1]}) "
                f"need one compiled graph each, more than torch's limit of {limit}; raise `multiple` or "
                "narrow min_res..max_res"
            )

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._apply(trainer)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._apply(trainer)
        pl_module.log("train/res", float(self.resolution(trainer.current_epoch)), on_step=False, on_epoch=True)
