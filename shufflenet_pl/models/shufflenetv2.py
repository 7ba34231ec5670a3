"""ShuffleNet V2 (Ma, Zhang, Zheng, Sun, ECCV 2018: "ShuffleNet V2: Practical Guidelines for
Efficient CNN Architecture Design"), section 3 and Table 5.

Module names follow torchvision's ``torchvision/models/shufflenetv2.py`` (``conv1.0``,
``stage2.0.branch1.0``, ..., ``conv5.0``, ``fc``): they are the state-dict API, so torchvision's
published weights load with ``strict=True`` and give the same outputs.

Where we differ is speed, not arithmetic. The paper notes that Concat, Channel Shuffle and the next
unit's Channel Split are three element-wise operations that can be merged into one. torchvision
runs them as ``cat`` (a copy), ``transpose().contiguous()`` (a second copy) and ``chunk`` (a view
that the next 1x1 convolution copies again, in the forward and in the backward). Here:

* a unit writes its two halves straight into the shuffled layout with one copy
  (:func:`concat_shuffle`), in NCHW or channels_last without converting layouts;
* inside a stage, the units hand each other the next unit's two halves as two dense tensors
  (:func:`concat_shuffle_split`: Concat + Shuffle + Split as one copy), so nothing is copied again
  before the 1x1 convolution;
* the backward of that copy gives each branch a dense gradient in the branch's own layout
  (autograd's ``stack`` would hand out every-other-channel views, on which the ReLU and BatchNorm
  backward kernels run strided and several times slower on CPU).

All of it only moves data, so the results are bit-identical to torchvision's ``cat`` +
``channel_shuffle`` + ``chunk`` for the same memory format; tests compare both. Under
``torch.compile``, ``torch.export``, ``torch.jit.script``/``trace`` and when a unit has hooks, the
model runs its units one by one with plain tensor operations (what those tools fuse, export or
observe best).
"""

from typing import List, Sequence, Tuple

import torch
from torch import Tensor, nn

__all__ = [
    "ShuffleNetV2",
    "InvertedResidual",
    "channel_shuffle",
    "concat_shuffle",
    "concat_shuffle_split",
    "shufflenet_v2_x0_5",
    "shufflenet_v2_x1_0",
    "shufflenet_v2_x1_5",
    "shufflenet_v2_x2_0",
]


def channel_shuffle(x: Tensor, groups: int) -> Tensor:
    """The paper's channel shuffle (ShuffleNet V1, Fig. 1): the plain reference version.

    Args:
        x: ``(N, C, H, W)`` tensor, ``C`` divisible by ``groups``.
        groups: number of groups to interleave.
    """
    batch_size, num_channels, height, width = x.size()
    channels_per_group = num_channels // groups
    x = x.view(batch_size, groups, channels_per_group, height, width)
    x = torch.transpose(x, 1, 2).contiguous()
    return x.view(batch_size, num_channels, height, width)


def _channels_innermost(x: Tensor) -> bool:
    """True for a channels_last tensor or a channel slice of one (channels are the fastest-moving
    dimension in memory), where the shuffle is done in the NHWC view."""
    return x.dim() == 4 and x.size(1) > 1 and x.stride(1) == 1


def _eager() -> bool:
    """False while ``torch.compile``, ``torch.export`` or ``torch.jit.trace`` records the model: they
    get plain tensor operations, which they fuse or export by themselves."""
    return not (torch.compiler.is_compiling() or torch.compiler.is_exporting() or torch.jit.is_tracing())


def _interleave(a: Tensor, b: Tensor) -> Tensor:
    """Channels ``a0, b0, a1, b1, ...`` (``(N, 2C, H, W)`` from two ``(N, C, H, W)``) in one copy,
    in channels_last if ``b`` is channels_last, else in NCHW."""
    if _channels_innermost(b):
        a_nhwc, b_nhwc = a.permute(0, 2, 3, 1), b.permute(0, 2, 3, 1)
        if a.dtype == b.dtype and a.dtype in (torch.float32, torch.float64):
            # A complex number is a (real, imaginary) pair in memory, and torch.complex is a
            # vectorised kernel; stack on the last dimension is a stride-2 scatter, ~4x slower on CPU.
            pairs = torch.view_as_real(torch.complex(a_nhwc, b_nhwc))
        else:
            pairs = torch.stack((a_nhwc, b_nhwc), dim=4)
        return pairs.flatten(3).permute(0, 3, 1, 2)
    return torch.stack((a, b), dim=2).flatten(1, 2)


def _interleave_parts(a: Tensor, b: Tensor, parts: int) -> Tuple[Tensor, ...]:
    """``_interleave(a, b).chunk(parts, 1)``, each part written densely."""
    if parts == 1:
        return (_interleave(a, b),)
    a_parts, b_parts = a.chunk(parts, 1), b.chunk(parts, 1)
    return tuple([_interleave(a_parts[k], b_parts[k]) for k in range(parts)])


def _concat_shuffle_eager(a: Tensor, b: Tensor, parts: int) -> Tuple[Tensor, ...]:
    if torch.is_grad_enabled() and (a.requires_grad or b.requires_grad):
        return _ConcatShuffle.apply(a, b, parts)
    return _interleave_parts(a, b, parts)  # no autograd record to keep: skip the Function's overhead


class _ConcatShuffle(torch.autograd.Function):
    """``parts`` equal channel slices of ``channel_shuffle(cat((a, b), 1), 2)``, each written densely
    by one copy, with a backward that returns dense gradients for ``a`` and ``b``."""

    @staticmethod
    def forward(ctx, a: Tensor, b: Tensor, parts: int) -> Tuple[Tensor, ...]:  # type: ignore[override]
        ctx.parts = parts
        ctx.channels_last = _channels_innermost(b)
        return _interleave_parts(a, b, parts)

    @staticmethod
    def backward(ctx, *grads: Tensor) -> Tuple[Tensor, Tensor, None]:  # type: ignore[override]
        present = [g for g in grads if g is not None]
        n, channels, h, w = present[0].shape
        half, parts = channels // 2, ctx.parts
        # out[0] and out[1] are the gradients of a and b: dense, in the layout of the forward.
        if ctx.channels_last:
            out = present[0].new_empty((2, n, h, w, parts, half))
            for k, g in enumerate(grads):
                part = out[:, :, :, :, k]
                if g is None:
                    part.zero_()
                else:
                    part.copy_(g.permute(0, 2, 3, 1).reshape(n, h, w, half, 2).permute(4, 0, 1, 2, 3))
            grad_a, grad_b = (out[i].view(n, h, w, parts * half).permute(0, 3, 1, 2) for i in (0, 1))
        else:
            out = present[0].new_empty((2, n, parts, half, h, w))
            for k, g in enumerate(grads):
                part = out[:, :, k]
                if g is None:
                    part.zero_()
                else:
                    part.copy_(g.reshape(n, half, 2, h, w).permute(2, 0, 1, 3, 4))
            grad_a, grad_b = (out[i].view(n, parts * half, h, w) for i in (0, 1))
        return grad_a, grad_b, None


def concat_shuffle(a: Tensor, b: Tensor) -> Tensor:
    """``channel_shuffle(torch.cat((a, b), 1), 2)`` in one memory pass.

    Shuffling two groups interleaves them: output channel ``2i`` is ``a[:, i]`` and ``2i + 1`` is
    ``b[:, i]``. The result is channels_last when ``b`` is (the interleave is then done in the NHWC
    view, with no layout conversion), NCHW otherwise.

    Args:
        a: ``(N, C/2, H, W)``, the first group (identity or left branch).
        b: ``(N, C/2, H, W)``, the second group (right branch), same shape as ``a``.
    """
    if not torch.jit.is_scripting():
        if _eager():
            return _concat_shuffle_eager(a, b, 1)[0]
    if _channels_innermost(b):
        nhwc = torch.stack((a.permute(0, 2, 3, 1), b.permute(0, 2, 3, 1)), dim=4)
        return nhwc.flatten(3).permute(0, 3, 1, 2)
    return torch.stack((a, b), dim=2).flatten(1, 2)


def concat_shuffle_split(a: Tensor, b: Tensor) -> Tuple[Tensor, Tensor]:
    """``concat_shuffle(a, b).chunk(2, 1)`` (Concat, Shuffle and the next unit's Split: the paper's three
    element-wise operations merged into one) as two dense tensors, written by one memory pass.

    Args:
        a: ``(N, C/2, H, W)``, the first group; ``C/2`` must be even.
        b: ``(N, C/2, H, W)``, the second group, same shape as ``a``.
    """
    if a.size(1) % 2:
        raise ValueError(f"concat_shuffle_split needs an even channel count per group, got {a.size(1)}")
    if not torch.jit.is_scripting():
        if _eager():
            first, second = _concat_shuffle_eager(a, b, 2)
            return first, second
    first, second = concat_shuffle(a, b).chunk(2, dim=1)
    return first, second


class InvertedResidual(nn.Module):
    """One ShuffleNet V2 unit: the basic unit (Fig. 3c, ``stride=1``) or the down-sampling
    unit (Fig. 3d, ``stride=2``).

    The basic unit splits the channels in half; one half is the identity, the other goes through
    1x1 conv-BN-ReLU, 3x3 depthwise conv-BN, 1x1 conv-BN-ReLU with equal widths (guideline G1) and
    ungrouped 1x1 convs (G2); the halves are concatenated, never added (G4), and shuffled.
    The down-sampling unit feeds the whole input to both branches with stride 2, doubling the
    channels. The name is torchvision's, kept for state-dict compatibility.

    Args:
        inp: input channels.
        oup: output channels (even).
        stride: 1 for the basic unit, 2 for the down-sampling unit.
    """

    def __init__(self, inp: int, oup: int, stride: int) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        self.stride = stride
        self.out_channels = oup
        branch_features = oup // 2
        if oup % 2:
            raise ValueError(f"output channels must be even, got oup={oup}")
        if stride == 1 and inp != branch_features << 1:
            raise ValueError(f"a basic unit (stride 1) needs inp == oup, got inp={inp}, oup={oup}")

        if self.stride > 1:
            self.branch1 = nn.Sequential(
                self.depthwise_conv(inp, inp, kernel_size=3, stride=self.stride, padding=1),
                nn.BatchNorm2d(inp),
                nn.Conv2d(inp, branch_features, kernel_size=1, stride=1, padding=0, bias=False),
                nn.BatchNorm2d(branch_features),
                nn.ReLU(inplace=True),
            )
        else:
            self.branch1 = nn.Sequential()

        self.branch2 = nn.Sequential(
            nn.Conv2d(inp if self.stride > 1 else branch_features, branch_features, 1, 1, 0, bias=False),
            nn.BatchNorm2d(branch_features),
            nn.ReLU(inplace=True),
            self.depthwise_conv(branch_features, branch_features, kernel_size=3, stride=self.stride, padding=1),
            nn.BatchNorm2d(branch_features),
            nn.Conv2d(branch_features, branch_features, 1, 1, 0, bias=False),
            nn.BatchNorm2d(branch_features),
            nn.ReLU(inplace=True),
        )

    @staticmethod
    def depthwise_conv(
        i: int, o: int, kernel_size: int, stride: int = 1, padding: int = 0, bias: bool = False
    ) -> nn.Conv2d:
        return nn.Conv2d(i, o, kernel_size, stride, padding, bias=bias, groups=i)

    def branches(self, x1: Tensor, x2: Tensor) -> Tuple[Tensor, Tensor]:
        """The two tensors the unit concatenates and shuffles.

        Args:
            x1: the identity half of the input (basic unit), or the whole input (down-sampling unit).
            x2: the other half (basic unit), or the whole input again (down-sampling unit).
        """
        if self.stride == 1:
            return x1, self.branch2(x2)
        return self.branch1(x1), self.branch2(x2)

    def forward(self, x: Tensor) -> Tensor:
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)  # channel split: views
        else:
            x1, x2 = x, x  # no split: both branches see the whole input
        left, right = self.branches(x1, x2)
        return concat_shuffle(left, right)


class _Stage(nn.Sequential):
    """The units of one stage. In eager mode they hand each other the next unit's two input halves as
    dense tensors (:func:`concat_shuffle_split`) instead of one shuffled tensor that the next unit
    splits into views; the output is the same. Units are called one by one instead when a unit has
    hooks or a replaced ``forward`` (so that hooks see each unit's real input and output), under the
    compilers and exporters, and when the stage width is not a multiple of 4."""

    def forward(self, x: Tensor) -> Tensor:
        if not torch.jit.is_scripting():
            units = list(self)
            if len(units) > 1 and _eager() and self._units_are_plain(units) and units[-1].out_channels % 4 == 0:
                # The stage's input is split like a basic unit's, or given whole to a down-sampling unit.
                x1, x2 = x.chunk(2, dim=1) if units[0].stride == 1 else (x, x)
                for unit in units[:-1]:
                    x1, x2 = concat_shuffle_split(*unit.branches(x1, x2))
                return concat_shuffle(*units[-1].branches(x1, x2))
        for unit in self:
            x = unit(x)
        return x

    @staticmethod
    def _units_are_plain(units: List[nn.Module]) -> bool:
        # Global hooks (nn.modules.module.register_module_forward_hook) live in private dicts that
        # nn.Module.__call__ itself reads; FlopCounterMode's module tracker is one user.
        global_hooks = nn.modules.module._global_forward_hooks or nn.modules.module._global_forward_pre_hooks
        return not global_hooks and all(
            type(unit) is InvertedResidual
            and not unit._forward_hooks
            and not unit._forward_pre_hooks
            and "forward" not in vars(unit)
            for unit in units
        )


class ShuffleNetV2(nn.Module):
    """ShuffleNet V2 (Table 5): conv1 3x3/2, maxpool 3x3/2, stages 2-4, conv5 1x1, global average
    pool, FC.

    Args:
        stages_repeats: units per stage, ``[4, 8, 4]`` in the paper.
        stages_out_channels: output channels of conv1, stage2, stage3, stage4 and conv5.
        num_classes: size of the classifier's output.
    """

    def __init__(
        self, stages_repeats: Sequence[int], stages_out_channels: Sequence[int], num_classes: int = 1000
    ) -> None:
        super().__init__()
        if len(stages_repeats) != 3:
            raise ValueError(f"expected stages_repeats as a list of 3 positive ints, got {list(stages_repeats)}")
        if len(stages_out_channels) != 5:
            raise ValueError(
                f"expected stages_out_channels as a list of 5 positive ints, got {list(stages_out_channels)}"
            )
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self._stage_out_channels: List[int] = list(stages_out_channels)

        input_channels = 3
        output_channels = self._stage_out_channels[0]
        self.conv1 = nn.Sequential(
            nn.Conv2d(input_channels, output_channels, 3, 2, 1, bias=False),
            nn.BatchNorm2d(output_channels),
            nn.ReLU(inplace=True),
        )
        input_channels = output_channels
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)

        # Assigned one by one (not setattr in a loop) so that TorchScript and type checkers see them.
        self.stage2 = self._make_stage(input_channels, self._stage_out_channels[1], stages_repeats[0])
        self.stage3 = self._make_stage(self._stage_out_channels[1], self._stage_out_channels[2], stages_repeats[1])
        self.stage4 = self._make_stage(self._stage_out_channels[2], self._stage_out_channels[3], stages_repeats[2])

        output_channels = self._stage_out_channels[-1]
        self.conv5 = nn.Sequential(
            nn.Conv2d(self._stage_out_channels[3], output_channels, 1, 1, 0, bias=False),
            nn.BatchNorm2d(output_channels),
            nn.ReLU(inplace=True),
        )
        self.fc = nn.Linear(output_channels, num_classes)
        self._initialize_weights()

    def _initialize_weights(self) -> None:
        """The official implementation's initialisation (Megvii ShuffleNet-Series): convs from
        N(0, 1/fan_in_channels), the stem conv N(0, 0.01), BN scale 1 / shift 1e-4, FC N(0, 0.01).
        It trains noticeably faster from scratch than PyTorch's default (uniform Kaiming)."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                std = 0.01 if module is self.conv1[0] else 1.0 / module.weight.shape[1]
                nn.init.normal_(module.weight, 0.0, std)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.constant_(module.bias, 1e-4)
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0.0, 0.01)
                nn.init.zeros_(module.bias)

    @staticmethod
    def _make_stage(input_channels: int, output_channels: int, repeats: int) -> nn.Sequential:
        units: List[nn.Module] = [InvertedResidual(input_channels, output_channels, 2)]
        units += [InvertedResidual(output_channels, output_channels, 1) for _ in range(repeats - 1)]
        return _Stage(*units)

    def forward_features(self, x: Tensor) -> Tensor:
        """Everything up to and including conv5: ``(N, 3, H, W) -> (N, C5, H/32, W/32)``."""
        x = self.conv1(x)
        x = self.maxpool(x)
        x = self.stage2(x)
        x = self.stage3(x)
        x = self.stage4(x)
        return self.conv5(x)

    def forward(self, x: Tensor) -> Tensor:
        x = self.forward_features(x)
        if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
            # Same reduction; its backward then hands conv5's ReLU a channels_last gradient instead of
            # an NCHW one (mixed layouts make that ReLU backward ~10x slower on CPU).
            x = x.permute(0, 2, 3, 1).mean([1, 2])
        else:
            x = x.mean([2, 3])  # global average pool
        return self.fc(x)


def _shufflenetv2(stages_out_channels: Sequence[int], num_classes: int) -> ShuffleNetV2:
    return ShuffleNetV2([4, 8, 4], stages_out_channels, num_classes=num_classes)


def shufflenet_v2_x0_5(num_classes: int = 1000) -> ShuffleNetV2:
    """ShuffleNet V2 0.5x (Table 5): 41 MFLOPs, 1,366,792 parameters."""
    return _shufflenetv2([24, 48, 96, 192, 1024], num_classes)


def shufflenet_v2_x1_0(num_classes: int = 1000) -> ShuffleNetV2:
    """ShuffleNet V2 1.0x (Table 5): 146 MFLOPs, 2,278,604 parameters."""
    return _shufflenetv2([24, 116, 232, 464, 1024], num_classes)


def shufflenet_v2_x1_5(num_classes: int = 1000) -> ShuffleNetV2:
    """ShuffleNet V2 1.5x (Table 5): 299 MFLOPs, 3,503,624 parameters."""
    return _shufflenetv2([24, 176, 352, 704, 1024], num_classes)


def shufflenet_v2_x2_0(num_classes: int = 1000) -> ShuffleNetV2:
    """ShuffleNet V2 2.0x (Table 5): 591 MFLOPs, 7,393,996 parameters."""
    return _shufflenetv2([24, 244, 488, 976, 2048], num_classes)
