"""The model's speed work: the merged Concat + Shuffle + Split and its dense-gradient backward
must change nothing but speed. Bit-identical to torchvision in training (outputs, every gradient,
BatchNorm statistics) in NCHW and channels_last, float32 and bfloat16; the fast path is really taken;
hooks and compilers get units called one by one."""

from typing import List

import pytest
import torch
import torchvision

from shufflenet_pl.models import build_model, channel_shuffle, concat_shuffle, concat_shuffle_split
from shufflenet_pl.models import shufflenetv2

FORMATS = [torch.contiguous_format, torch.channels_last]


def _plain_concat_shuffle(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return channel_shuffle(torch.cat((a, b), dim=1), 2)


@pytest.mark.parametrize("memory_format", FORMATS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_concat_shuffle_split_is_exact_and_dense_forward_and_backward(
    memory_format: torch.memory_format, dtype: torch.dtype
) -> None:
    torch.manual_seed(0)
    a = torch.randn(3, 12, 5, 7, dtype=dtype).contiguous(memory_format=memory_format).requires_grad_()
    b = torch.randn(3, 12, 5, 7, dtype=dtype).contiguous(memory_format=memory_format).requires_grad_()
    arrived: List[torch.Tensor] = []
    for leaf in (a, b):
        leaf.register_hook(lambda grad: arrived.append(grad))
    first, second = concat_shuffle_split(a, b)
    plain_first, plain_second = _plain_concat_shuffle(a.detach(), b.detach()).chunk(2, dim=1)
    assert torch.equal(first, plain_first) and torch.equal(second, plain_second)
    for half in (first, second):
        assert half.is_contiguous(memory_format=memory_format)  # dense: the next 1x1 conv copies nothing
    upstream = [torch.randn_like(first), torch.randn_like(second)]
    torch.autograd.backward([first, second], upstream)
    # Reference gradients through plain autograd ops.
    a_ref, b_ref = a.detach().clone().requires_grad_(), b.detach().clone().requires_grad_()
    torch.autograd.backward(list(_plain_concat_shuffle(a_ref, b_ref).chunk(2, dim=1)), upstream)
    assert torch.equal(a.grad, a_ref.grad) and torch.equal(b.grad, b_ref.grad)
    # The gradients that reach the branches are dense in the branches' layout, not strided views.
    assert len(arrived) == 2 and all(g.is_contiguous(memory_format=memory_format) for g in arrived)


@pytest.mark.parametrize("memory_format", FORMATS)
def test_concat_shuffle_backward_matches_autograd(memory_format: torch.memory_format) -> None:
    torch.manual_seed(0)
    a = torch.randn(2, 6, 4, 4).contiguous(memory_format=memory_format).requires_grad_()
    b = torch.randn(2, 6, 4, 4).contiguous(memory_format=memory_format).requires_grad_()
    out = concat_shuffle(a, b)
    upstream = torch.randn_like(out)
    out.backward(upstream)
    a_ref, b_ref = a.detach().clone().requires_grad_(), b.detach().clone().requires_grad_()
    _plain_concat_shuffle(a_ref, b_ref).backward(upstream)
    assert torch.equal(a.grad, a_ref.grad) and torch.equal(b.grad, b_ref.grad)


def test_concat_shuffle_split_refuses_odd_groups() -> None:
    with pytest.raises(ValueError, match="even channel count per group, got 3"):
        concat_shuffle_split(torch.randn(1, 3, 2, 2), torch.randn(1, 3, 2, 2))


@pytest.mark.parametrize("memory_format", FORMATS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_training_step_is_bit_identical_to_torchvision(memory_format: torch.memory_format, dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    theirs = torchvision.models.shufflenet_v2_x0_5().to(dtype=dtype, memory_format=memory_format)
    ours = build_model("shufflenet_v2_x0_5").to(dtype=dtype, memory_format=memory_format)
    ours.load_state_dict(theirs.state_dict())
    images = torch.randn(2, 3, 64, 64, dtype=dtype).contiguous(memory_format=memory_format)
    x_ours, x_theirs = images.clone().requires_grad_(), images.clone().requires_grad_()
    out_ours, out_theirs = ours(x_ours), theirs(x_theirs)
    assert torch.equal(out_ours, out_theirs)
    upstream = torch.randn_like(out_ours)
    out_ours.backward(upstream)
    out_theirs.backward(upstream)
    assert torch.equal(x_ours.grad, x_theirs.grad)
    for (name, p_ours), p_theirs in zip(ours.named_parameters(), theirs.parameters()):
        assert torch.equal(p_ours.grad, p_theirs.grad), name
    for (name, b_ours), b_theirs in zip(ours.named_buffers(), theirs.buffers()):
        assert torch.equal(b_ours, b_theirs), name


def _count_split_calls(monkeypatch: pytest.MonkeyPatch) -> List[int]:
    calls = [0]
    original = shufflenetv2.concat_shuffle_split

    def counting(a: torch.Tensor, b: torch.Tensor):
        calls[0] += 1
        return original(a, b)

    monkeypatch.setattr(shufflenetv2, "concat_shuffle_split", counting)
    return calls


@pytest.mark.parametrize("memory_format", FORMATS)
def test_fast_path_is_taken_in_eager_mode(monkeypatch: pytest.MonkeyPatch, memory_format: torch.memory_format) -> None:
    calls = _count_split_calls(monkeypatch)
    model = build_model("shufflenet_v2_x0_5").to(memory_format=memory_format)
    model(torch.randn(1, 3, 64, 64).contiguous(memory_format=memory_format))
    assert calls[0] == 3 + 7 + 3  # every unit but the last of each stage hands over split halves


@pytest.mark.parametrize("memory_format", FORMATS)
def test_any_slice_of_a_stage_equals_its_units_one_by_one(memory_format: torch.memory_format) -> None:
    model = build_model("shufflenet_v2_x0_5").eval().to(memory_format=memory_format)
    x = torch.randn(2, 48, 8, 8).contiguous(memory_format=memory_format)
    with torch.no_grad():
        for part in (model.stage2[1:], model.stage2[1:3], model.stage2[:2]):
            y = x if part[0].stride == 1 else torch.randn(2, 24, 16, 16).contiguous(memory_format=memory_format)
            reference = y
            for unit in part:
                reference = unit(reference)
            assert torch.equal(part(y), reference)


def test_hooked_units_are_called_one_by_one_and_chained(monkeypatch: pytest.MonkeyPatch) -> None:
    """Forward hooks (e.g. ``shufflenet-pl analyze``) must see every unit's real input and output."""
    calls = _count_split_calls(monkeypatch)
    model = build_model("shufflenet_v2_x0_5").eval()
    seen = []
    for unit in model.modules():
        if isinstance(unit, shufflenetv2.InvertedResidual):
            unit.register_forward_hook(lambda module, args, output: seen.append((args[0], output)))
    with torch.no_grad():
        model(torch.randn(1, 3, 64, 64))
    assert calls[0] == 0 and len(seen) == 16
    for (_, previous_output), (next_input, _) in zip(seen, seen[1:]):
        if previous_output.shape == next_input.shape:
            assert torch.equal(previous_output, next_input)


def test_export_and_trace_get_plain_operations() -> None:
    """torch.export sees stack/flatten/permute, not the autograd.Function of the eager fast path."""
    model = build_model("shufflenet_v2_x0_5").eval()
    exported = torch.export.export(model, (torch.randn(1, 3, 64, 64),))
    targets = {str(node.target) for node in exported.graph.nodes if node.op == "call_function"}
    assert any("stack" in target for target in targets)
    assert not any("ConcatShuffle" in target or "complex" in target for target in targets)
