"""Activation quantizers as standard ops before a layer, in the form of their rounding.

The trained network quantizes every costed layer's input to 7 bits (PACT, method.md §6); writing the
same quantizer into the ONNX makes onnxruntime compute what the training measured:
- half to even (the default): `Clip(x, lo, clip) -> QuantizeLinear(1/s) -> DequantizeLinear`, uint8
  codes (int8 for a signed input) with zero point 0. QuantizeLinear rounds half to even, and s is a
  power of two, so the pair is the trained quantizer bit for bit, and runtimes see a quantized
  tensor (onnxruntime forms QLinearConv where the layer's output is quantized too). The Clip keeps
  the 7-bit range (uint8 would saturate at 255). Tensor names follow onnxruntime's: the value the
  layer reads keeps the name `X/L/act`, and the Clip writes `X/L/act_QuantizeLinear_Input`.
- floor: `floor(clamp(x, lo, clip) · s + guard) / s` as Clip->Mul->Add->Floor->Div; no standard
  Q/DQ is exact for a floor (ties differ), so this chain stays five float ops.
The nodes sit right before the layer's (sub-)layers and are tagged `odimo.role = act-quant`, so
verification can compare the graphs without them: a last-bit difference upstream may flip a code
(onnx-io.md §4).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from functools import partial

import numpy as np
import onnx
from onnx import helper, numpy_helper

from odimo.ir import names
from odimo.ir.records import ActQuant, Rounding
from odimo.passes.base import PassResult
from odimo.targets.quantization import FLOOR_GUARD


def insert_act_quant(model: onnx.ModelProto, quantizers: Mapping[str, ActQuant]) -> PassResult:
    """`quantizers[layer]` quantizes the input of node `layer` and of its sub-layers `layer/...`."""
    work = copy.deepcopy(model)
    nodes: list[onnx.NodeProto] = []
    inserted = 0
    for node in work.graph.node:
        layer = _owning_layer(node.name, quantizers)
        quant = quantizers.get(layer) if layer else None
        if quant is not None and quant.input in node.input:
            quantized = names.act_quant_output(quant.input, layer)
            if not any(n.output[0] == quantized for n in nodes):
                nodes += _chain(layer, quant, quantized, work.graph)
                inserted += 1
            node.input[list(node.input).index(quant.input)] = quantized
        nodes.append(node)
    del work.graph.node[:]
    work.graph.node.extend(nodes)
    return PassResult(work, changed=inserted > 0, report={"act_quant_chains": inserted})


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
