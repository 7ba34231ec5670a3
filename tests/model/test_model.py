"""The model: shapes, gradients, torchvision parity (parameters, FLOPs, state dict, outputs),
the merged concat+shuffle+split, and export paths."""

import subprocess
import sys

import pytest
import torch
import torchvision
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from shufflenet_pl.models import (
    MODELS,
    build_model,
    channel_shuffle,
    concat_shuffle,
    import_weights,
    load_state_dict_file,
    shufflenet_v2_x1_0,
)

WIDTHS = ["shufflenet_v2_x0_5", "shufflenet_v2_x1_0", "shufflenet_v2_x1_5", "shufflenet_v2_x2_0"]
# torchvision's metadata for the published weights.
PARAMS = {
    "shufflenet_v2_x0_5": 1_366_792,
    "shufflenet_v2_x1_0": 2_278_604,
    "shufflenet_v2_x1_5": 3_503_624,
    "shufflenet_v2_x2_0": 7_393_996,
}
# The paper's Table 8 complexity in MFLOPs (multiply-adds).
PAPER_MFLOPS = {
    "shufflenet_v2_x0_5": 41,
    "shufflenet_v2_x1_0": 146,
    "shufflenet_v2_x1_5": 299,
    "shufflenet_v2_x2_0": 591,
}
# Table 5 stage output channels (conv1, stage2, stage3, stage4, conv5).
TABLE5 = {
    "shufflenet_v2_x0_5": [24, 48, 96, 192, 1024],
    "shufflenet_v2_x1_0": [24, 116, 232, 464, 1024],
    "shufflenet_v2_x1_5": [24, 176, 352, 704, 1024],
    "shufflenet_v2_x2_0": [24, 244, 488, 976, 2048],
}


def torchvision_twin(name: str, **kwargs) -> nn.Module:
    return getattr(torchvision.models, name)(weights=None, **kwargs)


@pytest.mark.parametrize("name", WIDTHS)
@pytest.mark.parametrize("size", [64, 96])
def test_forward_backward_every_parameter_gets_gradient(name: str, size: int) -> None:
    torch.manual_seed(0)
    model = build_model(name, num_classes=7)
    x = torch.randn(2, 3, size, size)
    out = model(x)
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()
    out.logsumexp(dim=1).sum().backward()
    for pname, param in model.named_parameters():
        assert param.grad is not None, f"{pname} got no gradient"
        assert torch.isfinite(param.grad).all(), f"{pname} has a non-finite gradient"
        assert param.grad.abs().sum() > 0, f"{pname} has an all-zero gradient"


@pytest.mark.parametrize("name", WIDTHS)
def test_table5_stage_shapes(name: str) -> None:
    model = build_model(name).eval()
    c = TABLE5[name]
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        x = model.conv1(x)
        assert x.shape == (1, c[0], 112, 112)
        x = model.maxpool(x)
        assert x.shape == (1, c[0], 56, 56)
        for stage, channels, side, repeats in (
            (model.stage2, c[1], 28, 4),
            (model.stage3, c[2], 14, 8),
            (model.stage4, c[3], 7, 4),
        ):
            assert len(stage) == repeats
            assert stage[0].stride == 2 and all(unit.stride == 1 for unit in stage[1:])
            x = stage(x)
            assert x.shape == (1, channels, side, side)
        assert model.conv5(x).shape == (1, c[4], 7, 7)


@pytest.mark.parametrize("name", WIDTHS)
def test_parameter_count_matches_torchvision(name: str) -> None:
    assert sum(p.numel() for p in build_model(name).parameters()) == PARAMS[name]


@pytest.mark.parametrize("name", WIDTHS)
def test_flops_within_2_percent_of_paper(name: str) -> None:
    model = build_model(name).eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.randn(1, 3, 224, 224))
    mult_adds = counter.get_total_flops() / 2  # the counter reports 2 FLOPs per multiply-add
    assert abs(mult_adds / 1e6 - PAPER_MFLOPS[name]) / PAPER_MFLOPS[name] < 0.02, mult_adds


@pytest.mark.parametrize("name", WIDTHS)
def test_torchvision_state_dict_loads_strictly_and_outputs_match(name: str) -> None:
    torch.manual_seed(0)
    theirs = torchvision_twin(name).eval()
    # Non-trivial BN statistics so that eval mode exercises them.
    for module in theirs.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    ours = build_model(name).eval()
    assert list(ours.state_dict()) == list(theirs.state_dict())
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x))


def test_import_weights_from_file_is_safe_and_strict(tmp_path) -> None:
    theirs = torchvision_twin("shufflenet_v2_x0_5").eval()
    path = tmp_path / "shufflenetv2_x0.5.pth"
    torch.save(theirs.state_dict(), path)
    ours = import_weights("shufflenet_v2_x0_5", path).eval()
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x))
    with pytest.raises(ValueError, match="does not fit"):
        import_weights("shufflenet_v2_x1_0", path)
    # A pickle that would run code is refused by weights_only=True.
    evil = tmp_path / "evil.pth"
    torch.save({"fc.weight": torch.zeros(1), "payload": _Unpicklable()}, evil)
    with pytest.raises(ValueError, match="weights_only"):
        load_state_dict_file(evil)


class _Unpicklable:
    pass


def test_import_weights_tool_writes_loadable_state_dict(tmp_path) -> None:
    theirs = torchvision_twin("shufflenet_v2_x0_5")
    source, output = tmp_path / "tv.pth", tmp_path / "out" / "x0_5.pt"
    torch.save(theirs.state_dict(), source)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "shufflenet_pl.cli",
            "import-weights",
            str(source),
            str(output),
            "--model",
            "shufflenet_v2_x0_5",
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    loaded = torch.load(output, weights_only=True)
    for key, value in theirs.state_dict().items():
        torch.testing.assert_close(loaded[key], value)
    bad = subprocess.run(
        [sys.executable, "-m", "shufflenet_pl.cli", "import-weights", str(tmp_path / "missing.pth"), str(output)],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "missing.pth does not exist" in bad.stderr


@pytest.mark.parametrize("channels_last", [False, True])
def test_concat_shuffle_equals_cat_then_channel_shuffle(channels_last: bool) -> None:
    a, b = torch.randn(3, 8, 5, 7), torch.randn(3, 8, 5, 7)
    if channels_last:
        a, b = a.contiguous(memory_format=torch.channels_last), b.contiguous(memory_format=torch.channels_last)
    fused = concat_shuffle(a, b)
    plain = channel_shuffle(torch.cat((a, b), dim=1), 2)
    assert torch.equal(fused, plain)
    assert fused.is_contiguous(memory_format=torch.channels_last) == channels_last
    # The next unit's split is a view of the fused tensor and equals the plain chunk.
    for fused_half, plain_half in zip(fused.chunk(2, dim=1), plain.chunk(2, dim=1)):
        assert torch.equal(fused_half, plain_half)


def test_fused_model_matches_plain_model_bit_for_bit() -> None:
    """Whole network: the merged ops against torchvision's cat + channel_shuffle, in training mode too."""
    torch.manual_seed(0)
    theirs = torchvision_twin("shufflenet_v2_x0_5")
    ours = build_model("shufflenet_v2_x0_5")
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(4, 3, 64, 64)
    assert torch.equal(ours(x), theirs(x))


def test_channels_last_matches_contiguous() -> None:
    model = shufflenet_v2_x1_0().eval()
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        reference = model(x)
        model = model.to(memory_format=torch.channels_last)
        torch.testing.assert_close(
            model(x.contiguous(memory_format=torch.channels_last)), reference, rtol=1e-4, atol=1e-5
        )


def test_torchscript_matches_eager() -> None:
    model = build_model("shufflenet_v2_x0_5").eval()
    scripted = torch.jit.script(model)
    for memory_format in (torch.contiguous_format, torch.channels_last):
        x = torch.randn(2, 3, 64, 64).contiguous(memory_format=memory_format)
        with torch.no_grad():
            torch.testing.assert_close(scripted(x), model(x))


def test_torch_export_matches_eager() -> None:
    model = build_model("shufflenet_v2_x0_5").eval()
    x = torch.randn(2, 3, 64, 64)
    exported = torch.export.export(model, (x,))
    with torch.no_grad():
        torch.testing.assert_close(exported.module()(x), model(x))


@pytest.mark.slow
def test_torch_compile_matches_eager() -> None:
    model = build_model("shufflenet_v2_x0_5").eval()
    compiled = torch.compile(model)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x), rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_onnx_export_runs_in_onnxruntime(tmp_path) -> None:
    onnxruntime = pytest.importorskip("onnxruntime")
    model = build_model("shufflenet_v2_x0_5").eval()
    x = torch.randn(2, 3, 64, 64)
    path = tmp_path / "model.onnx"
    torch.onnx.export(model, (x,), str(path), input_names=["images"], output_names=["logits"], dynamo=True)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {"images": x.numpy()})
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(logits), model(x), rtol=1e-4, atol=1e-4)


def test_registry() -> None:
    assert sorted(MODELS) == WIDTHS
    with pytest.raises(ValueError, match="unknown model name 'resnet50'"):
        build_model("resnet50")


def test_models_package_imports_torch_only() -> None:
    code = (
        "import sys, shufflenet_pl.models; "
        "bad = [m for m in ('lightning', 'ffcv', 'wandb', 'pytorch_lightning') if m in sys.modules]; "
        "print(bad); sys.exit(bool(bad))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
