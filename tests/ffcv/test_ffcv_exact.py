"""Exact FFCV runs without SLURM: two fits with the same seed give bitwise-equal weights (the crops
and flips come from the seeded decode stage, not from the loader threads' random state); another
data seed gives other weights. Two loader threads, two epochs."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import REPO

pytest.importorskip("ffcv", reason="ffcv is installed by setup.sh")
pytestmark = pytest.mark.slow

FIT = r"""
import sys
import lightning as L
import torch

from shufflenet_pl.data.ffcv import FFCVImageNetDataModule
from shufflenet_pl.models import build_model
from shufflenet_pl.module import ImageClassifier

root, seed, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
torch.set_num_threads(1)
L.seed_everything(0)
data = FFCVImageNetDataModule(root, batch_size=16, num_workers=2, train_res=48, val_res=48, crop_scale=(0.25, 1.0),
                              seed=seed)
model = ImageClassifier(build_model("shufflenet_v2_x0_5", num_classes=data.num_classes), lr=0.05, warmup_epochs=0)
trainer = L.Trainer(max_epochs=2, limit_val_batches=0, accelerator="cpu", devices=1, logger=False,
                    enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
trainer.fit(model, data)
assert trainer.global_step == 2 * (200 // 16)
torch.save(model.state_dict(), out)
"""


def _fit(root: Path, seed: int, out: Path, cli_env: dict) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", FIT, str(root), str(seed), str(out)],
        cwd=REPO,
        env=dict(cli_env, OMP_NUM_THREADS="1"),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return torch.load(out, map_location="cpu")


def test_two_ffcv_fits_with_the_same_seed_give_bitwise_equal_weights(
    demo_beton_root: Path, tmp_path: Path, cli_env: dict
) -> None:
    first = _fit(demo_beton_root, 7, tmp_path / "a.pt", cli_env)
    second = _fit(demo_beton_root, 7, tmp_path / "b.pt", cli_env)
    other = _fit(demo_beton_root, 8, tmp_path / "c.pt", cli_env)
    assert first.keys() == second.keys()
    for name, tensor in first.items():
        assert torch.equal(tensor, second[name]), name
    assert not all(torch.equal(tensor, other[name]) for name, tensor in first.items() if tensor.is_floating_point())
