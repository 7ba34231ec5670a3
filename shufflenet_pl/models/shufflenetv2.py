"""ShuffleNet V2 (Ma, Zhang, Zheng, Sun, ECCV 2018: "ShuffleNet V2: Practical Guidelines for
Efficient CNN Architecture Design"), section 3 and Table 5.

Module names follow torchvision's ``torchvision/models/shufflenetv2.py`` (``conv1.0``,
``stage2.0.branch1.0``, ..., ``conv5.0``, ``fc``): they are the state-dict API, so torchvision's
published weights load with ``strict=True`` and give the same outputs.

Where we differ is speed, not arithmetic. The paper notes that Concat, Channel Shuffle and the next
unit's Channel Split are three element-wise operations that can be merged into one. torchvision
runs them as ``cat`` (a copy) then ``transpose().contiguous()`` (a second copy) then ``chunk``.
Here a unit writes its two halves straight into the shuffled layout with a single ``stack``
(:func:`concat_shuffle`, one copy) and the next unit's split is a free view. The result is
bit-identical to ``channel_shuffle(torch.cat((a, b), 1), 2)``; a test compares both.
"""

from typing import List, Sequence

import torch
from torch import Tensor, nn

__all__ = [
    "ShuffleNetV2",
    "InvertedResidual",
    "channel_shuffle",
    "concat_shuffle",
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


def concat_shuffle(a: Tensor, b: Tensor) -> Tensor:
    """``channel_shuffle(torch.cat((a, b), 1), 2)`` in one memory pass.

    Shuffling two groups interleaves them: output channel ``2i`` is ``a[:, i]`` and ``2i + 1`` is
    ``b[:, i]``, which is exactly ``stack`` on a new axis right after the channel axis. Under
    channels_last (NHWC in memory) that axis is the innermost one, so the stack is done in the
    NHWC view and the result stays channels_last without a layout conversion.

    Args:
        a: ``(N, C/2, H, W)``, the first group (identity or left branch).
        b: ``(N, C/2, H, W)``, the second group (right branch), same shape as ``a``.
    """
    if a.dim() == 4 and a.is_contiguous(memory_format=torch.channels_last) and not a.is_contiguous():
        nhwc = torch.stack((a.permute(0, 2, 3, 1), b.permute(0, 2, 3, 1)), dim=4)
        return nhwc.flatten(3).permute(0, 3, 1, 2)
    return torch.stack((a, b), dim=2).flatten(1, 2)


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
    def depthwise_conv(i: int, o: int, kernel_size: int, stride: int = 1, padding: int = 0, bias: bool = False) -> nn.Conv2d:
        return nn.Conv2d(i, o, kernel_size, stride, padding, bias=bias, groups=i)

    def forward(self, x: Tensor) -> Tensor:
        if self.stride == 1:
            # Channel split is a view; concat + shuffle is one stack (see module docstring).
            x1, x2 = x.chunk(2, dim=1)
            return concat_shuffle(x1, self.branch2(x2))
        return concat_shuffle(self.branch1(x), self.branch2(x))


class ShuffleNetV2(nn.Module):
    """ShuffleNet V2 (Table 5): conv1 3x3/2, maxpool 3x3/2, stages 2-4, conv5 1x1, global average
    pool, FC.

    Args:
        stages_repeats: units per stage, ``[4, 8, 4]`` in the paper.
        stages_out_channels: output channels of conv1, stage2, stage3, stage4 and conv5.
        num_classes: size of the classifier's output.
    """

    def __init__(self, stages_repeats: Sequence[int], stages_out_channels: Sequence[int], num_classes: int = 1000) -> None:
        super().__init__()
        if len(stages_repeats) != 3:
            raise ValueError(f"expected stages_repeats as a list of 3 positive ints, got {list(stages_repeats)}")
        if len(stages_out_channels) != 5:
            raise ValueError(f"expected stages_out_channels as a list of 5 positive ints, got {list(stages_out_channels)}")
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
        return nn.Sequential(*units)

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
