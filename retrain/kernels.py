"""The PACT activation quantizer's elementwise work, fused into one pass each way by torch.compile.

Two forward roundings (ir/records.py `Rounding`): round half to even, as ONNX QuantizeLinear does
(`torch.round` and Inductor's `nearbyint` both round half to even), and the guarded floor of a
chip that requantizes by a plain right shift.

Why: eager PACT is five passes over every activation forward (clamp, scale, guard, floor, unscale)
and six backward (two compares, or, not, two products); on a CPU those passes are a third of a
DIANA search step. Inductor turns each direction into one loop, about 7x faster on ResNet-20's
activations (bench/search_overhead.py). The result is bit-identical to the eager code: x·s is
exact for a power-of-two s, so a fused multiply-add rounds like the separate steps.

The kernels see every tensor as its flat, dense storage: one compiled loop then serves every
shape and memory format (no recompiling per layer, and no recompile limit in long processes).
Compilation needs a C++ compiler (CPU) or Triton (CUDA). Where it fails, the first call warns once
and every later call runs the same functions eagerly; `ODIMO_COMPILE=0` skips compiling altogether.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable

import torch

from odimo.ir.records import Rounding
from odimo.targets.quantization import FLOOR_GUARD

COMPILE_ENV = "ODIMO_COMPILE"


def pact_forward(x: torch.Tensor, low: torch.Tensor, clip: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """⌊clamp(x, low, clip)·s + guard⌋ / s, the order of operations of the emitted floor chain."""
    return torch.floor(torch.clamp(x, low, clip) * scale + FLOOR_GUARD) / scale


def pact_round_forward(x: torch.Tensor, low: torch.Tensor, clip: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """round_half_even(clamp(x, low, clip)·s) / s: Clip -> QuantizeLinear(1/s) -> DequantizeLinear.

    s is a power of two, so x·s equals QuantizeLinear's x / (1/s) and the division is exact: the
    Q/DQ pair computes these numbers bit for bit.
    """
    return torch.round(torch.clamp(x, low, clip) * scale) / scale


def pact_backward(
    grad: torch.Tensor, x: torch.Tensor, low: torch.Tensor, clip: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """PACT's gradients: g inside (low, clip) to x; Σ g at or below low and at or above clip to them."""
    above = x >= clip
    below = x <= low
    grad_x = torch.where(above | below, torch.zeros_like(grad), grad)
    return grad_x, torch.where(below, grad, 0.0).sum(), torch.where(above, grad, 0.0).sum()


class _FusedKernel:
    """`function` compiled on first use, or `function` itself when compiling is off or fails."""

    def __init__(self, function: Callable[..., object]) -> None:
        self.function = function
        self.compiled: Callable[..., object] | None = None
        self.failed = False

    def __call__(self, *args: torch.Tensor):
        if self.failed or not compile_enabled():
            return self.function(*args)
        with torch.no_grad():  # a kernel never records autograd; one grad mode, one compiled graph
            return self._compiled(*(a.detach() for a in args))

    def _compiled(self, *args: torch.Tensor):
        if self.compiled is None:
            self.compiled = torch.compile(self.function, dynamic=True, fullgraph=True)
        try:
            return self.compiled(*args)
        except Exception as error:  # any backend failure: no compiler, no Triton, an old GPU
            self.failed = True
            warnings.warn(
                f"odimo: torch.compile of {self.function.__name__} failed ({type(error).__name__}: {error}); "
                "running it eagerly (slower, same numbers). "
                f"Set {COMPILE_ENV}=0 to skip compiling.",
                RuntimeWarning,
                stacklevel=2,
            )
            return self.function(*args)


def compile_enabled() -> bool:
    return os.environ.get(COMPILE_ENV, "1") != "0"


_flat_pact_forward = _FusedKernel(pact_forward)
_flat_pact_round_forward = _FusedKernel(pact_round_forward)
_flat_pact_backward = _FusedKernel(pact_backward)
EAGER_FORWARD = {Rounding.HALF_EVEN: pact_round_forward, Rounding.FLOOR: pact_forward}
_FUSED_FORWARD = {Rounding.HALF_EVEN: _flat_pact_round_forward, Rounding.FLOOR: _flat_pact_forward}


def fused_pact_forward(
    x: torch.Tensor,
    low: torch.Tensor,
    clip: torch.Tensor,
    scale: torch.Tensor,
    rounding: Rounding = Rounding.HALF_EVEN,
) -> torch.Tensor:
    """`EAGER_FORWARD[rounding]` in one pass; the result has x's shape and memory format."""
    x = _dense(x)
    return _shaped_like(_FUSED_FORWARD[rounding](_flat(x), low, clip, scale), x)


def fused_pact_backward(
    grad: torch.Tensor, x: torch.Tensor, low: torch.Tensor, clip: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`pact_backward` in one pass; ∂/∂x has x's shape and memory format."""
    x = _dense(x)
    if grad.stride() != x.stride():
        grad = torch.empty_like(x).copy_(grad)  # the same element order as x, element for element
    grad_x, grad_low, grad_clip = _flat_pact_backward(_flat(grad), _flat(x), low, clip)
    return _shaped_like(grad_x, x), grad_low, grad_clip


def _dense(t: torch.Tensor) -> torch.Tensor:
    """t itself if its storage is dense in some memory format (any torch.*_format), else a copy."""
    dense = t.is_contiguous() or (t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last))
    return t if dense else t.contiguous()


def _flat(t: torch.Tensor) -> torch.Tensor:
    """t's elements as a 1-D tensor on the same storage. Not a view: torch.compile guards on a
    view's base, its strides and autograd state, and would recompile for every layer."""
    flat = torch.empty(0, dtype=t.dtype, device=t.device)
    return flat.set_(t.untyped_storage(), t.storage_offset(), (t.numel(),), (1,))


def _shaped_like(flat: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return flat.as_strided(like.shape, like.stride())
