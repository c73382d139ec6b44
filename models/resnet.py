"""CIFAR-style ResNets (He et al. 2016, §4.2) with 1x1-conv downsampling shortcuts ("option B").

Three stages of 16/32/64 channels at 32/16/8 pixels for a 32x32 input, a 3x3 stem, and basic blocks
of two 3x3 conv-BN(-ReLU). Where a block changes shape, the shortcut is a 1x1 stride-2 conv plus BN,
so every channel-mixing layer is a Conv the mapper can split. ResNet-20 has 22 conv/FC layers
(stem, 18 block convs, 2 shortcut convs, FC), ResNet-8 has 10, matching the layer tables of
targets.md §5.2.
"""

from __future__ import annotations

import torch
from torch import nn

STAGE_CHANNELS = (16, 32, 64)


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU, conv3x3-BN, add the shortcut, ReLU."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(c_out, c_out, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))
        else:
            self.shortcut = nn.Identity()
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu1(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.relu2(y + self.shortcut(x))


class CifarResNet(nn.Module):
    """Stem, three stages of `blocks_per_stage` basic blocks, global average pool, linear head."""

    def __init__(self, blocks_per_stage: int, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        if blocks_per_stage < 1 or num_classes < 1 or in_channels < 1:
            raise ValueError(
                f"blocks_per_stage, num_classes and in_channels must be >= 1, got "
                f"{blocks_per_stage}, {num_classes}, {in_channels}"
            )
        first = STAGE_CHANNELS[0]
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, first, 3, stride=1, padding=1, bias=False),
            nn.BatchNorm2d(first),
            nn.ReLU(),
        )
        stages = []
        c_in = first
        for index, c_out in enumerate(STAGE_CHANNELS):
            blocks = []
            for block in range(blocks_per_stage):
                stride = 2 if index > 0 and block == 0 else 1
                blocks.append(BasicBlock(c_in, c_out, stride))
                c_in = c_out
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(c_in, num_classes)
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.flatten(self.pool(x)))


def _init_weights(module: nn.Module) -> None:
    """He init for convs (as torchvision's ResNet); BN starts as the identity."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def resnet8(num_classes: int = 10, in_channels: int = 3) -> CifarResNet:
    """ResNet-8: one block per stage, 10 conv/FC layers."""
    return CifarResNet(1, num_classes, in_channels)


def resnet20(num_classes: int = 10, in_channels: int = 3) -> CifarResNet:
    """ResNet-20: three blocks per stage, 22 conv/FC layers."""
    return CifarResNet(3, num_classes, in_channels)
