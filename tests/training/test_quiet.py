"""Quiet runs: our lines and the progress, not third-party noise; job logs without bar redraws."""

from __future__ import annotations

import logging
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelSummary, TQDMProgressBar
from torch.utils.data import DataLoader, TensorDataset

from shufflenet_pl.callbacks import ConciseModelSummary, LogFriendlyProgressBar
from shufflenet_pl.quiet import make_trainer_quiet, silence_third_party_noise

ROOT = Path(__file__).resolve().parents[2]


class TinyModule(LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 2)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.cross_entropy(self.layer(x), y)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val/acc1", (self.layer(x).argmax(1) == y).float().mean(), prog_bar=True)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def loader(n: int) -> DataLoader:
    generator = torch.Generator().manual_seed(0)
    return DataLoader(
        TensorDataset(torch.randn(n, 4, generator=generator), torch.randint(0, 2, (n,), generator=generator)),
        batch_size=1,
    )


def fit(tmp_path: Path, bar: LogFriendlyProgressBar) -> None:
    trainer = Trainer(
        max_epochs=2,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        callbacks=[bar],
        default_root_dir=tmp_path,
        enable_model_summary=False,
    )
    trainer.fit(TinyModule(), loader(40), loader(8))


def test_progress_to_a_file_is_plain_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fit(tmp_path, LogFriendlyProgressBar(log_every_percent=25, interactive=False))
    out = capsys.readouterr().out
    assert "\r" not in out
    lines = [line for line in out.splitlines() if line.startswith("Epoch ")]
    assert [line.split(" [")[0] for line in lines if "%" in line] == [
        f"Epoch {e}: {p:3d}% {n}/40" for e in (0, 1) for p, n in ((25, 10), (50, 20), (75, 30), (100, 40))
    ]
    assert "train/loss=" in lines[0] and "v_num" not in out
    assert sum("validation val/acc1=" in line for line in lines) == 2  # one per epoch, none for the sanity check


def test_progress_on_a_terminal_is_tqdm(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fit(tmp_path, LogFriendlyProgressBar(interactive=True))
    assert "\r" in capsys.readouterr().out


def test_make_trainer_quiet_swaps_only_lightnings_defaults(tmp_path: Path) -> None:
    trainer = Trainer(accelerator="cpu", logger=False, default_root_dir=tmp_path)
    make_trainer_quiet(trainer)
    assert any(type(cb) is ConciseModelSummary for cb in trainer.callbacks)
    assert any(type(cb) is LogFriendlyProgressBar for cb in trainer.callbacks)
    assert not any(type(cb) in (ModelSummary, TQDMProgressBar) for cb in trainer.callbacks)
    own = TQDMProgressBar(refresh_rate=5)
    trainer = Trainer(accelerator="cpu", logger=False, callbacks=[own], default_root_dir=tmp_path)
    make_trainer_quiet(trainer)
    assert any(cb is own for cb in trainer.callbacks) is False  # a plain TQDMProgressBar is Lightning's class
    custom = type("MyBar", (TQDMProgressBar,), {})()
    trainer = Trainer(accelerator="cpu", logger=False, callbacks=[custom], default_root_dir=tmp_path)
    make_trainer_quiet(trainer)
    assert any(cb is custom for cb in trainer.callbacks)  # a subclass a config chose stays


def test_summary_without_counted_flops_has_no_flops(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    trainer = Trainer(
        max_steps=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        default_root_dir=tmp_path,
        limit_val_batches=0,
    )
    make_trainer_quiet(trainer)
    with caplog.at_level(logging.INFO):
        trainer.fit(TinyModule(), loader(4))
    summary = "\n".join(r.getMessage() for r in caplog.records if "Trainable params" in r.getMessage())
    assert "Total params" in summary and "FLOPs" not in summary and "Total Flops" not in summary


def test_third_party_noise_is_dropped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    silence_third_party_noise()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        silence_third_party_noise()  # catch_warnings reset the filters
        warnings.warn("The `srun` command is available on your system but is not used. HINT: ...")
        warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated, use ...", FutureWarning)
        warnings.warn("a warning of our own")
    assert [str(w.message) for w in caught] == ["a warning of our own"]
    with caplog.at_level(logging.INFO):
        Trainer(accelerator="cpu", logger=False, default_root_dir=tmp_path)
    assert not any("litlogger" in r.getMessage() for r in caplog.records)
    assert any("GPU available" in r.getMessage() for r in caplog.records)  # other messages still pass


def test_cli_help_says_whole_sentences() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "shufflenet_pl.cli", "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
        check=True,
    ).stdout
    assert "never run on your" not in out and "Useful to" not in out
    assert "resumes from a checkpoint" in out and "prepare-imagenet" in out
