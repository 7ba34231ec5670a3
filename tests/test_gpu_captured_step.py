"""The captured training step on CUDA (issue 14): ``compile_mode=reduce-overhead`` replays CUDA graphs
inside a real ``Trainer.fit``, trains, matches the eager step, and keeps one graph per training
resolution. Marked ``gpu``: run by ``benchmarks/gpu_check.sh`` where a GPU is available."""

import math
from typing import List

import lightning as L
import pytest
import torch

from shufflenet_pl.models import build_model
from shufflenet_pl.module import ImageClassifier

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


class _Losses(L.Callback):
    def __init__(self) -> None:
        self.losses: List[float] = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]))


class _Batches:
    """Batches already on the GPU, as one iterable (a plain list would be read as several loaders)."""

    def __init__(self, batches: list) -> None:
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        return iter(self.batches)

    def __add__(self, other: "_Batches") -> "_Batches":
        return _Batches(self.batches + other.batches)


def _batches(n: int, size: int = 64, batch: int = 32) -> _Batches:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (batch, 3, size, size), generator=g, dtype=torch.uint8).cuda()
    targets = (torch.arange(batch) % 10).cuda()
    return _Batches([(images, targets)] * n)


def _fit(module: ImageClassifier, batches: _Batches, tmp_path, precision: str = "bf16-mixed") -> List[float]:
    recorder = _Losses()
    trainer = L.Trainer(accelerator="gpu", devices=1, precision=precision, max_epochs=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[recorder], default_root_dir=tmp_path)
    trainer.fit(module, train_dataloaders=batches)
    return recorder.losses


def _module(**kwargs) -> ImageClassifier:
    torch.manual_seed(0)
    return ImageClassifier(build_model("shufflenet_v2_x0_5", num_classes=10), lr=0.05, weight_decay=0.0,
                           schedule="constant", channels_last=True, **kwargs)


def test_captured_step_trains_in_fit(tmp_path) -> None:
    """bf16 + channels_last + CUDA graphs + fused SGD: a fixed batch is fitted (the loss falls)."""
    module = _module(compile=True, compile_mode="reduce-overhead")
    losses = _fit(module, _batches(40), tmp_path)
    assert len(losses) == 40 and all(map(math.isfinite, losses))
    assert losses[-1] < 0.5 * losses[0], losses
    assert module.trainer.optimizers[0].defaults["fused"] is True


def test_captured_step_matches_eager(tmp_path) -> None:
    """float32, one step each: the graph-replayed step's update equals the eager one up to reassociation."""
    eager, captured = _module(optimizer_impl="for-loop"), _module(compile=True, compile_mode="reduce-overhead")
    initial = [p.detach().clone() for p in eager.model.parameters()]
    eager_losses = _fit(eager, _batches(1), tmp_path, precision="32-true")
    captured_losses = _fit(captured, _batches(1), tmp_path, precision="32-true")
    assert captured_losses[0] == pytest.approx(eager_losses[0], rel=1e-3)
    for (name, a), b, a0 in zip(eager.model.named_parameters(), captured.model.parameters(), initial):
        assert (a - b.cpu()).norm() <= 1e-2 * (a - a0).norm() + 1e-6, name


def test_one_graph_per_resolution(tmp_path) -> None:
    """Two training resolutions (progressive resizing) in one run: both train, each with its own static graph."""
    module = _module(compile=True, compile_mode="reduce-overhead")
    losses = _fit(module, _batches(10, size=64) + _batches(10, size=96), tmp_path)
    assert len(losses) == 20 and all(map(math.isfinite, losses))
    assert losses[9] < losses[0] and losses[19] < losses[10], losses
