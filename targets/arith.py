"""The non-smooth steps of the cost models, once exact and once differentiable.

A target writes each latency formula once, against `Arith`. `EXACT` evaluates it on Python numbers
(reports, baselines, mapping files); `TORCH` on tensors during the search, with the
straight-through estimators of targets.md §6. Both share the forward definitions, so the two forms
agree by construction wherever the counts are integers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol, Union

import torch

Number = Union[float, torch.Tensor]


def ceil_div(value: int, n: int) -> int:
    """⌈value / n⌉ for a geometry integer (map size, kernel volume): never a search variable."""
    return -(-value // n)


class Arith(Protocol):
    """The three steps a channel count goes through in the targets.md formulas."""

    def ceil(self, x: Number, n: int) -> Number:
        """ceilN(x) = ⌊(x + n − 1) / n⌋: ⌈x/n⌉ on integers, ⌈⌊x⌋/n⌉ on expected counts (R1)."""
        ...

    def gate(self, x: Number) -> Number:
        """1 if at least one channel is on the CU, else 0: an empty CU pays no fixed cost."""
        ...

    def first_fit(self, x: Number, options: Sequence[tuple[float, float]], default: float) -> Number:
        """The value of the first `(limit, value)` option with x <= limit, else `default`.

        A piecewise-constant choice, such as the analog unroll factor of DIANA.
        """
        ...


class ExactArith:
    """Plain Python arithmetic: the numbers reports and baselines are made of."""

    def ceil(self, x: float, n: int) -> float:
        return math.floor((x + n - 1) / n)

    def gate(self, x: float) -> float:
        return 1 if x >= 1 else 0

    def first_fit(self, x: float, options: Sequence[tuple[float, float]], default: float) -> float:
        return next((value for limit, value in options if x <= limit), default)


class TorchArith:
    """Tensor arithmetic with straight-through gradients (targets.md §6).

    Every step returns `hard.detach() + (soft - soft.detach())`: the forward value is exactly the
    hard step, the gradient that of `soft`.
    """

    def ceil(self, x: torch.Tensor, n: int) -> torch.Tensor:
        # R2: gradient 1, not 1/n. The published λ ranges were tuned with this slope.
        return _straight_through(torch.floor((x + n - 1) / n), x)

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        # R3, corrected: d gate / dx = 1 on 0 < x < 1 and 0 elsewhere, chained like any derivative.
        ramp = ((x > 0) & (x < 1)).to(x.dtype)
        return _straight_through((x >= 1).to(x.dtype), x * ramp)

    def first_fit(self, x: torch.Tensor, options: Sequence[tuple[float, float]], default: float) -> torch.Tensor:
        # R4, corrected: a piecewise-constant choice has zero gradient.
        x = x.detach()
        out = torch.full_like(x, default)
        for limit, value in reversed(options):
            out = out.masked_fill(x <= limit, value)
        return out


def _straight_through(hard: torch.Tensor, soft: torch.Tensor) -> torch.Tensor:
    return hard.detach() + (soft - soft.detach())


EXACT = ExactArith()
TORCH = TorchArith()
