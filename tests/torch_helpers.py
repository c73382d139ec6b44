"""Helpers for tests that build torch modules (reference networks) before exporting them."""

from __future__ import annotations

import torch
from torch import nn


def randomize_batchnorm(module: nn.Module, seed: int) -> nn.Module:
    """Non-trivial BN affine and statistics, so export or folding errors in BN show in the outputs."""
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.weight.data = 0.5 + torch.rand(c, generator=g)
            m.bias.data = 0.2 * torch.rand(c, generator=g) - 0.1
            m.running_mean = 0.2 * torch.rand(c, generator=g) - 0.1
            m.running_var = 0.5 + torch.rand(c, generator=g)
    return module
