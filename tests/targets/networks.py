"""Costed-layer lists of the paper's networks, built from their definitions (targets.md §5.2, §5.4).

Layers are in module order (as the reference iterates them): a residual block lists conv1, conv2,
then its 1x1 shortcut conv. Only Conv and Linear layers appear: everything else costs 0 cycles.
"""

from __future__ import annotations

from odimo.ir.geometry import LayerGeometry

conv = LayerGeometry.conv


def _residual_stage(
    name: str, blocks: int, c_in: int, c_out: int, size: int, stride: int, shortcut_conv: bool
) -> list[LayerGeometry]:
    """`blocks` basic blocks of two 3x3 convs; the first block may downsample."""
    layers = []
    for b in range(blocks):
        first = b == 0
        cin, s = (c_in, stride) if first else (c_out, 1)
        prefix = f"{name}.{b}"
        layers += [
            conv(f"{prefix}.conv1", cin, c_out, 3, size, stride=s),
            conv(f"{prefix}.conv2", c_out, c_out, 3, size),
        ]
        if first and shortcut_conv and (s != 1 or cin != c_out):
            layers.append(conv(f"{prefix}.shortcut", cin, c_out, 1, size, stride=s))
    return layers


def resnet20_cifar10(shortcut: str = "conv") -> list[LayerGeometry]:
    """ResNet-20 for 3x32x32: 16/32/64 channels, 3 blocks per stage, FC 64->10.

    `shortcut="conv"` (option B) adds two 1x1 stride-2 convs: 22 costed layers; "pad" (option A)
    zero-pads the identity instead: 20.
    """
    layers = [conv("stem", 3, 16, 3, 32)]
    c_in = 16
    for i, (c_out, size, stride) in enumerate([(16, 32, 1), (32, 16, 2), (64, 8, 2)]):
        layers += _residual_stage(f"layer{i + 1}", 3, c_in, c_out, size, stride, shortcut == "conv")
        c_in = c_out
    return layers + [LayerGeometry.linear("fc", 64, 10)]


def resnet18(dataset: str) -> list[LayerGeometry]:
    """ResNet-18 (torchvision layout): CIFAR-100 has a 3x3 stem and no max-pool on 32x32,
    ImageNet a 7x7 stride-2 stem and a max-pool on 224x224. 1x1 shortcut convs; 21 costed layers.
    """
    if dataset == "cifar100":
        layers, size, classes = [conv("stem", 3, 64, 3, 32)], 32, 100
    else:
        layers, size, classes = [conv("stem", 3, 64, 7, 112, stride=2)], 56, 1000
    c_in = 64
    for i, c_out in enumerate([64, 128, 256, 512]):
        stride = 1 if i == 0 else 2
        size //= stride
        layers += _residual_stage(f"layer{i + 1}", 2, c_in, c_out, size, stride, True)
        c_in = c_out
    return layers + [LayerGeometry.linear("fc", 512, classes)]


def mobilenetv1_supernet(dataset: str) -> list[LayerGeometry]:
    """MobileNetV1 width 1.0 with every C->C stride-1 dw/pw pair replaced by a searchable 3x3 conv.

    The reference supernet (`spec-hw-units/exp/common/models.py`): stem, then per block either a
    fixed dw (3x3 depthwise) + pw (1x1) pair or a searchable 3x3 conv `layer<i>`; 8 searchable
    layers. CIFAR-10 input 32 with stem stride 2, CIFAR-100 32 with stride 1, ImageNet 224 stride 2.
    layer13 has stride 1 as in MobileNetV1: the reference file gives it stride 2, which changes
    nothing on CIFAR-10 (1x1 map) but would halve the maps §5.4 lists for CIFAR-100 and ImageNet.
    """
    size, stem_stride, classes = {
        "cifar10": (32, 2, 10),
        "cifar100": (32, 1, 100),
        "imagenet": (224, 2, 1000),
    }[dataset]
    size //= stem_stride
    layers = [conv("layer0", 3, 32, 3, size, stride=stem_stride)]
    c = 32
    # (block, output channels, stride); a block with c_out == c_in and stride 1 is searchable.
    plan = [(1, 64, 1), (2, 128, 2), (3, 128, 1), (4, 256, 2), (5, 256, 1), (6, 512, 2)]
    plan += [(i, 512, 1) for i in range(7, 12)] + [(12, 1024, 2), (13, 1024, 1)]
    for block, c_out, stride in plan:
        size //= stride
        if c_out == c and stride == 1:
            layers.append(conv(f"layer{block}", c, c, 3, size))
        else:
            layers += [
                conv(f"dw{block}", c, c, 3, size, stride=stride, groups=c),
                conv(f"pw{block}", c, c_out, 1, size),
            ]
        c = c_out
    return layers + [LayerGeometry.linear("out", 1024, classes)]
