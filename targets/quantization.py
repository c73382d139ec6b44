"""Weight formats of each CU (method.md §6), in numpy: the numbers the QDQ emission stores.

The trainable torch quantizers (retrain/quantizers.py) compute the same formulas; emission then
only converts the already-quantized float weights to integers, so both agree to the last bit.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np

INT8_LEVELS = 127
# Activations: x·s is often an exact integer (power-of-two scales, biases on the same grid), and
# torch and onnxruntime round the conv sums that feed it differently by an ulp, so floor would jump a
# whole step. Both floor x·s + FLOOR_GUARD instead, which moves the step boundary off the integers.
FLOOR_GUARD = 1e-3
TERNARY_INIT = 0.8614  # -2·Φ⁻¹(1/3): three equiprobable levels for Gaussian weights (method.md §6)


class WeightFormat(enum.Enum):
    INT8_POW2 = "int8"  # DIANA digital: per-layer power-of-two scale S, q ∈ [-127, 127], w = q·S/127
    TERNARY = "ternary"  # DIANA analog: per-channel scale S_c, q ∈ {-1, 0, 1}, w = q·S_c
    INT8_CHANNEL = "int8-per-channel"  # Darkside QDQ: per-channel max-abs scale, w = q·s_c


@dataclass(frozen=True)
class QuantizedWeight:
    """Integer codes and the per-output-channel step such that w ≈ q · step[:, None, ...]."""

    codes: np.ndarray
    step: np.ndarray

    def dequantize(self) -> np.ndarray:
        shape = (-1,) + (1,) * (self.codes.ndim - 1)
        return (self.codes.astype(np.float32) * self.step.reshape(shape)).astype(np.float32)


def pow2_scale(weight: np.ndarray) -> float:
    """Initial per-layer scale S = 2^⌊log2(2·max|w|)⌋ (method.md §6): S ∈ (max|w|, 2·max|w|]."""
    peak = float(np.max(np.abs(weight)))
    return 2.0 ** np.floor(np.log2(2 * peak)) if peak > 0 else 1.0


def ternary_scales(weight: np.ndarray) -> np.ndarray:
    """Per-channel S_c = 0.8614·std(w_c), the spec's equiprobable init on the channel's own spread.

    The spec initialises from a fan-out Kaiming sd; an imported trained (and BN-folded) layer has its
    own scale, so the measured per-channel std is used instead (same 0.8614 factor).
    """
    flat = weight.reshape(weight.shape[0], -1)
    scales = TERNARY_INIT * flat.std(axis=1)
    return np.where(scales > 0, scales, 1.0).astype(np.float32)


def quantize(weight: np.ndarray, fmt: WeightFormat, scale: float | np.ndarray | None = None) -> QuantizedWeight:
    """Quantize `weight` (C_out first) in `fmt`; `scale` is S (int8 pow2) or S_c (ternary)."""
    rows = weight.shape[0]
    shape = (-1,) + (1,) * (weight.ndim - 1)
    if fmt is WeightFormat.INT8_POW2:
        s = float(pow2_scale(weight) if scale is None else scale)
        codes = np.round(INT8_LEVELS * np.clip(weight / s, -1, 1))
        step = np.full(rows, s / INT8_LEVELS, dtype=np.float32)
    elif fmt is WeightFormat.TERNARY:
        s_c = ternary_scales(weight) if scale is None else np.asarray(scale, dtype=np.float32)
        codes = np.round(np.clip(weight / s_c.reshape(shape), -1, 1))
        step = s_c.astype(np.float32)
    else:
        peak = np.abs(weight.reshape(rows, -1)).max(axis=1)
        step = np.where(peak > 0, peak / INT8_LEVELS, 1.0).astype(np.float32)
        codes = np.round(weight / step.reshape(shape))
    return QuantizedWeight(codes.astype(np.int8), step)
