"""Integer biases: a layer reading quantized input and weights gets its bias as int32 DequantizeLinear.

A QLinearConv adds an int32 bias on the accumulator's grid, input scale x weight scale per output
channel; onnxruntime fuses DQ -> Conv -> Q into one only when the bias is such a DequantizeLinear
too. Training quantizes the bias on exactly that grid (retrain/mixed_layers.py), so the codes are
integers and the pair computes the float bias it replaces, bit for bit: a bias is converted only if
code · scale in float32 gives back every value exactly. A bias that is not on the grid (an
untrained mapping's float bias) stays float: the layer is then left to run in float.
"""

from __future__ import annotations

import copy

import numpy as np
import onnx

from odimo.ir import names
from odimo.ir.graph import GraphIndex, attr, drop_unused_initializers
from odimo.passes.base import PassResult, dequantized_input

INT32_LIMIT = 2**31 - 1


def qdq_bias(model: onnx.ModelProto) -> PassResult:
    """Every Conv/Gemm with DequantizeLinear input and weight gets an int32 bias DequantizeLinear."""
    work = copy.deepcopy(model)
    index = GraphIndex.of(work.graph)
    nodes: list[onnx.NodeProto] = []
    quantized = kept = 0
    for node in work.graph.node:
        scale = _accumulator_scale(node, index)
        if scale is not None:
            dequant = _dequantize_bias(node, index, scale, work.graph)
            quantized += dequant is not None
            kept += dequant is None
            nodes += [dequant] if dequant is not None else []
        nodes.append(node)
    del work.graph.node[:]
    work.graph.node.extend(nodes)
    drop_unused_initializers(work.graph)
    return PassResult(work, changed=quantized > 0, report={"biases_quantized": quantized, "biases_float": kept})


def _accumulator_scale(node: onnx.NodeProto, index: GraphIndex) -> np.ndarray | None:
    """Input scale x per-row weight scale of a Conv/Gemm with quantized input and weight and a
    constant float bias, else None."""
    if node.op_type not in ("Conv", "Gemm") or len(node.input) < 3 or not index.is_constant(node.input[2]):
        return None
    x_dq, w_dq = (index.producer.get(name) for name in node.input[:2])
    if x_dq is None or w_dq is None or x_dq.op_type != w_dq.op_type or x_dq.op_type != "DequantizeLinear":
        return None
    if not all(index.is_constant(name) for name in (x_dq.input[1], w_dq.input[1])):
        return None
    x_scale, w_scale = index.array(x_dq.input[1]), index.array(w_dq.input[1])
    if x_scale.size != 1 or attr(w_dq, "axis", 1) != 0:
        return None
    rows = index.array(node.input[2]).shape[0]
    return (np.broadcast_to(w_scale, (rows,)) * x_scale.reshape(())).astype(np.float32)


def _dequantize_bias(
    node: onnx.NodeProto, index: GraphIndex, scale: np.ndarray, graph: onnx.GraphProto
) -> onnx.NodeProto | None:
    bias_name = node.input[2]
    bias = index.array(bias_name)
    codes = np.round(bias.astype(np.float64) / scale)
    if np.max(np.abs(codes), initial=0) > INT32_LIMIT or not np.array_equal(codes.astype(np.float32) * scale, bias):
        return None  # DequantizeLinear computes float(code) · scale in float32: it must give the bias back
    return dequantized_input(node, 2, index, graph, codes.astype(np.int32), scale, names.bias_dequant(node.name))
