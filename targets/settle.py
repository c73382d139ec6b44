"""Settle a discrete mapping at a cost budget: what makes `--speedup X` land at X, not near it.

The search's λ controller steers the *expected* cost of soft choices towards the target, but the
argmax of those choices lands wherever the last steps left it, and Eq. 3's max over CUs and the
CUs' tiling make a layer's cost a staircase in its channel count: measured on the bundled
ResNet-20, `--speedup 2` landed at 2.20x. This pass moves whole channels, one layer's count at a
time, until the mapping is within the budget and no channel can return to the accurate CU without
leaving it:
1. over budget: take, among all layers, the move towards the second (cheaper) CU that saves the
   most cost per channel moved (a move spans as many channels as it takes to reach the next step
   of the staircase), until the total fits;
2. under budget: return channels to the first (accurate) CU, cheapest per channel first (free moves
   first, larger moves on ties), while the total still fits.
Which channels of a layer move is the search's call: its preference order (the least convinced
channels first), so a contiguous layer's prefix stays a prefix. Only counts change the cost
(paper Eq. 3 and 4), so the order never needs re-costing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from odimo.ir.geometry import LayerGeometry

BUDGET_SLACK = 1e-9  # relative: a total equal to the budget up to float rounding fits


@dataclass(frozen=True)
class LayerChoice:
    """One searchable layer as the search left it."""

    name: str
    cus: tuple[str, str]  # (accurate, cheaper) CU; `first` counts channels on cus[0]
    preference: np.ndarray  # (C,): how firmly each channel sits on cus[0] (the first `first` are its top ones)
    costs: np.ndarray  # (C + 1,): the layer's cost with n channels on cus[0], n = 0..C
    first: int  # channels on cus[0] in the search's argmax

    def assignment(self, first: int) -> tuple[str, ...]:
        """`first` channels on cus[0]: those the search prefers there most (stable on ties)."""
        order = np.argsort(-self.preference, kind="stable")
        cus = np.full(len(self.preference), 1)
        cus[order[:first]] = 0
        return tuple(self.cus[int(k)] for k in cus)


def layer_costs(
    geometry: LayerGeometry, cus: tuple[str, str], cost: Callable[[LayerGeometry, dict[str, float]], float]
) -> np.ndarray:
    """The layer's cost for every count n = 0..C on cus[0] (the rest on cus[1])."""
    c = geometry.c_out
    return np.array([cost(geometry, {cus[0]: n, cus[1]: c - n}) for n in range(c + 1)], dtype=np.float64)


def settle(choices: Sequence[LayerChoice], budget: float) -> dict[str, int]:
    """Per layer, the channels to keep on the accurate CU so that Σ cost <= `budget` (when any
    mapping reaches it) with as many channels returned to the accurate CU as the budget allows."""
    first = {c.name: c.first for c in choices}
    total = sum(float(c.costs[first[c.name]]) for c in choices)
    limit = budget * (1 + BUDGET_SLACK)
    while total > limit:
        move = _best_saving(choices, first)
        if move is None:
            break  # nothing cheaper is left: the report says how far the target was missed
        name, count, saved = move
        first[name] -= count
        total -= saved
    while True:
        move = _cheapest_return(choices, first, limit - total)
        if move is None:
            return first
        name, count, added = move
        first[name] += count
        total += added


def _best_saving(choices: Sequence[LayerChoice], first: dict[str, int]) -> tuple[str, int, float] | None:
    """(layer, channels to move to cus[1], cost saved) with the largest saving per channel."""
    best: tuple[float, str, int, float] | None = None
    for choice in choices:
        n = first[choice.name]
        if n == 0:
            continue
        moved = np.arange(1, n + 1)
        saved = choice.costs[n] - choice.costs[n - moved]
        rate = np.where(saved > 0, saved / moved, -np.inf)
        k = int(np.argmax(rate))
        if rate[k] > 0 and (best is None or rate[k] > best[0]):
            best = (float(rate[k]), choice.name, int(moved[k]), float(saved[k]))
    return None if best is None else best[1:]


def _cheapest_return(
    choices: Sequence[LayerChoice], first: dict[str, int], room: float
) -> tuple[str, int, float] | None:
    """(layer, channels to return to cus[0], cost added) with the least cost per channel that
    still fits in `room`; on ties the larger move."""
    best: tuple[float, int, str, float] | None = None
    for choice in choices:
        n = first[choice.name]
        c = len(choice.preference)
        if n == c:
            continue
        moved = np.arange(1, c - n + 1)
        added = choice.costs[n + moved] - choice.costs[n]
        rate = np.where(added <= room, np.maximum(added, 0) / moved, np.inf)
        k = int(np.argmin(rate - 1e-12 * moved))  # equal rates: the larger move
        if np.isfinite(rate[k]) and (best is None or (rate[k], -moved[k]) < (best[0], -best[1])):
            best = (float(rate[k]), int(moved[k]), choice.name, float(added[k]))
    return None if best is None else (best[2], best[1], best[3])
