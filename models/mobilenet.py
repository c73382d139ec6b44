"""MobileNetV1 (Howard et al. 2017) with CIFAR strides, and the Darkside seed network built on it.

Layer geometry for a 32x32 input at width 1.0 (targets.md §5.4, "CIFAR-10 (stem stride 2)"):

    stem   3x3 s2  in->32    16x16
    block1 dw/pw   32->64    16x16
    block2 dw/pw s2 64->128   8x8
    block3         128->128   8x8   (C_in == C_out)
    block4 dw/pw s2 128->256  4x4
    block5         256->256   4x4   (C_in == C_out)
    block6 dw/pw s2 256->512  2x2
    block7..11     512->512   2x2   (C_in == C_out, 5x)
    block12 dw/pw s2 512->1024 1x1
    block13        1024->1024 1x1   (C_in == C_out)
    global average pool, FC 1024->classes

In MobileNetV1 every block is a depthwise-separable pair (3x3 depthwise, then 1x1 pointwise, each
followed by BN and ReLU). The Darkside seed (paper §IV.C, §V.A) keeps the stem and the five
blocks that change the channel count (block1, 2, 4, 6, 12: the fixed layers "dw1/pw1 ... dw12/pw12"
of §5.4) and replaces each of the eight C->C blocks by one standard 3x3 C->C conv: those are the
searchable layers (maps 8, 4, 5x2, 1), which odimo later splits between a cluster conv and a DWE
depthwise conv.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

STEM_CHANNELS = 32
# (c_out, stride) of the 13 blocks at width 1.0.
BLOCKS = (
    (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
    (512, 1), (512, 1), (512, 1), (512, 1), (512, 1),
    (1024, 2), (1024, 1),
)  # fmt: skip


class DepthwiseSeparable(nn.Sequential):
    """3x3 depthwise conv-BN-ReLU, then 1x1 pointwise conv-BN-ReLU."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__(
            OrderedDict(
                dw=nn.Conv2d(c_in, c_in, 3, stride=stride, padding=1, groups=c_in, bias=False),
                dw_bn=nn.BatchNorm2d(c_in),
                dw_relu=nn.ReLU(),
                pw=nn.Conv2d(c_in, c_out, 1, bias=False),
                pw_bn=nn.BatchNorm2d(c_out),
                pw_relu=nn.ReLU(),
            )
        )


class ConvBNReLU(nn.Sequential):
    """kxk standard conv-BN-ReLU."""

    def __init__(self, c_in: int, c_out: int, stride: int, k: int = 3) -> None:
        super().__init__(
            OrderedDict(
                conv=nn.Conv2d(c_in, c_out, k, stride=stride, padding=k // 2, bias=False),
                bn=nn.BatchNorm2d(c_out),
                relu=nn.ReLU(),
            )
        )


class MobileNetV1(nn.Module):
    """MobileNetV1 with a stride-2 stem (CIFAR-10 geometry for 32x32 inputs; stem_stride=1 doubles
    every map, the CIFAR-100 variant of §5.4).

    `conv_for_equal_blocks` turns each stride-1 block with C_in == C_out into one 3x3 standard conv:
    that is the Darkside seed network (see `darkside_seed`).
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        width: float = 1.0,
        stem_stride: int = 2,
        conv_for_equal_blocks: bool = False,
    ) -> None:
        super().__init__()
        if num_classes < 1 or in_channels < 1 or width <= 0 or stem_stride not in (1, 2):
            raise ValueError(
                f"need num_classes >= 1, in_channels >= 1, width > 0, stem_stride in (1, 2); got "
                f"{num_classes}, {in_channels}, {width}, {stem_stride}"
            )
        c_in = _scaled(STEM_CHANNELS, width)
        self.stem = ConvBNReLU(in_channels, c_in, stem_stride)
        blocks: OrderedDict[str, nn.Module] = OrderedDict()
        for index, (c, stride) in enumerate(BLOCKS, start=1):
            c_out = _scaled(c, width)
            if conv_for_equal_blocks and stride == 1 and c_in == c_out:
                blocks[f"block{index}"] = ConvBNReLU(c_in, c_out, 1)
            else:
                blocks[f"block{index}"] = DepthwiseSeparable(c_in, c_out, stride)
            c_in = c_out
        self.blocks = nn.Sequential(blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(c_in, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(x))
        return self.fc(self.flatten(self.pool(x)))


def _scaled(channels: int, width: float) -> int:
    """Channels at a width multiplier; exact for the paper's 0.25, 0.5 and 1.0."""
    return max(1, int(round(channels * width)))


def mobilenet_v1(num_classes: int = 10, in_channels: int = 3, width: float = 1.0, stem_stride: int = 2) -> MobileNetV1:
    """Plain MobileNetV1: 13 depthwise-separable blocks."""
    return MobileNetV1(num_classes, in_channels, width, stem_stride)


def darkside_seed(num_classes: int = 10, in_channels: int = 3, width: float = 1.0, stem_stride: int = 2) -> MobileNetV1:
    """The Darkside seed: MobileNetV1 whose eight C->C blocks are single 3x3 C->C convs."""
    return MobileNetV1(num_classes, in_channels, width, stem_stride, conv_for_equal_blocks=True)
