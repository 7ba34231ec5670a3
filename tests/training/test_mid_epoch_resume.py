"""Mid-epoch resume, for real: a run killed like a preempted job, resumed in a new process from
its last (mid-epoch) checkpoint, trains on exactly the batches the killed run trained on after that
checkpoint (0 lost, 0 repeated, same order, same progressive-resizing resolution), into the next
epoch, for the FFCV and the ImageFolder datamodules."""

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import List

import pytest

from conftest import REPO

# One training run; prints nothing, writes one JSON line per optimizer step to RECORD.
RUNNER = r'''
import hashlib, json, os, sys
import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from shufflenet_pl.callbacks import ProgressiveResizing
from shufflenet_pl.models import build_model
from shufflenet_pl.module import ImageClassifier

kind, root, record, ckpt_dir, kill_at, resume = sys.argv[1:7]
kill_at = int(kill_at)
if kind == "ffcv":
    from shufflenet_pl.data.ffcv import FFCVImageNetDataModule as DataModule
else:
    from shufflenet_pl.data import ImageFolderDataModule as DataModule


class Record(L.Callback):
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        images, labels = batch
        with open(record, "a") as f:
            f.write(json.dumps({"step": trainer.global_step, "epoch": trainer.current_epoch, "batch": batch_idx,
                                "labels": hashlib.sha1(labels.numpy().tobytes()).hexdigest()[:12],
                                "res": images.shape[-1]}) + "\n")


class Preempt(L.Callback):
    """Dies like a preempted job (no cleanup) after step `kill_at`."""
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == kill_at:
            os._exit(0)


L.seed_everything(0)
data = DataModule(root, batch_size=16, num_workers=1, train_res=32, val_res=32, seed=7)
model = ImageClassifier(build_model("shufflenet_v2_x0_5", num_classes=data.num_classes), lr=0.05,
                        warmup_epochs=0.5)
checkpoint = ModelCheckpoint(dirpath=ckpt_dir, every_n_train_steps=20, save_top_k=-1, save_last=True)
callbacks = [Record(), ProgressiveResizing(min_res=32, max_res=96, start_ramp=0, end_ramp=2), checkpoint]
if kill_at > 0:
    callbacks.append(Preempt())
trainer = L.Trainer(max_epochs=3, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                    enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0, callbacks=callbacks)
trainer.fit(model, data, ckpt_path=resume if resume != "-" else None)
'''


def _run(args: List[str], cwd: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", RUNNER, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert "KeyError" not in result.stderr, result.stderr[-4000:]


def _records(path: Path) -> List[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _check_resume(kind: str, root: Path, tmp_path: Path) -> None:
    # 3 epochs of 200 // 16 = 12 batches; a checkpoint at step 20 (epoch 1, batch 8); killed at the
    # end of step 36, so its records are the uninterrupted run.
    _run([kind, str(root), str(tmp_path / "first.jsonl"), str(tmp_path / "ck"), "36", "-"], tmp_path)
    first = _records(tmp_path / "first.jsonl")
    assert [r["step"] for r in first] == list(range(1, 37))
    assert [r["res"] for r in first] == [32] * 12 + [64] * 12 + [96] * 12  # progressive resizing
    assert [r["batch"] for r in first] == list(range(12)) * 3
    # a new order each epoch, and no batch repeated within one
    assert len({r["labels"] for r in first[:12]} & {r["labels"] for r in first[12:24]}) < 12

    last = tmp_path / "ck" / "last.ckpt"
    import torch

    state = torch.load(last, weights_only=False, map_location="cpu")
    assert state["global_step"] == 20
    (loader_state,) = state["loops"]["fit_loop"]["state_dict"]["combined_loader"]
    assert loader_state["epoch"] == 1 and loader_state["batches_done"] == 8

    # Resumed in a new process: exactly steps 21..36 with the batches and resolutions of the first run.
    _run([kind, str(root), str(tmp_path / "resumed.jsonl"), str(tmp_path / "ck2"), "0", str(last)], tmp_path)
    assert _records(tmp_path / "resumed.jsonl") == first[20:]


@pytest.mark.slow
def test_imagefolder_resumes_mid_epoch_with_the_same_batches(demo_root: Path, tmp_path: Path) -> None:
    _check_resume("imagefolder", demo_root, tmp_path)


@pytest.mark.slow
def test_ffcv_resumes_mid_epoch_with_the_same_batches(demo_beton_root: Path, tmp_path: Path) -> None:
    _check_resume("ffcv", demo_beton_root, tmp_path)
