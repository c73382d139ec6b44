"""Batch augmentation shared by every training loop: random crop of a zero-padded batch, h-flip.

Drawn from an explicit generator, so a resumed epoch replays exactly the same images.
"""

from __future__ import annotations

import torch
from torch import nn


def augment(x: torch.Tensor, pad: int, generator: torch.Generator) -> torch.Tensor:
    """Random crop of the zero-padded batch (shift by -pad..pad pixels), random horizontal flip."""
    n, _, h, w = x.shape
    padded = nn.functional.pad(x, (pad, pad, pad, pad))
    oy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    ox = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    rows = (oy[:, None] + torch.arange(h))[:, :, None]  # (n, h, 1)
    cols = (ox[:, None] + torch.arange(w))[:, None, :]  # (n, 1, w)
    batch = torch.arange(n)[:, None, None]
    # Advanced indices around the channel slice put (n, h, w) first: (n, h, w, c).
    crops = padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)
    flip = torch.rand(n, generator=generator) < 0.5
    return torch.where(flip[:, None, None, None], crops.flip(3), crops)
