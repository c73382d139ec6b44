"""The model as one target sees it: each layer's role (searchable/fixed/host) and its group policy.

Policy (onnx-io.md §1.5): a layer in a *free* group may take any per-channel assignment, because the
group's order follows that layer's CU order; a layer in a *contiguous* group (rigid, shared by two
or more searchable producers, or on a target whose splits are prefixes) must give each CU one index
range in CU order, so no consumer needs re-indexing.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import onnx

from odimo.ir.analysis import Analysis, Layer, analyse, find_layers
from odimo.ir.coupling import ChannelGroup
from odimo.targets.base import LayerSupport, Role, Target


class Policy(enum.Enum):
    FREE = "free"
    CONTIGUOUS = "contiguous"


@dataclass(frozen=True)
class LayerPlan:
    layer: Layer
    support: LayerSupport
    group: ChannelGroup
    policy: Policy
    constrained_by: str | None  # why the policy is contiguous: the coupling node or the target

    @property
    def name(self) -> str:
        return self.layer.node


@dataclass(frozen=True)
class TargetPlan:
    """An Analysis plus, per costed layer, how `target` treats it."""

    analysis: Analysis
    target: Target
    layers: tuple[LayerPlan, ...]

    def layer(self, name: str) -> LayerPlan:
        return next(p for p in self.layers if p.name == name)

    @property
    def searchable(self) -> tuple[LayerPlan, ...]:
        return tuple(p for p in self.layers if p.support.role is Role.SEARCHABLE)

    @property
    def contiguous_layers(self) -> dict[str, str]:
        """Searchable layer -> the reason its split must be a per-CU prefix (for E310 messages)."""
        return {p.name: p.constrained_by or "" for p in self.searchable if p.policy is Policy.CONTIGUOUS}


def plan_for_target(model: onnx.ModelProto, target: Target) -> TargetPlan:
    """Classify every costed layer for `target` and derive each group's policy."""
    layers = find_layers(model)
    supports = {layer.node: target.support(layer.geometry) for layer in layers}
    searchable = {name for name, s in supports.items() if s.role is Role.SEARCHABLE}
    # On a prefix-split target (Darkside) the substitute CU reads input channel c for output c.
    analysis = analyse(model, merge_io=searchable if target.contiguous else ())
    plans = []
    for layer in analysis.layers:
        group = analysis.coupling.group_of_value(layer.output)
        reason = _contiguity_reason(group, searchable, target, layer.node)
        policy = Policy.CONTIGUOUS if reason else Policy.FREE
        plans.append(LayerPlan(layer, supports[layer.node], group, policy, reason))
    return TargetPlan(analysis, target, tuple(plans))


def _contiguity_reason(group: ChannelGroup, searchable: set[str], target: Target, layer: str) -> str | None:
    if target.contiguous:
        return f"target '{target.name}' splits every layer as a prefix"
    if group.rigid:
        return f"group {group.id} is rigid: {group.rigid_because}"
    producers = [p for p in group.producers if p in searchable]
    if len(producers) >= 2:
        others = ", ".join(f"'{p}'" for p in producers if p != layer)
        where = f" at {group.merged_by[0]}" if group.merged_by else ""
        return f"its output channels meet those of {others}{where} (group {group.id}: a residual or gating)"
    return None
