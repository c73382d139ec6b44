"""Trainable fake quantizers of method.md §6, in torch: one per weight format, and PACT activations.

The formulas and their order of operations match targets/quantization.py, so the QDQ emission of
the trained weights reproduces these numbers exactly. Straight-through estimators (STE) carry the
gradient through every rounding.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from odimo.ir.records import ActQuant, Rounding
from odimo.retrain.kernels import fused_pact_backward, fused_pact_forward
from odimo.targets.quantization import INT8_LEVELS, TERNARY_INIT, WeightFormat

ACT_LEVELS = 127  # 7-bit unsigned activations
SIGNED_ACT_LEVELS = 63  # 7-bit signed variant: 63 levels per side


def ste_round(x: torch.Tensor) -> torch.Tensor:
    return x + (torch.round(x) - x).detach()


def ste_pow2_floor(x: torch.Tensor) -> torch.Tensor:
    """2^⌊log2 x⌋ forward, identity backward: a power-of-two scale that still learns."""
    return x + (torch.exp2(torch.floor(torch.log2(x))) - x).detach()


class _Pact(torch.autograd.Function):
    """x_q = R(clamp(x, low, clip)·s) / s with PACT gradients: masked input, Σ g beyond each bound.

    R rounds half to even (QuantizeLinear) or is the guarded floor ⌊· + guard⌋, per `rounding`.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, low: torch.Tensor, clip: torch.Tensor, scale: torch.Tensor, rounding: Rounding):
        ctx.save_for_backward(x, low, clip)
        return fused_pact_forward(x, low, clip, scale, rounding)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, low, clip = ctx.saved_tensors
        grad_x, grad_low, grad_clip = fused_pact_backward(grad, x, low, clip)
        return grad_x, grad_low.reshape(low.shape), grad_clip.reshape(clip.shape), None, None


class PactActivation(nn.Module):
    """7-bit PACT with a power-of-two step: s = 2^⌊log2(levels/clip)⌋, effective clip = levels/s.

    `rounding` is how the code is picked (ir/records.py `Rounding`); half to even by default, so
    the emitted QuantizeLinear/DequantizeLinear pair is the trained quantizer, bit for bit.
    """

    def __init__(self, init_clip: float = 6.0, signed: bool = False, rounding: Rounding = Rounding.HALF_EVEN) -> None:
        super().__init__()
        self.clip = nn.Parameter(torch.tensor(float(init_clip)))
        self.signed = signed
        self.rounding = rounding
        self.enabled = True

    @property
    def levels(self) -> int:
        return SIGNED_ACT_LEVELS if self.signed else ACT_LEVELS

    def scale(self) -> torch.Tensor:
        """The power-of-two step inverse s (a plain tensor, no gradient)."""
        clip = self.clip.detach().clamp(min=1e-4)
        return torch.exp2(torch.floor(torch.log2(self.levels / clip)))

    def effective_clip(self) -> float:
        return float(self.levels / self.scale())

    def bounds(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(low, clip, s): the effective range, snapped to the pow2 grid forward, learning backward."""
        scale = self.scale()
        clip = self.clip + (self.levels / scale - self.clip).detach()
        return (-clip if self.signed else torch.zeros_like(clip)), clip, scale

    def record(self, input_name: str) -> ActQuant:
        """What the emission writes for this quantizer on value `input_name`."""
        clip = self.effective_clip()
        return ActQuant(input_name, -clip if self.signed else 0.0, clip, float(self.scale()), self.rounding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return x
        return _Pact.apply(x, *self.bounds(), self.rounding)


def set_act_rounding(module: nn.Module, rounding: Rounding) -> None:
    """Every PACT quantizer inside `module` rounds with `rounding` (before training starts)."""
    for child in module.modules():
        if isinstance(child, PactActivation):
            child.rounding = rounding


class Int8Pow2Weights(nn.Module):
    """Q8(w) = S·round(127·clamp(w/S, −1, 1))/127 with a per-layer power-of-two S (WeightFormat.INT8_POW2)."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        peak = float(weight.detach().abs().max())
        self.scale = nn.Parameter(torch.tensor(2.0 ** math.floor(math.log2(2 * peak)) if peak > 0 else 1.0))
        self.register_buffer("offset", torch.zeros(weight.shape[0]))  # calibrated bias shift (calibrate.py)

    def pow2_scale(self) -> torch.Tensor:
        return ste_pow2_floor(self.scale.clamp(min=1e-8))

    def step(self, weight: torch.Tensor | None = None) -> torch.Tensor:
        """The quantization step S/127, one for the whole layer (no gradient); `weight` unused."""
        return (self.pow2_scale() / INT8_LEVELS).detach()

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        s = self.pow2_scale()
        return s * ste_round(INT8_LEVELS * torch.clamp(w / s, -1, 1)) / INT8_LEVELS

    def set_scales(self, scales: torch.Tensor) -> None:
        """The per-layer format has no per-channel scale to calibrate."""


class TernaryWeights(nn.Module):
    """Qt(w) = g_c·S_c·round(clamp(w/S_c, −1, 1)), S_c = exp(σ_c) per output channel (WeightFormat.TERNARY).

    S_c sets the threshold S_c/2 and the level; the calibrated gain g_c (1 until calibrate.py sets
    it) rescales only the level, so the ternary pattern stays. The analog CU requantizes per
    channel, so g_c·S_c is the deployed step.
    """

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        spread = weight.detach().reshape(weight.shape[0], -1).std(dim=1, unbiased=False)
        init = torch.where(spread > 0, TERNARY_INIT * spread, torch.ones_like(spread))
        self.log_scale = nn.Parameter(torch.log(init))
        self.register_buffer("gain", torch.ones(weight.shape[0]))
        self.register_buffer("offset", torch.zeros(weight.shape[0]))  # calibrated bias shift (calibrate.py)

    def scales(self) -> torch.Tensor:
        return torch.exp(self.log_scale)

    def set_scales(self, scales: torch.Tensor) -> None:
        with torch.no_grad():
            self.log_scale.copy_(torch.log(scales))

    def step(self, weight: torch.Tensor | None = None) -> torch.Tensor:
        """The per-channel step g_c·S_c (no gradient); `weight` unused."""
        return (self.gain * self.scales()).detach()

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        shape = (-1,) + (1,) * (w.dim() - 1)
        s = self.scales().reshape(shape)
        return self.gain.reshape(shape) * s * ste_round(torch.clamp(w / s, -1, 1))


class Int8ChannelWeights(nn.Module):
    """Q(w) = s_c·round(w/s_c) with s_c = max|w_c|/127 of the weights it quantizes (no trained scale)."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("offset", torch.zeros(weight.shape[0]))  # calibrated bias shift (calibrate.py)

    def set_scales(self, scales: torch.Tensor) -> None:
        """The scale follows the weights; nothing to calibrate."""

    def step(self, weight: torch.Tensor | None = None) -> torch.Tensor:
        """The per-channel step of `weight` (no gradient)."""
        assert weight is not None, "an int8 per-channel step depends on the weight"
        peak = weight.detach().reshape(weight.shape[0], -1).abs().amax(dim=1)
        return torch.where(peak > 0, peak / INT8_LEVELS, torch.ones_like(peak))

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        shape = (-1,) + (1,) * (w.dim() - 1)
        s = self.step(w).reshape(shape)
        return s * ste_round(w / s)


# The trainable quantizer of each weight format (targets/quantization.py computes the same numbers).
WEIGHT_QUANTIZERS = {
    WeightFormat.INT8_POW2: Int8Pow2Weights,
    WeightFormat.TERNARY: TernaryWeights,
    WeightFormat.INT8_CHANNEL: Int8ChannelWeights,
}


def quantize_bias(bias: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
    """16-bit bias on the accumulator grid: step·round(clamp(b/(step·32767), −1, 1)·32767)."""
    levels = 32767
    return step * ste_round(torch.clamp(bias / (step * levels), -1, 1) * levels)
