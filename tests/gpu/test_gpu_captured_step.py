"""The captured training step on CUDA: ``compile_mode=reduce-overhead`` replays CUDA graphs
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
        self.losses: List[torch.Tensor] = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        # A copy on the device (a graph's output is overwritten by the next replay), read after the fit:
        # reading it here would wait for the device on every step.
        self.losses.append(outputs["loss"].detach().clone())


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


def _fit(
    module: ImageClassifier, batches: _Batches, tmp_path, precision: str = "bf16-mixed", callbacks=()
) -> List[float]:
    recorder = _Losses()
    trainer = L.Trainer(
        accelerator="gpu",
        devices=1,
        precision=precision,
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[recorder, *callbacks],
        default_root_dir=tmp_path,
    )
    trainer.fit(module, train_dataloaders=batches)
    return [float(loss) for loss in recorder.losses]


def _module(**kwargs) -> ImageClassifier:
    torch.manual_seed(0)
    return ImageClassifier(
        build_model("shufflenet_v2_x0_5", num_classes=10),
        weight_decay=0.0,
        schedule="constant",
        channels_last=True,
        **{"lr": 0.05, **kwargs},
    )


def test_captured_step_trains_in_fit(tmp_path) -> None:
    """bf16 + channels_last + CUDA graphs + fused SGD: a fixed batch is fitted (the loss falls)."""
    module = _module(compile=True, compile_mode="reduce-overhead")
    losses = _fit(module, _batches(40), tmp_path)
    assert len(losses) == 40 and all(map(math.isfinite, losses))
    assert losses[-1] < 0.5 * losses[0], losses
    assert module.trainer.optimizers[0].defaults["fused"] is True


def test_fit_steps_do_not_wait_for_the_device(tmp_path) -> None:
    """Between two steps of ``fit`` nothing waits for the GPU (no ``.item()``, no blocking copy): a wait
    would put the host's per-step work back in series with the captured step's kernels. CUDA's sync
    debug mode turns any synchronising call into an error, from the 5th step to the 35th."""

    class NoSync(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            torch.cuda.set_sync_debug_mode("error" if 5 <= batch_idx < 35 else "default")

    module = _module(compile=True, compile_mode="reduce-overhead")
    try:
        losses = _fit(module, _batches(40), tmp_path, callbacks=[NoSync()])
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert len(losses) == 40


@pytest.fixture
def exact_float32():
    """float32 without TF32: the comparisons below are about the step, not about TF32's rounding."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.deterministic
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.deterministic = True
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.deterministic = saved


def test_captured_step_matches_eager(tmp_path, exact_float32) -> None:
    """float32, three steps (warm-up, recording, replay): the captured steps train as the eager ones.

    At initialisation this network amplifies rounding: its first-layer gradient differs by ~4 %
    between float32 and float64 eager on a CPU, and eager vs compiled runs drift apart from the
    second step on (measured on a CPU: whole updates ~25-60 % apart after 3 steps, with the same
    first loss). So the checks are those rounding cannot move: the first loss (same weights, same
    batch), and the classifier's bias update, which depends on the forward pass only (0.6 % apart on a
    CPU); a skipped or repeated step moves it by a third or more.
    """
    eager = _module(optimizer_impl="fused", lr=1e-3)
    captured = _module(compile=True, compile_mode="reduce-overhead", lr=1e-3)
    initial_bias = eager.model.fc.bias.detach().clone()
    eager_losses = _fit(eager, _batches(3), tmp_path, precision="32-true")
    captured_losses = _fit(captured, _batches(3), tmp_path, precision="32-true")
    assert captured_losses[0] == pytest.approx(eager_losses[0], rel=1e-3)
    eager_step = eager.model.fc.bias.detach().cpu() - initial_bias
    captured_step = captured.model.fc.bias.detach().cpu() - initial_bias
    assert (captured_step - eager_step).norm() <= 5e-2 * eager_step.norm(), (captured_step, eager_step)
    for (name, a), b in zip(eager.model.named_parameters(), captured.model.parameters()):
        assert a.shape == b.shape and torch.isfinite(b).all(), name


def test_one_graph_per_resolution(tmp_path) -> None:
    """Two training resolutions (progressive resizing) in one run: both train, each with its own static graph."""
    module = _module(compile=True, compile_mode="reduce-overhead")
    losses = _fit(module, _batches(10, size=64) + _batches(10, size=96), tmp_path)
    assert len(losses) == 20 and all(map(math.isfinite, losses))
    assert losses[9] < losses[0] and losses[19] < losses[10], losses
