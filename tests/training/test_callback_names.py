"""The callbacks' former names still work: each is the same class as the new name, a job config that
names them instantiates through the CLI, and a checkpoint that holds their state under their state
keys resumes it into the renamed classes."""

import importlib
from pathlib import Path
from typing import Any, Iterator, Optional, Tuple

import lightning as L
import pytest
import torch
import yaml

from conftest import REPO

# (module, former name, module, new name) of every class that moved or was renamed.
FORMER_NAMES = [
    ("shufflenet_pl.callbacks", "ModelCheckpoint", "shufflenet_pl.callbacks", "VerifiedModelCheckpoint"),
    ("shufflenet_pl.callbacks", "ThroughputMonitor", "shufflenet_pl.callbacks", "ImagesPerSecondMonitor"),
    ("shufflenet_pl.tracking", "WandbLogger", "shufflenet_pl.tracking", "OfflineFirstWandbLogger"),
    ("shufflenet_pl.tracking.wandb_logger", "WandbLogger", "shufflenet_pl.tracking", "OfflineFirstWandbLogger"),
    ("shufflenet_pl.tracking", "RunConfigSaver", "shufflenet_pl.callbacks", "RunConfigSaver"),
    ("shufflenet_pl.tracking.wandb_logger", "RunConfigSaver", "shufflenet_pl.callbacks", "RunConfigSaver"),
    ("shufflenet_pl.quiet", "LogFriendlyProgressBar", "shufflenet_pl.callbacks", "LogFriendlyProgressBar"),
    ("shufflenet_pl.quiet", "ConciseModelSummary", "shufflenet_pl.callbacks", "ConciseModelSummary"),
    ("cluster.requeue", "PreemptionCheckpoint", "shufflenet_pl.callbacks", "PreemptionCheckpoint"),
    ("cluster.requeue", "Preempted", "shufflenet_pl.callbacks", "Preempted"),
    ("shufflenet_pl.data.common", "InputError", "shufflenet_pl.errors", "InputError"),
    ("shufflenet_pl.input_checks", "InputError", "shufflenet_pl.errors", "InputError"),
]


@pytest.mark.parametrize("former_module, former, module, name", FORMER_NAMES, ids=lambda v: v)
def test_former_name_is_the_same_class(former_module: str, former: str, module: str, name: str) -> None:
    assert getattr(importlib.import_module(former_module), former) is getattr(importlib.import_module(module), name)


def _old_job_config(folder: Path) -> dict:
    """A job's trainer config as the launcher wrote it before the callbacks were renamed."""
    checkpoints = str(folder / "checkpoints")
    return {
        "trainer": {
            "default_root_dir": str(folder),
            "logger": {
                "class_path": "shufflenet_pl.tracking.WandbLogger",
                "init_args": {"project": "p", "mode": "offline", "save_dir": str(folder)},
            },
            "callbacks": [
                {
                    "class_path": "shufflenet_pl.callbacks.ModelCheckpoint",
                    "init_args": {"dirpath": checkpoints, "save_last": True, "monitor": "val/acc1", "mode": "max"},
                },
                {"class_path": "shufflenet_pl.callbacks.ThroughputMonitor"},
                {"class_path": "shufflenet_pl.quiet.LogFriendlyProgressBar", "init_args": {"log_every_percent": 5}},
                {
                    "class_path": "shufflenet_pl.callbacks.TimedCheckpoint",
                    "init_args": {"every_minutes": 30.0, "dirpath": checkpoints},
                },
                {"class_path": "cluster.requeue.PreemptionCheckpoint", "init_args": {"dirpath": checkpoints}},
            ],
        }
    }


def test_an_old_job_config_instantiates_the_renamed_classes(
    demo_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shufflenet_pl import callbacks
    from shufflenet_pl.cli import build_cli
    from shufflenet_pl.tracking import OfflineFirstWandbLogger

    monkeypatch.chdir(tmp_path)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(_old_job_config(tmp_path / "job")))
    args = ["--config", str(REPO / "configs" / "model" / "x0_5.yaml")]
    args += ["--config", str(REPO / "configs" / "data" / "demo.yaml"), "--config", str(config)]
    args += ["--data.init_args.root", str(demo_root), "--data.init_args.demo", "false"]
    cli = build_cli(args, run=False)
    (logger,) = cli.trainer.loggers
    assert isinstance(logger, OfflineFirstWandbLogger) and logger.mode == "offline"
    found = {type(cb): cb for cb in cli.trainer.callbacks}
    for cls in (
        callbacks.VerifiedModelCheckpoint,
        callbacks.ImagesPerSecondMonitor,
        callbacks.LogFriendlyProgressBar,
        callbacks.TimedCheckpoint,
        callbacks.PreemptionCheckpoint,
    ):
        assert cls in found, cls
    assert found[callbacks.LogFriendlyProgressBar].log_every_percent == 5
    assert found[callbacks.TimedCheckpoint].every_minutes == 30.0
    assert found[callbacks.VerifiedModelCheckpoint].monitor == "val/acc1"


def test_the_launcher_keeps_the_model_checkpoint_of_an_old_job_config(tmp_path: Path) -> None:
    """The launcher finds the checkpoint callbacks by the end of their class path: the former names
    are found as the new ones are, and none is added twice."""
    from cluster.config import apply_job_settings
    from cluster.resources import Resources

    config = apply_job_settings(_old_job_config(tmp_path / "old"), Resources(cpu=True), "local", tmp_path)
    classes = [c["class_path"] for c in config["trainer"]["callbacks"]]
    assert classes.count("shufflenet_pl.callbacks.ModelCheckpoint") == 1
    assert not any(c.endswith("VerifiedModelCheckpoint") for c in classes)
    assert sum(c.endswith("TimedCheckpoint") for c in classes) == 1
    (checkpoint,) = [c for c in config["trainer"]["callbacks"] if c["class_path"].endswith("ModelCheckpoint")]
    assert checkpoint["init_args"]["dirpath"] == str(tmp_path / "checkpoints")


@pytest.fixture
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


_CHECKPOINT_ARGS = dict(
    filename="{epoch}", monitor="step", mode="max", save_top_k=2, save_last=True, enable_version_counter=False
)


def _fit(folder: Path, max_epochs: int, ckpt_path: Optional[Path] = None) -> Tuple[Any, Any]:
    """A seeded fit of ShuffleNet V2 0.5x on 32 random 32x32 images, 4 steps per epoch, with the
    renamed checkpoint and throughput callbacks."""
    from torch.utils.data import DataLoader, TensorDataset

    from shufflenet_pl.callbacks import ImagesPerSecondMonitor, VerifiedModelCheckpoint
    from shufflenet_pl.models import shufflenet_v2_x0_5
    from shufflenet_pl.module import ImageClassifier

    L.seed_everything(0)
    data = TensorDataset(torch.randn(32, 3, 32, 32), torch.arange(32) % 4)
    model = ImageClassifier(shufflenet_v2_x0_5(num_classes=4), lr=0.05, schedule="linear")
    checkpoint = VerifiedModelCheckpoint(**_CHECKPOINT_ARGS, dirpath=folder)
    monitor = ImagesPerSecondMonitor()
    trainer = L.Trainer(
        max_epochs=max_epochs,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=folder.parent,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=[checkpoint, monitor],
    )
    trainer.fit(model, DataLoader(data, batch_size=8), ckpt_path=ckpt_path)
    return checkpoint, monitor


def _former_state_keys(folder: Path) -> Tuple[str, str]:
    """The state keys that the classes wrote under their former names: Lightning's own key of a
    ``ModelCheckpoint`` of the same settings, and the default key of a callback class named
    ``ThroughputMonitor``."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    former_monitor = type("ThroughputMonitor", (L.Callback,), {})
    return ModelCheckpoint(**_CHECKPOINT_ARGS, dirpath=folder).state_key, former_monitor().state_key


def test_a_checkpoint_of_the_former_names_resumes_their_state(tmp_path: Path, one_thread: None) -> None:
    from shufflenet_pl.checkpoints import save_with_checksum

    folder = tmp_path / "checkpoints"
    checkpoint_key, monitor_key = _former_state_keys(folder)
    _fit(folder, max_epochs=1)
    saved = torch.load(folder / "last.ckpt", map_location="cpu", weights_only=False)
    assert set(saved["callbacks"]) == {checkpoint_key, monitor_key}  # the renamed classes write the same keys

    # A checkpoint of the former classes: their state under their keys, the images seen made distinct.
    checkpoint_state = next(state for state in saved["callbacks"].values() if "best_k_models" in state)
    saved["callbacks"] = {checkpoint_key: checkpoint_state, monitor_key: {"images_seen": 1000}}
    former = tmp_path / "former.ckpt"
    save_with_checksum(saved, former)

    checkpoint, monitor = _fit(folder, max_epochs=2, ckpt_path=former)
    assert monitor.images_seen == 1000 + 32  # counted on from the checkpoint
    # The top-k record came back too: the first epoch's file is still one of the two best.
    folder = Path(checkpoint.dirpath)
    assert set(checkpoint.best_k_models) == {str(folder / "epoch=0.ckpt"), str(folder / "epoch=1.ckpt")}
