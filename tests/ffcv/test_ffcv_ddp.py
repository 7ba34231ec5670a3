"""FFCV under real 2-process DDP (gloo on CPU): per-rank batch = global / 2, no sampler injection,
correct len(), each rank reads its own shard of a new shuffle every epoch, and validation counts
every image exactly once (59 images: no padded duplicate), so the synced val/acc1 is exact."""

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO

RUNNER = r"""
import json, sys
import lightning as L
import torch

from shufflenet_pl.data.ffcv import FFCVImageNetDataModule
from shufflenet_pl.models import build_model
from shufflenet_pl.module import ImageClassifier

root, out = sys.argv[1:3]


class Record(L.Callback):
    def _write(self, trainer, row):
        with open(f"{out}/rank{trainer.global_rank}.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")

    def on_train_epoch_start(self, trainer, pl_module):
        dm = trainer.datamodule
        order = dm.train_order(trainer.current_epoch).tolist()
        self._write(trainer, {"kind": "plan", "epoch": trainer.current_epoch, "order": order,
                              "len": len(trainer.train_dataloader),
                              "num_training_batches": trainer.num_training_batches,
                              "per_device_batch_size": dm.per_device_batch_size, "world_size": trainer.world_size})

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        images, labels = batch
        self._write(trainer, {"kind": "train", "epoch": trainer.current_epoch, "labels": labels.tolist(),
                              "shape": list(images.shape)})

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        images, labels = batch
        with torch.no_grad():
            correct = (pl_module(images).argmax(1) == labels).sum().item()
        self._write(trainer, {"kind": "val", "epoch": trainer.current_epoch, "labels": labels.tolist(),
                              "correct": correct, "shape": list(images.shape), "sanity": trainer.sanity_checking})

    def on_validation_epoch_end(self, trainer, pl_module):
        if not trainer.sanity_checking:
            self._write(trainer, {"kind": "acc", "epoch": trainer.current_epoch,
                                  "val_acc1": float(trainer.callback_metrics["val/acc1"])})


L.seed_everything(0)
data = FFCVImageNetDataModule(root, batch_size=16, num_workers=1, train_res=32, val_res=48)
model = ImageClassifier(build_model("shufflenet_v2_x0_5", num_classes=data.num_classes), lr=0.05)
trainer = L.Trainer(max_epochs=2, accelerator="cpu", devices=2, strategy="ddp", logger=False,
                    enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                    num_sanity_val_steps=0, callbacks=[Record()])
trainer.fit(model, data)
"""


def _labels(beton: Path) -> np.ndarray:
    from ffcv.reader import Reader

    return np.asarray(Reader(str(beton)).metadata["f1"])


@pytest.mark.slow
def test_ffcv_ddp_two_processes(demo_root: Path, demo_beton_root: Path, tmp_path: Path) -> None:
    from shufflenet_pl.data.convert import convert_split

    root = tmp_path / "data"
    root.mkdir()
    for name in ("train.beton", "train.beton.json"):
        os.symlink(demo_beton_root / name, root / name)
    classes = json.loads((demo_beton_root / "train.beton.json").read_text())["classes"]
    # 59 validation images: 30 + 29 over two ranks; a padding sampler would count one twice.
    convert_split(demo_root / "val", root / "val.beton", num_workers=2, limit=59, classes=classes, progress=False)
    out = tmp_path / "out"
    out.mkdir()
    script = tmp_path / "ddp_runner.py"  # a file: Lightning's DDP launcher re-runs sys.argv for rank 1
    script.write_text(RUNNER)
    result = subprocess.run(
        [sys.executable, str(script), str(root), str(out)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert "KeyError" not in result.stderr

    rows = {
        rank: [json.loads(line) for line in (out / f"rank{rank}.jsonl").read_text().splitlines()] for rank in (0, 1)
    }
    train_labels, val_labels = _labels(root / "train.beton"), _labels(root / "val.beton")
    plans = {}
    for rank in (0, 1):
        for epoch in (0, 1):
            (plan,) = [r for r in rows[rank] if r["kind"] == "plan" and r["epoch"] == epoch]
            assert plan["world_size"] == 2 and plan["per_device_batch_size"] == 8  # global 16 / 2
            assert plan["len"] == plan["num_training_batches"] == 100 // 8  # len() is per rank
            batches = [r for r in rows[rank] if r["kind"] == "train" and r["epoch"] == epoch]
            assert len(batches) == 12 and all(b["shape"] == [8, 3, 32, 32] for b in batches)
            # the loader served exactly this rank's planned samples, in order
            served = [label for b in batches for label in b["labels"]]
            assert served == train_labels[plan["order"]].tolist()
            plans[rank, epoch] = plan["order"]
    for epoch in (0, 1):
        assert not set(plans[0, epoch]) & set(plans[1, epoch])  # 200 = 2 x 100: disjoint shards
    assert plans[0, 0] != plans[0, 1]  # a new shuffle each epoch

    for epoch in (0, 1):
        val = [r for rank in (0, 1) for r in rows[rank] if r["kind"] == "val" and r["epoch"] == epoch]
        assert all(r["shape"][1:] == [3, 48, 48] for r in val)  # the separate validation resolution
        seen = [label for r in val for label in r["labels"]]
        assert len(seen) == 59 and Counter(seen) == Counter(val_labels.tolist())  # each image exactly once
        correct = sum(r["correct"] for r in val)
        for rank in (0, 1):
            (acc,) = [r for r in rows[rank] if r["kind"] == "acc" and r["epoch"] == epoch]
            assert acc["val_acc1"] == pytest.approx(correct / 59, abs=1e-6)
