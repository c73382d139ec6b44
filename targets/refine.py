"""Refine a discrete mapping on the exact objective: what the search's relaxation cannot see.

The search minimises task loss + λ·cost/corner with a relaxed cost: expected channel counts, whose
gradient is one staircase step per channel (targets.md §6, R2). The discrete cost is a staircase:
on DIANA the first digital channel of a layer costs the digital CU's whole 16-channel tile (on the
bundled ResNet-20, 1 of 16 channels on the digital CU takes the layer from 5,811 to 11,392 cycles,
and all 16 to 13,312), so the argmax often keeps a straggler or two on the accurate CU that cost
almost a full tile. Measured: the README command's mapping kept one such channel in each of 7
layers, 19,487 of its 105,041 cycles.

This pass evaluates the objective itself on a few candidate counts per layer, where a count's cost
changes character: none or all channels on the accurate CU, the most it holds for free, the argmax,
and the last count before each jump of the staircase (a full tile). One pass of coordinate descent
in graph order keeps, per layer, the count with the lowest loss + λ·cost/corner with every other
layer as it is; which channels a count keeps is the search's preference order (targets/settle.py),
so a contiguous layer stays a prefix. The loss is measured on the same held-out images for every
candidate (a paired comparison), so what decides is the change, not the noise of the sample.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from odimo.targets.settle import LayerChoice

# A jump in a layer's cost staircase: an increment this many times the layer's mean per-channel one.
JUMP_FACTOR = 2.0


@dataclass(frozen=True)
class Refinement:
    """What the pass changed: counts on the accurate CU before and after, and the objective."""

    counts: dict[str, int]
    moved: dict[str, tuple[int, int]]  # layer: (count before, count after), changed layers only
    loss_before: float
    loss_after: float
    cost_before: float
    cost_after: float


def candidate_counts(choice: LayerChoice) -> list[int]:
    """The counts worth evaluating for one layer (see the module docstring), ascending."""
    costs = choice.costs
    c = len(costs) - 1
    steps = np.diff(costs)
    mean = (costs[-1] - costs[0]) / c if c else 0.0
    jumps = [k for k in range(c) if mean > 0 and steps[k] > JUMP_FACTOR * mean]  # last count before a jump
    free = int(np.flatnonzero(costs <= costs[0])[-1])
    return sorted({0, c, free, choice.first, *jumps})


def refine(
    choices: Sequence[LayerChoice],
    loss: Callable[[dict[str, int]], float],
    lam: float,
    corner: float,
) -> Refinement:
    """Per layer, in order, the candidate count minimising loss(counts) + lam·Σ cost / corner.

    `loss` measures the task loss of the mapping the counts give (each layer's `assignment`)."""
    counts = {c.name: c.first for c in choices}

    def total_cost(current: dict[str, int]) -> float:
        return float(sum(c.costs[current[c.name]] for c in choices))

    def objective(task: float, current: dict[str, int]) -> float:
        return task + lam * total_cost(current) / corner

    loss_before = loss(counts)
    best_task = loss_before
    cost_before = total_cost(counts)
    for choice in choices:
        base, base_task = counts, best_task
        best = objective(base_task, base)
        for n in candidate_counts(choice):
            if n == base[choice.name]:
                continue
            trial = base | {choice.name: n}
            task = loss(trial)
            if objective(task, trial) < best:
                best, best_task, counts = objective(task, trial), task, trial
    moved = {c.name: (c.first, counts[c.name]) for c in choices if counts[c.name] != c.first}
    return Refinement(counts, moved, loss_before, best_task, cost_before, total_cost(counts))
