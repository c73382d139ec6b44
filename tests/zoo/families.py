"""Compact plain-torch versions of third-party CNN families, for import and analysis tests.

Each family keeps the block structure (and the forward-pass idioms: `x.size()` unpacking, `view`,
`chunk`, `torch.split`, `out[:, :oup]`, `x.mean([2, 3])`, `id_out = 0`) of the reference
implementation named in its docstring, shrunk to 8-96 channels, 3x32x32 input and 10 classes, so
the exporters meet the same torch code a user's model would give them.

Every factory seeds torch, builds the model, calibrates and then perturbs the BatchNorm statistics
(see `_randomize_batchnorm`) and returns it in eval mode.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

INPUT_SHAPE = (3, 32, 32)
NUM_CLASSES = 10

Act = Callable[[], nn.Module] | None


# --------------------------------------------------------------------------- shared pieces


class ConvBNAct(nn.Sequential):
    """Conv (no bias) -> BN -> activation, 'same' padding; torchvision's Conv2dNormActivation."""

    def __init__(self, c_in: int, c_out: int, k: int = 3, stride: int = 1, groups: int = 1, act: Act = nn.ReLU) -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(c_in, c_out, k, stride, (k - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(c_out),
        ]
        if act is not None:
            layers.append(act())
        super().__init__(*layers)


def _make_divisible(v: float, divisor: int = 8) -> int:
    """Channel rounding shared by the MobileNet/EfficientNet/GhostNet reference code."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


class ConvSE(nn.Module):
    """torchvision.ops.SqueezeExcitation: pool -> 1x1 conv -> act -> 1x1 conv -> gate -> Mul."""

    def __init__(
        self, c: int, c_squeeze: int, act: Callable[[], nn.Module] = nn.ReLU, gate: Callable[[], nn.Module] = nn.Sigmoid
    ) -> None:
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(c, c_squeeze, 1)
        self.fc2 = nn.Conv2d(c_squeeze, c, 1)
        self.activation = act()
        self.scale_activation = gate()

    def forward(self, x: Tensor) -> Tensor:
        scale = self.scale_activation(self.fc2(self.activation(self.fc1(self.avgpool(x)))))
        return scale * x


class GlobalPoolHead(nn.Module):
    """AdaptiveAvgPool2d(1) -> torch.flatten -> [Dropout] -> Linear: the common classifier."""

    def __init__(self, c: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        self.fc = nn.Linear(c, NUM_CLASSES)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.dropout(torch.flatten(self.avgpool(x), 1)))


# --------------------------------------------------------------------------- resnet, se_resnet


class SELayer(nn.Module):
    """The Linear-based SE of moskomule/senet.pytorch: view to [N, C], two Linears, view back."""

    def __init__(self, c: int, reduction: int = 4) -> None:
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Sequential(
            nn.Linear(c, c // reduction, bias=False),
            nn.ReLU(inplace=True),
            nn.Linear(c // reduction, c, bias=False),
            nn.Sigmoid(),
        )

    def forward(self, x: Tensor) -> Tensor:
        b, c, _, _ = x.size()
        y = self.avg_pool(x).view(b, c)
        y = self.fc(y).view(b, c, 1, 1)
        return x * y.expand_as(x)


class BasicBlock(nn.Module):
    """torchvision ResNet BasicBlock; 1x1 conv + BN shortcut when the shape changes."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1, se: bool = False) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.se = SELayer(c_out) if se else None
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.se is not None:
            out = self.se(out)
        out += identity
        return self.relu(out)


class ResNet(nn.Module):
    def __init__(self, se: bool = False) -> None:
        super().__init__()
        self.stem = ConvBNAct(3, 16)
        self.layers = nn.Sequential(BasicBlock(16, 16, se=se), BasicBlock(16, 32, 2, se=se), BasicBlock(32, 32, se=se))
        self.head = GlobalPoolHead(32)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.layers(self.stem(x)))


# --------------------------------------------------------------------------- resnext


class Bottleneck(nn.Module):
    """torchvision ResNeXt Bottleneck: 1x1 -> grouped 3x3 (cardinality 4) -> 1x1, + shortcut."""

    def __init__(self, c_in: int, width: int, c_out: int, stride: int = 1, groups: int = 4) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, c_out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out += identity
        return self.relu(out)


def resnext() -> nn.Module:
    return nn.Sequential(
        ConvBNAct(3, 16, stride=2),
        Bottleneck(16, 16, 32),
        Bottleneck(32, 16, 32),
        Bottleneck(32, 32, 32, stride=2),
        GlobalPoolHead(32),
    )


# --------------------------------------------------------------------------- mobilenetv2


class InvertedResidualV2(nn.Module):
    """torchvision MobileNetV2 block: [1x1 expand] -> 3x3 depthwise -> 1x1 project, ReLU6."""

    def __init__(self, c_in: int, c_out: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = c_in * expand_ratio
        self.use_res_connect = stride == 1 and c_in == c_out
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBNAct(c_in, hidden, 1, act=nn.ReLU6))
        layers += [
            ConvBNAct(hidden, hidden, 3, stride, groups=hidden, act=nn.ReLU6),
            nn.Conv2d(hidden, c_out, 1, bias=False),
            nn.BatchNorm2d(c_out),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            ConvBNAct(3, 16, stride=2, act=nn.ReLU6),
            InvertedResidualV2(16, 8, 1, 1),
            InvertedResidualV2(8, 16, 2, 4),
            InvertedResidualV2(16, 16, 1, 4),
            InvertedResidualV2(16, 24, 2, 4),
            InvertedResidualV2(24, 24, 1, 4),
            ConvBNAct(24, 64, 1, act=nn.ReLU6),
        )
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(64, NUM_CLASSES))

    def forward(self, x: Tensor) -> Tensor:
        x = F.adaptive_avg_pool2d(self.features(x), (1, 1))
        return self.classifier(torch.flatten(x, 1))


# --------------------------------------------------------------------------- mobilenetv3


class InvertedResidualV3(nn.Module):
    """torchvision MobileNetV3 block: [expand] -> depthwise -> [SE, hardsigmoid gate] -> project."""

    def __init__(
        self, c_in: int, k: int, c_exp: int, c_out: int, use_se: bool, act: Callable[[], nn.Module], stride: int
    ) -> None:
        super().__init__()
        self.use_res_connect = stride == 1 and c_in == c_out
        layers: list[nn.Module] = []
        if c_exp != c_in:
            layers.append(ConvBNAct(c_in, c_exp, 1, act=act))
        layers.append(ConvBNAct(c_exp, c_exp, k, stride, groups=c_exp, act=act))
        if use_se:
            layers.append(ConvSE(c_exp, _make_divisible(c_exp // 4, 8), gate=nn.Hardsigmoid))
        layers.append(ConvBNAct(c_exp, c_out, 1, act=None))
        self.block = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        result = self.block(x)
        return result + x if self.use_res_connect else result


class MobileNetV3(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            ConvBNAct(3, 16, stride=2, act=nn.Hardswish),
            InvertedResidualV3(16, 3, 16, 16, True, nn.ReLU, 2),
            InvertedResidualV3(16, 3, 48, 24, False, nn.ReLU, 2),
            InvertedResidualV3(24, 5, 72, 24, True, nn.Hardswish, 1),
            ConvBNAct(24, 96, 1, act=nn.Hardswish),
        )
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Linear(96, 64), nn.Hardswish(inplace=True), nn.Dropout(0.2), nn.Linear(64, NUM_CLASSES)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


# --------------------------------------------------------------------------- shufflenetv2


def channel_shuffle(x: Tensor, groups: int) -> Tensor:
    """torchvision's shuffle, size() unpacking included (a Shape subgraph in TorchScript)."""
    batchsize, num_channels, height, width = x.size()
    channels_per_group = num_channels // groups
    x = x.view(batchsize, groups, channels_per_group, height, width)
    x = torch.transpose(x, 1, 2).contiguous()
    return x.view(batchsize, -1, height, width)


class ShuffleUnit(nn.Module):
    """torchvision ShuffleNetV2 InvertedResidual: chunk / two branches -> Concat -> shuffle."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        c_branch = c_out // 2
        if stride > 1:
            self.branch1 = nn.Sequential(
                nn.Conv2d(c_in, c_in, 3, stride, 1, groups=c_in, bias=False),
                nn.BatchNorm2d(c_in),
                nn.Conv2d(c_in, c_branch, 1, bias=False),
                nn.BatchNorm2d(c_branch),
                nn.ReLU(inplace=True),
            )
        else:
            self.branch1 = nn.Sequential()
        self.branch2 = nn.Sequential(
            nn.Conv2d(c_in if stride > 1 else c_branch, c_branch, 1, bias=False),
            nn.BatchNorm2d(c_branch),
            nn.ReLU(inplace=True),
            nn.Conv2d(c_branch, c_branch, 3, stride, 1, groups=c_branch, bias=False),
            nn.BatchNorm2d(c_branch),
            nn.Conv2d(c_branch, c_branch, 1, bias=False),
            nn.BatchNorm2d(c_branch),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: Tensor) -> Tensor:
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat((x1, self.branch2(x2)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return channel_shuffle(out, 2)


class ShuffleNetV2(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = ConvBNAct(3, 16, stride=2)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.stage2 = nn.Sequential(ShuffleUnit(16, 32, 2), ShuffleUnit(32, 32, 1))
        self.stage3 = nn.Sequential(ShuffleUnit(32, 48, 2), ShuffleUnit(48, 48, 1))
        self.conv5 = ConvBNAct(48, 64, 1)
        self.fc = nn.Linear(64, NUM_CLASSES)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv5(self.stage3(self.stage2(self.maxpool(self.conv1(x)))))
        return self.fc(x.mean([2, 3]))


# --------------------------------------------------------------------------- squeezenet


class Fire(nn.Module):
    """torchvision SqueezeNet Fire: squeeze 1x1 -> Concat(expand 1x1, expand 3x3)."""

    def __init__(self, c_in: int, c_squeeze: int, c_e1: int, c_e3: int) -> None:
        super().__init__()
        self.squeeze = nn.Conv2d(c_in, c_squeeze, 1)
        self.squeeze_activation = nn.ReLU(inplace=True)
        self.expand1x1 = nn.Conv2d(c_squeeze, c_e1, 1)
        self.expand1x1_activation = nn.ReLU(inplace=True)
        self.expand3x3 = nn.Conv2d(c_squeeze, c_e3, 3, padding=1)
        self.expand3x3_activation = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        x = self.squeeze_activation(self.squeeze(x))
        return torch.cat(
            [self.expand1x1_activation(self.expand1x1(x)), self.expand3x3_activation(self.expand3x3(x))], 1
        )


class SqueezeNet(nn.Module):
    """SqueezeNet 1.1 layout, no BN; ceil_mode MaxPool; conv classifier then global pool."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, stride=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, ceil_mode=True),
            Fire(16, 8, 16, 16),
            Fire(32, 8, 16, 16),
            nn.MaxPool2d(3, 2, ceil_mode=True),
            Fire(32, 8, 24, 24),
        )
        self.classifier = nn.Sequential(
            nn.Dropout(0.5), nn.Conv2d(48, NUM_CLASSES, 1), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d((1, 1))
        )
        # torchvision's init (kaiming_uniform, zero bias) keeps activations O(1) without BN; its
        # N(0, 0.01) classifier would not, so that conv gets kaiming too, and its bias is centred
        # on a random batch: otherwise most ReLU'd logits are dead (always 0) and compare vacuously.
        with torch.no_grad():
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_uniform_(m.weight)
                    nn.init.zeros_(m.bias)
            final_conv = self.classifier[1]
            final_conv.bias -= final_conv(self.features(torch.randn(16, *INPUT_SHAPE))).mean((0, 2, 3))

    def forward(self, x: Tensor) -> Tensor:
        return torch.flatten(self.classifier(self.features(x)), 1)


# --------------------------------------------------------------------------- densenet


class DenseLayer(nn.Module):
    """torchvision _DenseLayer: Concat(all previous) -> BN-ReLU-1x1 -> BN-ReLU-3x3 (growth)."""

    def __init__(self, c_in: int, growth: int, bn_size: int) -> None:
        super().__init__()
        self.norm1 = nn.BatchNorm2d(c_in)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(c_in, bn_size * growth, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(bn_size * growth)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(bn_size * growth, growth, 3, padding=1, bias=False)

    def forward(self, inputs: list[Tensor]) -> Tensor:
        concated = torch.cat(inputs, 1)
        return self.conv2(self.relu2(self.norm2(self.conv1(self.relu1(self.norm1(concated))))))


class DenseBlock(nn.ModuleDict):
    def __init__(self, n_layers: int, c_in: int, growth: int, bn_size: int = 2) -> None:
        super().__init__(
            {f"denselayer{i + 1}": DenseLayer(c_in + i * growth, growth, bn_size) for i in range(n_layers)}
        )

    def forward(self, init_features: Tensor) -> Tensor:
        features = [init_features]
        for layer in self.values():
            features.append(layer(features))
        return torch.cat(features, 1)


class DenseNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            ConvBNAct(3, 16, stride=2),
            DenseBlock(3, 16, 8),  # 16 + 3 * 8 = 40
            nn.Sequential(
                nn.BatchNorm2d(40), nn.ReLU(inplace=True), nn.Conv2d(40, 20, 1, bias=False), nn.AvgPool2d(2, 2)
            ),  # torchvision _Transition
            DenseBlock(3, 20, 8),  # 44
            nn.BatchNorm2d(44),
        )
        self.classifier = nn.Linear(44, NUM_CLASSES)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.features(x), inplace=True)
        out = torch.flatten(F.adaptive_avg_pool2d(out, (1, 1)), 1)
        return self.classifier(out)


# --------------------------------------------------------------------------- efficientnet


class Swish(nn.Module):
    """x * sigmoid(x) written out, as lukemelas/EfficientNet-PyTorch does."""

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(x)


class StochasticDepth(nn.Module):
    """Drop-connect on the residual branch; identity in eval, so no op reaches the export."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = torch.empty(x.shape[0], 1, 1, 1, dtype=x.dtype).bernoulli_(1.0 - self.p)
        return x * keep / (1.0 - self.p)


class MBConv(nn.Module):
    """torchvision EfficientNet MBConv: [expand] -> depthwise -> SE (SiLU, sigmoid) -> project."""

    def __init__(self, c_in: int, c_out: int, k: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        self.use_res_connect = stride == 1 and c_in == c_out
        c_exp = c_in * expand_ratio
        layers: list[nn.Module] = []
        if c_exp != c_in:
            layers.append(ConvBNAct(c_in, c_exp, 1, act=nn.SiLU))
        layers += [
            ConvBNAct(c_exp, c_exp, k, stride, groups=c_exp, act=nn.SiLU),
            ConvSE(c_exp, max(1, c_in // 4), act=nn.SiLU),
            ConvBNAct(c_exp, c_out, 1, act=None),
        ]
        self.block = nn.Sequential(*layers)
        self.stochastic_depth = StochasticDepth(0.2)

    def forward(self, x: Tensor) -> Tensor:
        result = self.block(x)
        if self.use_res_connect:
            result = self.stochastic_depth(result) + x
        return result


def efficientnet() -> nn.Module:
    return nn.Sequential(
        ConvBNAct(3, 16, stride=2, act=Swish),
        MBConv(16, 16, 3, 1, 1),
        MBConv(16, 24, 3, 2, 4),
        MBConv(24, 24, 5, 1, 4),
        MBConv(24, 32, 5, 2, 3),
        ConvBNAct(32, 64, 1, act=nn.SiLU),
        GlobalPoolHead(64, dropout=0.2),
    )


# --------------------------------------------------------------------------- ghostnet


def hard_sigmoid(x: Tensor) -> Tensor:
    """GhostNet's own hard sigmoid: relu6(x + 3) / 6, not nn.Hardsigmoid."""
    return F.relu6(x + 3.0) / 6.0


class GhostSE(nn.Module):
    """huawei-noah GhostNet SqueezeExcite: gate with `hard_sigmoid`."""

    def __init__(self, c: int) -> None:
        super().__init__()
        c_reduced = _make_divisible(c * 0.25, 4)
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.conv_reduce = nn.Conv2d(c, c_reduced, 1)
        self.act1 = nn.ReLU(inplace=True)
        self.conv_expand = nn.Conv2d(c_reduced, c, 1)

    def forward(self, x: Tensor) -> Tensor:
        x_se = self.conv_expand(self.act1(self.conv_reduce(self.avg_pool(x))))
        return x * hard_sigmoid(x_se)


class GhostModule(nn.Module):
    """Primary conv + cheap depthwise conv, Concat, then `[:, :oup]` (a real cut when oup is odd)."""

    def __init__(self, c_in: int, oup: int, relu: bool = True, k: int = 1, ratio: int = 2, dw_size: int = 3) -> None:
        super().__init__()
        self.oup = oup
        init_channels = math.ceil(oup / ratio)
        new_channels = init_channels * (ratio - 1)
        self.primary_conv = nn.Sequential(
            nn.Conv2d(c_in, init_channels, k, 1, k // 2, bias=False),
            nn.BatchNorm2d(init_channels),
            nn.ReLU(inplace=True) if relu else nn.Sequential(),
        )
        self.cheap_operation = nn.Sequential(
            nn.Conv2d(init_channels, new_channels, dw_size, 1, dw_size // 2, groups=init_channels, bias=False),
            nn.BatchNorm2d(new_channels),
            nn.ReLU(inplace=True) if relu else nn.Sequential(),
        )

    def forward(self, x: Tensor) -> Tensor:
        x1 = self.primary_conv(x)
        x2 = self.cheap_operation(x1)
        out = torch.cat([x1, x2], dim=1)
        return out[:, : self.oup, :, :]


class GhostBottleneck(nn.Module):
    def __init__(self, c_in: int, c_mid: int, c_out: int, k: int = 3, stride: int = 1, se: bool = False) -> None:
        super().__init__()
        self.stride = stride
        self.ghost1 = GhostModule(c_in, c_mid, relu=True)
        if stride > 1:
            self.conv_dw = nn.Conv2d(c_mid, c_mid, k, stride, (k - 1) // 2, groups=c_mid, bias=False)
            self.bn_dw = nn.BatchNorm2d(c_mid)
        self.se = GhostSE(c_mid) if se else None
        self.ghost2 = GhostModule(c_mid, c_out, relu=False)
        if c_in == c_out and stride == 1:
            self.shortcut = nn.Sequential()
        else:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_in, k, stride, (k - 1) // 2, groups=c_in, bias=False),
                nn.BatchNorm2d(c_in),
                nn.Conv2d(c_in, c_out, 1, bias=False),
                nn.BatchNorm2d(c_out),
            )

    def forward(self, x: Tensor) -> Tensor:
        residual = x
        x = self.ghost1(x)
        if self.stride > 1:
            x = self.bn_dw(self.conv_dw(x))
        if self.se is not None:
            x = self.se(x)
        x = self.ghost2(x)
        x += self.shortcut(residual)
        return x


class GhostNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv_stem = ConvBNAct(3, 16, stride=2)
        self.blocks = nn.Sequential(
            GhostBottleneck(16, 16, 16),
            GhostBottleneck(16, 45, 24, 3, 2, se=True),  # 45: Concat of 23 + 23, sliced to 45
            ConvBNAct(24, 48, 1),
        )
        self.global_pool = nn.AdaptiveAvgPool2d((1, 1))
        self.conv_head = nn.Conv2d(48, 64, 1)
        self.act2 = nn.ReLU(inplace=True)
        self.classifier = nn.Linear(64, NUM_CLASSES)

    def forward(self, x: Tensor) -> Tensor:
        x = self.global_pool(self.blocks(self.conv_stem(x)))
        x = self.act2(self.conv_head(x))
        x = x.view(x.size(0), -1)
        x = F.dropout(x, p=0.2, training=self.training)
        return self.classifier(x)


# --------------------------------------------------------------------------- repvgg


def _conv_bn(c_in: int, c_out: int, k: int, stride: int, padding: int) -> nn.Sequential:
    seq = nn.Sequential()
    seq.add_module("conv", nn.Conv2d(c_in, c_out, k, stride, padding, bias=False))
    seq.add_module("bn", nn.BatchNorm2d(c_out))
    return seq


class RepVGGBlock(nn.Module):
    """DingXiaoH/RepVGG training-time block: 3x3 conv-BN + 1x1 conv-BN + identity BN, summed."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.nonlinearity = nn.ReLU()
        self.rbr_identity = nn.BatchNorm2d(c_in) if c_out == c_in and stride == 1 else None
        self.rbr_dense = _conv_bn(c_in, c_out, 3, stride, 1)
        self.rbr_1x1 = _conv_bn(c_in, c_out, 1, stride, 0)

    def forward(self, inputs: Tensor) -> Tensor:
        id_out = 0 if self.rbr_identity is None else self.rbr_identity(inputs)
        return self.nonlinearity(self.rbr_dense(inputs) + self.rbr_1x1(inputs) + id_out)


class RepVGG(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stage0 = RepVGGBlock(3, 16, 2)
        self.stage1 = nn.Sequential(RepVGGBlock(16, 16, 2), RepVGGBlock(16, 16))
        self.stage2 = nn.Sequential(RepVGGBlock(16, 32, 2), RepVGGBlock(32, 32))
        self.gap = nn.AdaptiveAvgPool2d(output_size=1)
        self.linear = nn.Linear(32, NUM_CLASSES)

    def forward(self, x: Tensor) -> Tensor:
        out = self.gap(self.stage2(self.stage1(self.stage0(x))))
        return self.linear(out.view(out.size(0), -1))


# --------------------------------------------------------------------------- regnet


class ResBottleneckBlock(nn.Module):
    """torchvision RegNet X block: 1x1 -> grouped 3x3 (group width 8) -> 1x1, + shortcut."""

    def __init__(self, w_in: int, w_out: int, stride: int, group_width: int = 8) -> None:
        super().__init__()
        self.proj = None
        if w_in != w_out or stride != 1:
            self.proj = ConvBNAct(w_in, w_out, 1, stride, act=None)
        self.f = nn.Sequential(
            ConvBNAct(w_in, w_out, 1),
            ConvBNAct(w_out, w_out, 3, stride, groups=w_out // group_width),
            ConvBNAct(w_out, w_out, 1, act=None),
        )
        self.activation = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        x = self.proj(x) + self.f(x) if self.proj is not None else x + self.f(x)
        return self.activation(x)


def regnet() -> nn.Module:
    return nn.Sequential(
        ConvBNAct(3, 16, stride=2),
        ResBottleneckBlock(16, 16, 2),
        ResBottleneckBlock(16, 32, 2),
        ResBottleneckBlock(32, 32, 1),
        GlobalPoolHead(32),
    )


# --------------------------------------------------------------------------- mnasnet


class MnasInvertedResidual(nn.Module):
    """torchvision MNASNet _InvertedResidual (3x3 or 5x5 depthwise)."""

    def __init__(self, c_in: int, c_out: int, k: int, stride: int, expansion: int) -> None:
        super().__init__()
        mid = c_in * expansion
        self.apply_residual = c_in == c_out and stride == 1
        self.layers = nn.Sequential(
            nn.Conv2d(c_in, mid, 1, bias=False),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, mid, k, stride, k // 2, groups=mid, bias=False),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, c_out, 1, bias=False),
            nn.BatchNorm2d(c_out),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x) + x if self.apply_residual else self.layers(x)


def _mnas_stack(c_in: int, c_out: int, k: int, stride: int, expansion: int, repeats: int) -> nn.Sequential:
    return nn.Sequential(
        MnasInvertedResidual(c_in, c_out, k, stride, expansion),
        *(MnasInvertedResidual(c_out, c_out, k, 1, expansion) for _ in range(repeats - 1)),
    )


class MNASNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            ConvBNAct(3, 16, stride=2),
            ConvBNAct(16, 16, groups=16),
            nn.Conv2d(16, 8, 1, bias=False),
            nn.BatchNorm2d(8),
            _mnas_stack(8, 16, 3, 2, 3, 2),
            _mnas_stack(16, 24, 5, 2, 3, 2),
            ConvBNAct(24, 64, 1),
        )
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(64, NUM_CLASSES))

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.layers(x).mean([2, 3]))


# --------------------------------------------------------------------------- mixnet


def _split_channels(c: int, n: int) -> list[int]:
    """timm's split: equal parts, remainder to the first."""
    split = [c // n] * n
    split[0] += c - sum(split)
    return split


class MixedConv2d(nn.ModuleDict):
    """timm MixedConv2d: torch.split on channels, one conv per kernel size, Concat."""

    def __init__(
        self, c_in: int, c_out: int, kernel_sizes: Sequence[int], stride: int = 1, depthwise: bool = False
    ) -> None:
        in_splits = _split_channels(c_in, len(kernel_sizes))
        out_splits = _split_channels(c_out, len(kernel_sizes))
        super().__init__(
            {
                str(i): nn.Conv2d(ci, co, k, stride, k // 2, groups=ci if depthwise else 1, bias=False)
                for i, (k, ci, co) in enumerate(zip(kernel_sizes, in_splits, out_splits))
            }
        )
        self.splits = in_splits

    def forward(self, x: Tensor) -> Tensor:
        x_split = torch.split(x, self.splits, 1)
        return torch.cat([conv(x_split[i]) for i, conv in enumerate(self.values())], 1)


def _mix_conv(
    c_in: int, c_out: int, kernel_sizes: Sequence[int], stride: int = 1, depthwise: bool = False
) -> nn.Module:
    if len(kernel_sizes) == 1:
        k = kernel_sizes[0]
        return nn.Conv2d(c_in, c_out, k, stride, k // 2, groups=c_in if depthwise else 1, bias=False)
    return MixedConv2d(c_in, c_out, kernel_sizes, stride, depthwise)


class MixBlock(nn.Module):
    """timm MixNet InvertedResidual: (grouped) 1x1 expand -> MixConv depthwise -> [SE] -> 1x1."""

    def __init__(
        self,
        c_in: int,
        c_mid: int,
        c_out: int,
        dw_kernels: Sequence[int],
        stride: int,
        act: Callable[[], nn.Module],
        pw_groups: int = 1,
        se: bool = False,
    ) -> None:
        super().__init__()
        self.has_residual = stride == 1 and c_in == c_out
        self.conv_pw = _mix_conv(c_in, c_mid, [1] * pw_groups)
        self.bn1 = nn.BatchNorm2d(c_mid)
        self.act1 = act()
        self.conv_dw = _mix_conv(c_mid, c_mid, dw_kernels, stride, depthwise=True)
        self.bn2 = nn.BatchNorm2d(c_mid)
        self.act2 = act()
        self.se = ConvSE(c_mid, max(1, c_in // 4), act=act) if se else nn.Identity()
        self.conv_pwl = _mix_conv(c_mid, c_out, [1] * pw_groups)
        self.bn3 = nn.BatchNorm2d(c_out)

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x
        x = self.act1(self.bn1(self.conv_pw(x)))
        x = self.act2(self.bn2(self.conv_dw(x)))
        x = self.bn3(self.conv_pwl(self.se(x)))
        return x + shortcut if self.has_residual else x


def mixnet() -> nn.Module:
    return nn.Sequential(
        ConvBNAct(3, 16, stride=2),
        MixBlock(16, 48, 24, [3, 5], 2, nn.ReLU, pw_groups=2),
        MixBlock(24, 40, 32, [3, 5, 7], 2, nn.SiLU, se=True),  # depthwise split 14 + 13 + 13
        MixBlock(32, 64, 32, [3, 5], 1, nn.SiLU, pw_groups=2, se=True),
        ConvBNAct(32, 64, 1),
        GlobalPoolHead(64),
    )


# --------------------------------------------------------------------------- extras


class FlattenFC(nn.Module):
    """VGG/LeNet-style head: a 4x4 map flattened with view(N, -1) into Linear-ReLU-Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            ConvBNAct(3, 16),
            nn.MaxPool2d(2),
            ConvBNAct(16, 16, stride=2),
            ConvBNAct(16, 16, stride=2),
        )
        self.classifier = nn.Sequential(
            nn.Linear(16 * 4 * 4, 32), nn.ReLU(inplace=True), nn.Dropout(0.5), nn.Linear(32, NUM_CLASSES)
        )

    def forward(self, x: Tensor) -> Tensor:
        x = self.features(x)
        return self.classifier(x.view(x.size(0), -1))


class MaxPoolPadResize(nn.Module):
    """MaxPool, F.pad (symmetric, TF-'same' asymmetric, reflect), nearest Upsample, PReLU ..."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = ConvBNAct(3, 16, act=lambda: nn.LeakyReLU(0.1))
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(16, 16, 3, bias=False)
        self.bn2 = nn.BatchNorm2d(16)
        self.prelu = nn.PReLU(16)
        self.conv3 = ConvBNAct(16, 16, stride=2)
        self.conv3[0].padding = (0, 0)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.conv4 = nn.Conv2d(16, 24, 3)
        self.dropout = nn.Dropout(0.3)
        self.fc = nn.Linear(24, NUM_CLASSES)

    def forward(self, x: Tensor) -> Tensor:
        x = self.pool(self.conv1(x))  # 16x16
        x = self.prelu(self.bn2(self.conv2(F.pad(x, (1, 1, 1, 1)))))  # 16x16
        x = self.conv3(F.pad(x, (0, 1, 0, 1)))  # 8x8
        x = self.up(x)  # 16x16
        x = torch.sigmoid(self.conv4(F.pad(x, (1, 1, 1, 1), mode="reflect")))
        x = self.dropout(F.adaptive_avg_pool2d(x, 1).flatten(1))
        return self.fc(x)


# --------------------------------------------------------------------------- registry


def _randomize_batchnorm(model: nn.Module) -> None:
    """Give every BN a non-trivial affine and running statistics, keeping activations O(1).

    Random running stats alone compound over ten-odd layers into vanishing or exploding logits,
    which would make the rtol/atol comparison meaningless. So: random affine, then statistics
    measured on a random batch (train mode, cumulative average), then jittered so they are not
    exactly the batch statistics either.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    with torch.no_grad():
        for bn in bns:
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.normal_(0.0, 0.2)
            bn.reset_running_stats()
            bn.momentum = None
        model.train()
        model(torch.randn(16, *INPUT_SHAPE))
        for bn in bns:
            bn.running_mean += 0.1 * bn.running_var.sqrt() * torch.randn_like(bn.running_mean)
            bn.running_var *= torch.empty_like(bn.running_var).uniform_(0.7, 1.4)
            bn.momentum = 0.1
    model.eval()


def _build(factory: Callable[[], nn.Module]) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        torch.manual_seed(0)
        model = factory()
        _randomize_batchnorm(model)
        return model

    build.__doc__ = factory.__doc__
    return build


FAMILIES: dict[str, Callable[[], nn.Module]] = {
    "resnet": _build(ResNet),
    "resnext": _build(resnext),
    "mobilenetv2": _build(MobileNetV2),
    "mobilenetv3": _build(MobileNetV3),
    "shufflenetv2": _build(ShuffleNetV2),
    "squeezenet": _build(SqueezeNet),
    "densenet": _build(DenseNet),
    "efficientnet": _build(efficientnet),
    "ghostnet": _build(GhostNet),
    "repvgg": _build(RepVGG),
    "regnet": _build(regnet),
    "mnasnet": _build(MNASNet),
    "mixnet": _build(mixnet),
    "se_resnet": _build(lambda: ResNet(se=True)),
    "flatten_fc": _build(FlattenFC),
    "maxpool_pad_resize": _build(MaxPoolPadResize),
}
