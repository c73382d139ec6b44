"""Activation quantizers as standard ops before a layer or a residual Add, in the form of their rounding.

The trained network quantizes every costed layer's input to 7 bits (PACT, method.md §6), and on a
quantized target both inputs of every residual Add; writing the same quantizers into the ONNX makes
onnxruntime compute what the training measured:
- half to even (the default): `Clip(x, lo, clip) -> QuantizeLinear(1/s) -> DequantizeLinear`, uint8
  codes (int8 for a signed input) with zero point 0. QuantizeLinear rounds half to even, and s is a
  power of two, so the pair is the trained quantizer bit for bit, and runtimes see a quantized
  tensor (onnxruntime forms QLinearConv where the layer's output is quantized too). The Clip keeps
  the 7-bit range (uint8 would saturate at 255). Tensor names follow onnxruntime's: the value the
  layer reads keeps the name `X/L/act`, and the Clip writes `X/L/act_QuantizeLinear_Input`.
- floor: `floor(clamp(x, lo, clip) · s + guard) / s` as Clip->Mul->Add->Floor->Div; no standard
  Q/DQ is exact for a floor (ties differ), so this chain stays five float ops.
A residual Add's identity path (a value a quantized layer reads too) reads that layer's chain, as it
shares that layer's trained quantizer; its other inputs get their own chain, `A/input<k>/act/...`.
The nodes are tagged `odimo.role = act-quant`, so verification can compare the graphs without them:
a last-bit difference upstream may flip a code (onnx-io.md §4).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from functools import partial

import numpy as np
import onnx
from onnx import helper, numpy_helper

from odimo.ir import names
from odimo.ir.records import ActQuant, AddInputQuant, Rounding
from odimo.passes.base import PassResult
from odimo.targets.quantization import FLOOR_GUARD


def insert_act_quant(
    model: onnx.ModelProto, quantizers: Mapping[str, ActQuant], add_inputs: Sequence[AddInputQuant] = ()
) -> PassResult:
    """`quantizers[layer]` quantizes the input of node `layer` and of its sub-layers `layer/...`;
    each of `add_inputs` one input of a residual Add, through its layer's chain when it shares one.

    Each chain is inserted once, right before the first node that reads it: the value it quantizes
    is computed before that node, so a topologically sorted graph stays sorted whatever the order of
    the Add and the layer whose chain it shares.
    """
    work = copy.deepcopy(model)
    by_add: dict[str, list[AddInputQuant]] = {}
    for entry in add_inputs:
        by_add.setdefault(entry.node, []).append(entry)
    nodes: list[onnx.NodeProto] = []
    made: set[str] = set()
    adds = 0
    for node in work.graph.node:
        add_reads = _add_reads(node, by_add.get(node.name, []), quantizers)
        for k, owner, quant in _layer_reads(node, quantizers) + add_reads:
            quantized = names.act_quant_output(quant.input, owner)
            if quantized not in made:
                nodes += _chain(owner, quant, quantized, work.graph)
                made.add(quantized)
            node.input[k] = quantized
        adds += len(add_reads)
        nodes.append(node)
    del work.graph.node[:]
    work.graph.node.extend(nodes)
    report = {"act_quant_chains": len(made), "add_inputs_quantized": adds}
    return PassResult(work, changed=bool(made), report=report)


def _layer_reads(node: onnx.NodeProto, quantizers: Mapping[str, ActQuant]) -> list[tuple[int, str, ActQuant]]:
    """(input index, chain owner, quantizer) of a layer's (sub-)layer reading its quantized input."""
    layer = _owning_layer(node.name, quantizers)
    quant = quantizers.get(layer) if layer else None
    if quant is None or quant.input not in node.input:
        return []
    return [(list(node.input).index(quant.input), layer, quant)]


def _add_reads(
    node: onnx.NodeProto, entries: list[AddInputQuant], quantizers: Mapping[str, ActQuant]
) -> list[tuple[int, str, ActQuant]]:
    """The quantized inputs of a residual Add: the shared layer's own chain (the same trained numbers),
    or one owned by the input, `A/input<k>`."""
    reads = []
    for entry in entries:
        assert node.input[entry.index] == entry.quant.input, f"{node.name} input {entry.index} was renamed"
        if entry.shares is not None and entry.shares in quantizers:
            reads.append((entry.index, entry.shares, quantizers[entry.shares]))
        else:
            reads.append((entry.index, names.add_input(entry.node, entry.index), entry.quant))
    return reads


def _owning_layer(node_name: str, quantizers: Mapping[str, ActQuant]) -> str | None:
    """`conv2/analog` and `conv2/dwe/slice` belong to layer `conv2`; so does `conv2` itself."""
    if node_name in quantizers:
        return node_name
    return next((layer for layer in quantizers if names.belongs_to(node_name, layer)), None)


def _chain(layer: str, quant: ActQuant, output: str, graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    if quant.rounding is Rounding.HALF_EVEN:
        return _qdq_pair(layer, quant, output, graph)
    return _floor_chain(layer, quant, output, graph)


def code_type(quant: ActQuant) -> type[np.integer]:
    """uint8 codes for an unsigned quantizer, int8 for a signed one; zero point 0 either way."""
    return np.int8 if quant.signed else np.uint8


def _qdq_pair(layer: str, quant: ActQuant, output: str, graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    at = partial(names.part, names.act_quant(layer))
    clipped = names.quantize_input(output)
    graph.initializer.extend(
        [
            numpy_helper.from_array(np.array(quant.low, dtype=np.float32), at("low")),
            numpy_helper.from_array(np.array(quant.clip, dtype=np.float32), at("clip")),
            numpy_helper.from_array(np.array(1 / quant.scale, dtype=np.float32), at("scale")),
            numpy_helper.from_array(np.array(0, dtype=code_type(quant)), at("zero_point")),
        ]
    )
    return [
        helper.make_node("Clip", [quant.input, at("low"), at("clip")], [clipped], name=at("clip")),
        helper.make_node(
            "QuantizeLinear",
            [clipped, at("scale"), at("zero_point")],
            [names.quantize_output(output)],
            name=at("quant"),
        ),
        helper.make_node(
            "DequantizeLinear",
            [names.quantize_output(output), at("scale"), at("zero_point")],
            [output],
            name=at("dequant"),
        ),
    ]


def _floor_chain(layer: str, quant: ActQuant, output: str, graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    at = partial(names.part, names.act_quant(layer))  # at("clip") is L/act/clip
    graph.initializer.extend(
        [
            numpy_helper.from_array(np.array(quant.low, dtype=np.float32), at("low")),
            numpy_helper.from_array(np.array(quant.clip, dtype=np.float32), at("clip")),
            numpy_helper.from_array(np.array(quant.scale, dtype=np.float32), at("scale")),
            numpy_helper.from_array(np.array(FLOOR_GUARD, dtype=np.float32), at("guard")),
        ]
    )
    return [
        helper.make_node(
            "Clip",
            [quant.input, at("low"), at("clip")],
            [at("clipped")],
            name=at("clip"),
        ),
        helper.make_node(
            "Mul",
            [at("clipped"), at("scale")],
            [at("scaled")],
            name=at("mul"),
        ),
        helper.make_node(
            "Add",
            [at("scaled"), at("guard")],
            [at("guarded")],
            name=at("guard"),
        ),
        helper.make_node("Floor", [at("guarded")], [at("floored")], name=at("floor")),
        helper.make_node(
            "Div",
            [at("floored"), at("scale")],
            [output],
            name=at("div"),
        ),
    ]
