"""ImagesPerSecondMonitor against known times: a dataset whose ``__getitem__`` sleeps a known time per
image and a network whose forward sleeps a known time per step, so the expected step time, data-wait
share and images/s are known in advance. Single process in-process (fast), and 2-process gloo DDP
through the CLI with W&B offline (slow): the job's images/s is the sum over ranks, and only rank 0
writes a W&B run."""

import csv
import glob
import os
import time
from pathlib import Path
from typing import Any, List, Tuple

import lightning as L
import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from conftest import REPO, run_cli

TESTS = Path(__file__).resolve().parents[1]


class SleepyImages(Dataset):
    """Random 3x8x8 images with labels; each ``__getitem__`` sleeps ``seconds_per_image``."""

    def __init__(self, length: int, num_classes: int, seconds_per_image: float) -> None:
        generator = torch.Generator().manual_seed(0)
        self.images = torch.randn(length, 3, 8, 8, generator=generator)
        self.labels = torch.randint(0, num_classes, (length,), generator=generator)
        self.seconds_per_image = seconds_per_image

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> Tuple[Tensor, Tensor]:
        if self.seconds_per_image:
            time.sleep(self.seconds_per_image)
        return self.images[index], self.labels[index]


class SleepyDataModule(L.LightningDataModule):
    """A loader with a known cost: ``seconds_per_image`` per training image, read in the main process.

    Args:
        batch_size: global batch size, divided by the number of processes.
        train_batches: training batches per process and epoch.
        seconds_per_image: sleep per training image.
        num_classes: label count.
    """

    def __init__(
        self, batch_size: int = 8, train_batches: int = 12, seconds_per_image: float = 0.005, num_classes: int = 4
    ) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.train_batches = train_batches
        self.seconds_per_image = seconds_per_image
        self.num_classes = num_classes

    def setup(self, stage: str) -> None:
        world_size = self.trainer.world_size if self.trainer is not None else 1
        self.per_device = self.batch_size // world_size
        self.train_set = SleepyImages(
            self.per_device * self.train_batches * world_size, self.num_classes, self.seconds_per_image
        )
        self.val_set = SleepyImages(32, self.num_classes, 0.0)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=self.per_device, shuffle=True, num_workers=0, drop_last=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=self.per_device, num_workers=0)


class SleepyNet(nn.Module):
    """A linear classifier whose training forward sleeps ``seconds_per_step``: a known compute time."""

    def __init__(self, num_classes: int = 4, seconds_per_step: float = 0.06) -> None:
        super().__init__()
        self.fc = nn.Linear(3, num_classes)
        self.seconds_per_step = seconds_per_step

    def forward(self, images: Tensor) -> Tensor:
        if self.training and self.seconds_per_step:
            time.sleep(self.seconds_per_step)
        return self.fc(images.mean(dim=(2, 3)))


class WallClock(L.Callback):
    """An independent stopwatch: when each epoch starts and each training batch starts and ends."""

    def __init__(self) -> None:
        self.epoch_start = 0.0
        self.batch_start: List[float] = []
        self.batch_end: List[float] = []

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.epoch_start = time.perf_counter()

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        self.batch_start.append(time.perf_counter())

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        self.batch_end.append(time.perf_counter())


def _fit_in_process(
    tmp_path: Path, seconds_per_image: float, seconds_per_step: float, batch: int, batches: int, every: int
) -> Tuple[List[dict], WallClock]:
    from lightning.pytorch.loggers import CSVLogger

    from shufflenet_pl.callbacks import ImagesPerSecondMonitor
    from shufflenet_pl.module import ImageClassifier

    clock = WallClock()
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=1,
        limit_val_batches=0,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=every,
        logger=CSVLogger(tmp_path, name="run"),
        callbacks=[clock, ImagesPerSecondMonitor()],  # clock's hooks run first
    )
    data = SleepyDataModule(batch, batches, seconds_per_image)
    model = ImageClassifier(SleepyNet(seconds_per_step=seconds_per_step), lr=0.01, schedule="constant")
    trainer.fit(model, data)
    (path,) = glob.glob(str(tmp_path / "run" / "version_*" / "metrics.csv"))
    rows = [{k: float(v) for k, v in row.items() if v} for row in csv.DictReader(open(path))]
    return [row for row in rows if "perf/step_time_ms" in row], clock


@pytest.mark.parametrize(
    "seconds_per_image, seconds_per_step",
    [(0.01, 0.05), (0.0, 0.1), (0.0125, 0.0)],
    ids=["mixed", "compute-bound", "loader-bound"],
)
def test_throughput_matches_known_sleeps(tmp_path: Path, seconds_per_image: float, seconds_per_step: float) -> None:
    """8 images per step at ``seconds_per_image`` each (read in the main process) plus
    ``seconds_per_step`` of compute. Each window's data wait must hold the loader's sleeps and its
    compute time the network's, both must equal what an independent stopwatch measured around
    the same batches, and images/s must equal 8 / step time. (The loop's own work adds a few ms per
    step on an idle machine and more on a busy one, so the sleeps give lower bounds only.)"""
    batch, batches, every = 8, 12, 4
    rows, clock = _fit_in_process(tmp_path, seconds_per_image, seconds_per_step, batch, batches, every)
    assert [row["trainer/images_seen"] for row in rows] == [32, 64, 96]
    assert [row["step"] for row in rows] == [3, 7, 11]  # the rows of train/loss at the same steps
    # Per step, from the stopwatch: a step runs from the previous batch's end (the epoch start for
    # the first) to its own end; the wait is the part before the batch reaches the training step.
    previous_end = [clock.epoch_start, *clock.batch_end[:-1]]
    step_s = [end - prev for prev, end in zip(previous_end, clock.batch_end)]
    wait_s = [start - prev for prev, start in zip(previous_end, clock.batch_start)]
    for window, row in enumerate(rows):
        steps = slice(window * every, (window + 1) * every)
        step_ms, wait_ms = row["perf/step_time_ms"], row["perf/data_wait_share"] * row["perf/step_time_ms"]
        # Within 5 ms per step: the two stopwatches read the clock in neighbouring hooks, and a busy
        # machine may deschedule the process in between.
        assert step_ms == pytest.approx(1000 * sum(step_s[steps]) / every, abs=5), row
        assert wait_ms == pytest.approx(1000 * sum(wait_s[steps]) / every, abs=5), row
        assert step_ms - wait_ms >= 1000 * seconds_per_step, row
        if window < len(rows) - 1:  # the last step of the epoch has no next batch to fetch
            assert wait_ms >= 1000 * batch * seconds_per_image, row
        assert row["perf/images_per_sec"] == pytest.approx(1000 * batch / step_ms, rel=1e-6)
        assert row["perf/images_per_sec_per_device"] == row["perf/images_per_sec"]  # one process
        assert 0.05 < row["perf/peak_host_memory_gb"] < 64
    # The plot command reads the same numbers back from the CSVLogger's metrics.csv (--no-wandb runs).
    from shufflenet_pl.tracking.reader import load_run

    run = load_run(tmp_path / "run")
    assert run.values("perf/images_per_sec") == [row["perf/images_per_sec"] for row in rows]
    assert run.series("train/loss")[0] == [32, 64, 96]  # train/loss rows placed at the images seen
    shares = [row["perf/data_wait_share"] for row in rows[:2]]
    if seconds_per_image == 0:
        assert max(shares) < 0.1, shares
    if seconds_per_step == 0:
        assert min(shares) > 0.5, shares


def test_images_seen_survives_a_checkpoint() -> None:
    from shufflenet_pl.callbacks import ImagesPerSecondMonitor

    monitor = ImagesPerSecondMonitor()
    monitor.images_seen = 12345
    restored = ImagesPerSecondMonitor()
    restored.load_state_dict(monitor.state_dict())
    assert restored.images_seen == 12345
    with pytest.raises(ValueError, match="log_every_n_steps=-1"):
        ImagesPerSecondMonitor(log_every_n_steps=-1)


def _sleepy_cli_args(
    root: Path, batch: int, batches: int, seconds_per_image: float, seconds_per_step: float
) -> List[str]:
    return [
        "fit",
        "--config",
        str(REPO / "configs" / "experiment" / "demo.yaml"),
        "--model.model",
        "bench.test_throughput_monitor.SleepyNet",
        "--model.model.seconds_per_step",
        str(seconds_per_step),
        "--model.lr",
        "0.01",
        "--model.warmup_epochs",
        "0",
        "--data",
        "bench.test_throughput_monitor.SleepyDataModule",
        "--data.batch_size",
        str(batch),
        "--data.train_batches",
        str(batches),
        "--data.seconds_per_image",
        str(seconds_per_image),
        "--trainer.default_root_dir",
        str(root),
        "--trainer.max_epochs",
        "1",
        "--trainer.log_every_n_steps",
        "4",
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.num_sanity_val_steps",
        "0",
    ]


def offline_env(env: dict, tmp_path: Path) -> dict:
    """No W&B credentials and no W&B settings: what a fresh machine has."""
    env = {key: value for key, value in env.items() if not key.startswith("WANDB_")}
    env["NETRC"] = str(tmp_path / "no-netrc")
    env["PYTHONPATH"] = str(TESTS) + os.pathsep + env.get("PYTHONPATH", "")
    return env


@pytest.mark.slow
def test_ddp_throughput_is_summed_over_ranks_and_only_rank0_writes_a_run(cli_env: dict, tmp_path: Path) -> None:
    """2 gloo processes, each 8 images per step at 20 ms per image plus 20 ms of compute."""
    from shufflenet_pl.tracking.reader import load_run

    global_batch, batches, per_image, per_step = 16, 12, 0.02, 0.02
    result = run_cli(
        [
            *_sleepy_cli_args(tmp_path / "out", global_batch, batches, per_image, per_step),
            "--trainer.strategy",
            "ddp",
            "--trainer.devices",
            "2",
            "--trainer.accelerator",
            "cpu",
        ],
        cwd=tmp_path,
        env=offline_env(cli_env, tmp_path),
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    wandb_files = {os.path.realpath(p) for p in glob.glob(str(tmp_path / "**" / "*.wandb"), recursive=True)}
    assert len(wandb_files) == 1  # rank 0 only
    run = load_run(tmp_path / "out")
    assert run.config["runtime"]["world_size"] == 2
    rows = [row for row in run.history if "perf/step_time_ms" in row]
    assert [row["trainer/images_seen"] for row in rows] == [64, 128, 192]  # 4 steps x 8 images x 2 ranks per window
    per_device = global_batch // 2
    for row in rows:
        # The job's rate is the sum of the ranks' rates; each rank's is its images over its step time.
        assert row["perf/images_per_sec"] == pytest.approx(2 * row["perf/images_per_sec_per_device"], rel=1e-9)
        assert row["perf/images_per_sec_per_device"] == pytest.approx(
            1000 * per_device / row["perf/step_time_ms"], rel=0.05
        )
    for row in rows[:-1]:  # the last window ends the epoch, where the loader has no next batch to fetch
        # Data wait holds the loader's sleeps, compute the network's (the loop's own work comes on
        # top); the step is not inflated by validation or by counting both ranks.
        step_ms = row["perf/step_time_ms"]
        wait_ms = row["perf/data_wait_share"] * step_ms
        assert wait_ms >= 1000 * per_device * per_image, row
        assert step_ms - wait_ms >= 1000 * per_step, row
        assert step_ms <= 2.5 * 1000 * (per_device * per_image + per_step), row
    (val,) = [row for row in run.history if "val/acc1" in row]
    assert 0 <= val["val/acc1"] <= 1 and val["trainer/images_seen"] == 192
