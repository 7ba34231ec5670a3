"""CUDA checks: parity with torchvision, the fused shuffle's backward, bf16 + channels_last + compile, and
a short bf16-mixed fit on real demo images. Marked ``gpu``: CI (no GPU) deselects them;
``benchmarks/gpu_check.sh`` runs them where a GPU is available."""

import math

import lightning as L
import pytest
import torch
import torchvision
from torch import nn

from shufflenet_pl.models import build_model

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

WIDTHS = ["shufflenet_v2_x0_5", "shufflenet_v2_x1_0", "shufflenet_v2_x1_5", "shufflenet_v2_x2_0"]


def _pair(name: str, memory_format: torch.memory_format) -> "tuple[nn.Module, nn.Module]":
    theirs = getattr(torchvision.models, name)(weights=None)
    ours = build_model(name)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    return ours.cuda().to(memory_format=memory_format), theirs.cuda().to(memory_format=memory_format)


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("name", WIDTHS)
def test_eval_outputs_match_torchvision_on_cuda(name: str, memory_format: torch.memory_format) -> None:
    ours, theirs = _pair(name, memory_format)
    images = torch.randn(8, 3, 128, 128, device="cuda").to(memory_format=memory_format)
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(images), theirs.eval()(images), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last], ids=["nchw", "channels_last"])
def test_training_gradients_match_torchvision_on_cuda(memory_format: torch.memory_format) -> None:
    """The fused Concat+Shuffle+Split autograd Function gives torchvision's gradients on the GPU too."""
    ours, theirs = _pair("shufflenet_v2_x1_0", memory_format)
    images = torch.randn(16, 3, 96, 96, device="cuda").to(memory_format=memory_format)
    labels = torch.randint(0, 1000, (16,), device="cuda")
    for model in (ours, theirs):
        nn.functional.cross_entropy(model.train()(images), labels).backward()
    theirs_grads = dict(theirs.named_parameters())
    for name, parameter in ours.named_parameters():
        torch.testing.assert_close(parameter.grad, theirs_grads[name].grad, rtol=1e-3, atol=1e-4, msg=name)


def test_bf16_channels_last_compiled_training_learns() -> None:
    """bf16 autocast + channels_last + torch.compile: outputs follow eager, and SGD fits a fixed batch."""
    torch.manual_seed(0)
    model = build_model("shufflenet_v2_x0_5", num_classes=10).cuda().to(memory_format=torch.channels_last)
    compiled = torch.compile(model)
    images = torch.randn(32, 3, 64, 64, device="cuda").to(memory_format=torch.channels_last)
    labels = torch.arange(32, device="cuda") % 10
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        torch.testing.assert_close(compiled.eval()(images).float(), model.eval()(images).float(), rtol=5e-2, atol=5e-2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    compiled.train()
    losses = []
    for _ in range(30):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = nn.functional.cross_entropy(compiled(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss))
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < 0.5 * losses[0], losses


class _TrainLosses(L.Callback):
    def __init__(self) -> None:
        self.losses: "list[float]" = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]))


def fit_demo_losses(root, tmp_path, accelerator: str, precision: str) -> "list[float]":
    """Per-step training losses of a 10-epoch fit of 0.5x on the small demo set at 64 px."""
    from shufflenet_pl.data import ImageFolderDataModule
    from shufflenet_pl.module import ImageClassifier

    L.seed_everything(0)
    data = ImageFolderDataModule(root=str(root), batch_size=32, num_workers=4, train_res=64, val_res=64)
    module = ImageClassifier(
        build_model("shufflenet_v2_x0_5", num_classes=10),
        lr=0.05,
        weight_decay=0.0,
        schedule="cosine",
        warmup_epochs=1,
        channels_last=True,
    )
    recorder = _TrainLosses()
    trainer = L.Trainer(
        accelerator=accelerator,
        devices=1,
        precision=precision,
        max_epochs=10,
        logger=False,
        callbacks=[recorder],
        enable_checkpointing=False,
        enable_progress_bar=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(module, datamodule=data)
    assert 0.0 <= trainer.callback_metrics["val/acc1"].item() <= 1.0
    return recorder.losses


def test_bf16_mixed_fit_on_demo_images(demo_root, tmp_path) -> None:
    """The LightningModule and ImageFolder datamodule on one GPU in bf16-mixed: the training loss on real
    images falls (first vs last 6 steps)."""
    losses = fit_demo_losses(demo_root, tmp_path, "gpu", "bf16-mixed")
    assert len(losses) == 60 and all(map(math.isfinite, losses))
    assert sum(losses[-6:]) < sum(losses[:6]) - 0.3, losses
