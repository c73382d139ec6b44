"""Search modules: one per mappable layer, mixing what each CU would compute (method.md §1-2).

DIANA (paper Eq. 5): one convolution on effective weights Ŵ[c] = θ_dig[c]·Q8(W)[c] + θ_ana[c]·Qt(W)[c],
θ a per-channel softmax over {digital, analog} (free groups) or the cumulative 0/1 prefix mask of
paper Eq. 6 (contiguous groups, method.md §7.3). Darkside (paper Eq. 2): the conv and a 3x3
depthwise substitute both run; the prefix mask picks conv channels first, DWE channels after.

Every module reports `expected_counts()` (real-valued during search) for the differentiable cost,
and `assignment()` (argmax / mask) for discretization. `fix_assignment` freezes a one-hot choice for
the final phase and for fine-tuning a baseline mapping.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from odimo.retrain.bridge import LayerModule
from odimo.retrain.pact_layer import pact_layer
from odimo.retrain.quantizers import Int8Pow2Weights, PactActivation, TernaryWeights, quantize_bias

HALF_INIT_SMALL = 0.1  # entries beyond the half start at 0.1/C: |α| then has a gradient (method.md §1.2)


def straight_through(hard: torch.Tensor, soft: torch.Tensor) -> torch.Tensor:
    return soft + (hard - soft).detach()


class PrefixMask(nn.Module):
    """θ_i = Σ_{j≥i} |α_j|, b_i = 1[θ_i > 0.5] with an identity backward: b is a prefix of ones."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        half = channels // 2
        small = HALF_INIT_SMALL / channels
        alpha = torch.full((channels,), small)
        alpha[:half] = 1.0
        self.alpha = nn.Parameter(alpha)

    def forward(self) -> torch.Tensor:
        theta = torch.flip(torch.cumsum(torch.flip(self.alpha.abs(), [0]), 0), [0])
        # θ is non-increasing in exact arithmetic; a parallel cumsum may round θ_i an ulp below θ_i+1
        # right at the threshold. cumprod keeps the mask a prefix whatever the rounding.
        hard = torch.cumprod((theta > 0.5).to(theta.dtype), 0)
        return straight_through(hard, theta)


class DianaSearchLayer(nn.Module):
    """A DIANA conv/FC layer whose channels choose between 8-bit digital and ternary analog."""

    cus = ("digital", "analog")

    def __init__(
        self, layer: LayerModule, contiguous: bool, input_clip: float, signed_input: bool, searchable: bool = True
    ) -> None:
        super().__init__()
        self.layer = layer
        self.contiguous = contiguous
        self.searchable = searchable
        channels = layer.weight.shape[0]
        self.act = PactActivation(input_clip, signed_input)
        self.q8 = Int8Pow2Weights(layer.weight)
        self.qt = TernaryWeights(layer.weight) if searchable else None
        self.register_buffer("temperature", torch.tensor(1.0))
        self.register_buffer("fixed", torch.empty(0))  # one-hot (C,) digital mask once discretized
        if searchable and contiguous:
            self.mask = PrefixMask(channels)
        elif searchable:
            self.alpha = nn.Parameter(torch.full((2, channels), 0.01))

    # --- mixing weights θ ------------------------------------------------------------------
    def digital_share(self) -> torch.Tensor:
        """θ_dig per channel (1 = digital); fixed after discretization."""
        if not self.searchable:
            return torch.ones(self.layer.weight.shape[0], device=self.layer.weight.device)
        if self.fixed.numel():
            return self.fixed
        if self.contiguous:
            return self.mask()
        return torch.softmax(self.alpha / self.temperature, dim=0)[0]

    def expected_counts(self) -> dict[str, torch.Tensor]:
        share = self.digital_share()
        return {"digital": share.sum(), "analog": (1 - share).sum()}

    def assignment(self) -> tuple[str, ...]:
        """argmax per channel, ties to digital (method.md §5)."""
        with torch.no_grad():
            share = self.digital_share()
        return tuple("digital" if s >= 0.5 else "analog" for s in share.tolist())

    def fix_assignment(self, cus: tuple[str, ...]) -> None:
        device = self.layer.weight.device
        self.fixed = torch.tensor([1.0 if cu == "digital" else 0.0 for cu in cus], device=device)

    def search_parameters(self) -> list[nn.Parameter]:
        if not self.searchable:
            return []
        return [self.mask.alpha] if self.contiguous else [self.alpha]

    def quantizer_parameters(self) -> list[nn.Parameter]:
        params = [self.act.clip, self.q8.scale]
        return params + ([self.qt.log_scale] if self.qt is not None else [])

    # --- forward ---------------------------------------------------------------------------
    def effective_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Ŵ and b̂ of paper Eq. 5: quantized per CU, blended per channel."""
        weight, bias = self.layer.weight, self.layer.bias
        shape = (-1,) + (1,) * (weight.dim() - 1)
        clip = self.act.effective_clip()
        w8 = self.q8(weight)
        b8 = quantize_bias(bias, self.q8.step() * clip / 127)
        if self.qt is None:
            return w8, b8
        share = self.digital_share()
        wt = self.qt(weight)
        bt = quantize_bias(bias, self.qt.scales().detach() * clip / 127)
        return share.reshape(shape) * w8 + (1 - share).reshape(shape) * wt, share * b8 + (1 - share) * bt

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight, bias = self.effective_weights()
        if not self.act.enabled:
            return self.layer.apply(x, weight, bias)
        return pact_layer(x, self.act.bounds(), weight, bias, self.layer)


class DarksideSearchLayer(nn.Module):
    """A 3x3 C->C conv whose channel suffix is replaced by a 3x3 depthwise conv on the DWE."""

    cus = ("cluster", "dwe")

    def __init__(self, layer: LayerModule) -> None:
        super().__init__()
        self.layer = layer
        channels, _, kh, kw = layer.weight.shape
        dw = torch.empty(channels, 1, kh, kw)
        nn.init.kaiming_normal_(dw)
        self.dw_weight = nn.Parameter(dw)
        self.dw_bias = nn.Parameter(layer.bias.detach().clone())
        self.mask = PrefixMask(channels)
        self.register_buffer("fixed", torch.empty(0))
        self.warmup_prefix: int | None = None  # set per batch in warm-up: route a random prefix

    def conv_share(self) -> torch.Tensor:
        if self.fixed.numel():
            return self.fixed
        if self.warmup_prefix is not None:
            share = torch.zeros(self.layer.weight.shape[0], device=self.layer.weight.device)
            share[: self.warmup_prefix] = 1.0
            return share
        return self.mask()

    def expected_counts(self) -> dict[str, torch.Tensor]:
        share = self.conv_share()
        return {"cluster": share.sum(), "dwe": (1 - share).sum()}

    def assignment(self) -> tuple[str, ...]:
        with torch.no_grad():
            share = self.conv_share()
        return tuple("cluster" if s >= 0.5 else "dwe" for s in share.tolist())

    def fix_assignment(self, cus: tuple[str, ...]) -> None:
        self.fixed = torch.tensor([1.0 if cu == "cluster" else 0.0 for cu in cus], device=self.layer.weight.device)

    def search_parameters(self) -> list[nn.Parameter]:
        return [self.mask.alpha]

    def quantizer_parameters(self) -> list[nn.Parameter]:
        return []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        share = self.conv_share().reshape(1, -1, 1, 1)
        conv = self.layer(x)
        dw = _depthwise(self.layer, x, self.dw_weight, self.dw_bias)
        return share * conv + (1 - share) * dw


def _depthwise(layer: LayerModule, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    if not layer.symmetric:
        x = F.pad(x, layer.pre_pad)
    return F.conv2d(x, weight, bias, layer.stride, layer.padding, layer.dilation, weight.shape[0])
