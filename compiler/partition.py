"""The transform stage's graph work: order, reorder and split one assignment into sub-layers.

For QDQ emission the weights are fake-quantized first (trained numbers when the search produced
them, the formats' initial scales otherwise), so the float partition and its integer form compute
the same function and can be compared. A QDQ opset above the model's converts the float partition
first (`onnx.version_converter`; it drops node metadata_props, which is why annotation comes after
this stage); at opset >= 25 the ternary weights are stored as INT2.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import onnx
from onnx import helper, version_converter

from odimo.ir import names
from odimo.ir.assignment import Assignment
from odimo.ir.graph import opset_version
from odimo.ir.records import QuantizedLayers, Substitute
from odimo.passes.mix_substitutes import mix_substitutes
from odimo.passes.order_channels import order_channels
from odimo.passes.qdq_weights import INT2_OPSET, qdq_weights
from odimo.passes.reorder_channels import reorder_channels
from odimo.passes.set_weights import set_weights
from odimo.passes.split_layers import split_layers
from odimo.targets.plan import TargetPlan
from odimo.targets.quantization import WeightFormat
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
    qdq_opset: int | None = None,
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
    opset = qdq_opset or opset_version(model)
    integer = at_opset(floats.partitioned, opset)
    int2 = ternary_sublayers(plan, assignment) if opset >= INT2_OPSET else frozenset()
    return replace(floats, qdq=qdq_weights(integer, quantized.sublayer_steps(assignment), int2).model)


def at_opset(model: onnx.ModelProto, opset: int) -> onnx.ModelProto:
    """`model` converted to default-domain `opset`, its IR raised to that opset's minimum."""
    if opset == opset_version(model):
        return model
    converted = version_converter.convert_version(model, opset)
    minimum = helper.find_min_ir_version_for([helper.make_opsetid("", opset)])
    converted.ir_version = max(model.ir_version, minimum)
    return converted


def ternary_sublayers(plan: TargetPlan, assignment: Assignment) -> frozenset[str]:
    """The sub-layers whose CU stores ternary weights (INT2 candidates)."""
    formats = plan.target.weight_formats
    return frozenset(
        names.sublayer(layer, cu)
        for layer, cus in assignment.layers.items()
        for cu in set(cus)
        if formats.get(cu) is WeightFormat.TERNARY
    )


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
