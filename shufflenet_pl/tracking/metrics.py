"""The metric keys shufflenet-pl logs, and how W&B should chart and summarise them.

One place for the names that the LightningModule, the throughput callback, the ``plot`` command and
the W&B dashboard agree on. Importing this module does not import wandb.
"""

from typing import Any, Dict, Tuple

__all__ = [
    "DATA_WAIT_SHARE",
    "EPOCH",
    "GLOBAL_STEP",
    "IMAGES_PER_SEC",
    "IMAGES_PER_SEC_PER_DEVICE",
    "IMAGES_SEEN",
    "PEAK_DEVICE_MEMORY_GB",
    "PEAK_HOST_MEMORY_GB",
    "STEP_TIME_MS",
    "SUMMARY_MODES",
    "TRAIN_LOSS",
    "TRAIN_LR",
    "TRAIN_RES",
    "VAL_ACC1",
    "VAL_ACC5",
    "VAL_LOSS",
    "define_wandb_metrics",
]

# Logged by ImageClassifier (shufflenet_pl/module.py) and Lightning itself.
TRAIN_LOSS = "train/loss"
TRAIN_LR = "train/lr"
TRAIN_RES = "train/res"  # training resolution, logged by ProgressiveResizing when it is on
VAL_LOSS = "val/loss"
VAL_ACC1 = "val/acc1"
VAL_ACC5 = "val/acc5"
EPOCH = "epoch"
GLOBAL_STEP = "trainer/global_step"  # WandbLogger adds it to every row

# Logged by shufflenet_pl.callbacks.ImagesPerSecondMonitor.
IMAGES_SEEN = "trainer/images_seen"  # training images seen by the whole job; survives a restart
IMAGES_PER_SEC = "perf/images_per_sec"  # whole job: summed over all processes
IMAGES_PER_SEC_PER_DEVICE = "perf/images_per_sec_per_device"  # mean over processes
STEP_TIME_MS = "perf/step_time_ms"
DATA_WAIT_SHARE = "perf/data_wait_share"  # share of the step spent waiting for the next batch, 0..1
PEAK_DEVICE_MEMORY_GB = "perf/peak_device_memory_gb"  # CUDA only: max over processes of max_memory_allocated
PEAK_HOST_MEMORY_GB = "perf/peak_host_memory_gb"  # max over processes of the peak resident set size

# W&B run summary: best accuracy instead of the last value, peak memory instead of the last window's.
SUMMARY_MODES: Dict[str, str] = {
    VAL_ACC1: "max",
    VAL_ACC5: "max",
    PEAK_DEVICE_MEMORY_GB: "max",
    PEAK_HOST_MEMORY_GB: "max",
}

# Metric families charted against images seen when the throughput callback logs them.
_IMAGES_SEEN_FAMILIES: Tuple[str, ...] = ("train/*", "val/*", "perf/*")


def define_wandb_metrics(run: Any, images_seen_axis: bool) -> None:
    """Declare summaries and step metrics on a live W&B run (``wandb.define_metric``).

    ``trainer/global_step`` stays in every row (Lightning's WandbLogger logs it), so every chart can
    use steps. With ``images_seen_axis``, ``train/*``, ``val/*`` and ``perf/*`` also get
    ``trainer/images_seen`` as their step metric with ``step_sync``: W&B then copies the latest
    images-seen count into each of their rows, so validation accuracy can be drawn against images
    seen although it is logged in rows of its own. That count is restored from the checkpoint on a
    restart, unlike W&B's ``_step``.

    Args:
        run: a ``wandb`` run (Lightning's ``logger.experiment`` on rank 0).
        images_seen_axis: whether ``trainer/images_seen`` is logged (the throughput callback is on).
    """
    step_metric = IMAGES_SEEN if images_seen_axis else GLOBAL_STEP
    if images_seen_axis:
        run.define_metric(IMAGES_SEEN)
        for family in _IMAGES_SEEN_FAMILIES:
            run.define_metric(family, step_metric=IMAGES_SEEN, step_sync=True)
    # An exact name overrides the glob's definition as a whole, so it repeats the step metric.
    for key, summary in SUMMARY_MODES.items():
        run.define_metric(key, step_metric=step_metric, step_sync=True, summary=summary)
