"""Registry of the reference networks by name, for the export script, training and tests."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from torch import nn

from odimo.models.mobilenet import darkside_seed, mobilenet_v1
from odimo.models.resnet import resnet8, resnet20

Builder = Callable[[int, int], nn.Module]

MODELS: dict[str, Builder] = {
    "resnet8": resnet8,
    "resnet20": resnet20,
    "mobilenetv1_025": partial(mobilenet_v1, width=0.25),
    "mobilenetv1_100": partial(mobilenet_v1, width=1.0),
    "darkside_seed": partial(darkside_seed, width=1.0),
}


def build(name: str, num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """A freshly initialised reference network (training mode, as torch builds it)."""
    try:
        builder = MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model '{name}'; known: {', '.join(MODELS)}") from None
    return builder(num_classes, in_channels)
