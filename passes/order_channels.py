"""Channel grouping: the permutation that makes each CU's output channels contiguous (method.md §7.1).

Pure: it reads the plan and the assignment and returns per-space permutations; `reorder_channels`
applies them. A free group takes the stable CU sort of its one searchable producer; a contiguous
group keeps the identity, which is only sound because its assignment is already a per-CU prefix.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from odimo.ir.errors import NotContiguousError
from odimo.passes.base import LayerCUs
from odimo.targets.base import Role
from odimo.targets.plan import Policy, TargetPlan


@dataclass(frozen=True)
class ChannelOrder:
    """perms[space][p] = original channel stored at position p; spaces absent keep the identity."""

    perms: dict[str, np.ndarray]


def order_channels(plan: TargetPlan, assignment: LayerCUs) -> ChannelOrder:
    cu_order = {cu: k for k, cu in enumerate(plan.target.cus)}
    perms: dict[str, np.ndarray] = {}
    for layer in plan.layers:
        if layer.support.role is not Role.SEARCHABLE:
            continue
        rank = np.array([cu_order[cu] for cu in assignment[layer.name]])
        order = np.argsort(rank, kind="stable")
        if layer.policy is Policy.CONTIGUOUS:
            if not np.array_equal(order, np.arange(len(order))):
                raise NotContiguousError(
                    f"layer '{layer.name}' is in contiguous group {layer.group.id} "
                    "but its channels are not a per-CU prefix",
                    where=layer.constrained_by or layer.group.id,
                    fix="validate the mapping before the passes (validate_mapping)",
                )
            continue
        if not np.array_equal(order, np.arange(len(order))):
            for space in layer.group.spaces:
                perms[space] = order
    return ChannelOrder(perms)
