"""The transform stage's graph work: order, reorder and split one assignment into sub-layers.

For QDQ emission the weights are fake-quantized first (trained numbers when the search produced
them, the formats' initial scales otherwise), so the float partition and its integer form compute
the same function and can be compared.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import onnx

from odimo.ir.assignment import Assignment
from odimo.ir.records import QuantizedLayers, Substitute
from odimo.passes.mix_substitutes import mix_substitutes
from odimo.passes.order_channels import order_channels
from odimo.passes.qdq_weights import qdq_weights
from odimo.passes.reorder_channels import reorder_channels
from odimo.passes.set_weights import set_weights
from odimo.passes.split_layers import split_layers
from odimo.targets.plan import TargetPlan
from odimo.targets.quantize import quantize_layers


@dataclass(frozen=True)
class Partition:
    """The graphs of one assignment: the reference, the partitioned float model, the QDQ model
    when that is the main output, and which nodes were reindexed or substituted."""

    reference: onnx.ModelProto
    partitioned: onnx.ModelProto
    qdq: onnx.ModelProto | None
    reindexed: frozenset[str]
    substitutes: dict[str, str] = field(default_factory=dict)  # layer -> the CU of its substitute


def partition(
    model: onnx.ModelProto,
    plan: TargetPlan,
    assignment: Assignment,
    emit: str,
    substitutes: dict[str, Substitute],
    quantized: QuantizedLayers | None = None,
) -> Partition:
    """The float partition of `model` (fake-quantized first for QDQ) and, for QDQ, its integer form.

    `quantized` carries trained quantizer results; without it the weights are quantized here with
    the formats' initial scales (an untrained mapping).
    """
    if emit == "float":
        return _split(model, plan, assignment, substitutes)
    quantized = quantized or quantize_layers(model, plan, assignment, substitutes)
    with_weights = set_weights(model, quantized.weights, quantized.biases).model
    floats = _split(with_weights, plan, assignment, quantized.substitutes or substitutes)
    return replace(floats, qdq=qdq_weights(floats.partitioned, quantized.sublayer_steps(assignment)).model)


def _split(
    model: onnx.ModelProto, plan: TargetPlan, assignment: Assignment, substitutes: dict[str, Substitute]
) -> Partition:
    """Order, reorder and split: the partitioned float graph and the reference it must equal."""
    reference = mix_substitutes(model, assignment.layers, substitutes).model if substitutes else model
    order = order_channels(plan, assignment.layers)
    reordered = reorder_channels(model, plan.analysis.coupling, order)
    partitioned = split_layers(reordered.model, plan, assignment.layers, substitutes).model
    reindexed = frozenset(plan.analysis.coupling.nodes_reading(order.perms))
    return Partition(reference, partitioned, None, reindexed, {name: sub.cu for name, sub in substitutes.items()})
