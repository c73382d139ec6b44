"""Requantize a sub-layer's output where that changes nothing: Conv -> QuantizeLinear -> DequantizeLinear.

DIANA's CUs write 8-bit outputs (the requantized accumulator), and onnxruntime forms QLinearConv
only when a Conv's input *and* output pass through Q/DQ. The trained network quantizes layer
inputs and both inputs of every residual Add, not outputs, so a Q/DQ pair is added only where it is
exact: every path from the output passes only ops that commute with a monotone elementwise
quantizer q (Concat, Relu, MaxPool) and ends at activation quantizers (Clip -> QuantizeLinear) that
all use one scale and one code type. Then q = that quantizer's Q/DQ with its scale and zero point 0:
its codes survive the Clip and the second QuantizeLinear unchanged, so the later codes are those of
the graph without the pair.

Cases handled: an output read by the next layers' quantizers (through Relu, MaxPool, Concat, and a
Clip whose bounds are codes of that quantizer, e.g. MobileNetV2's ReLU6); an output that meets a
residual Add, whose inputs are quantized: a block's last conv and a shortcut conv (the Add input's
own quantizer), and a conv before the identity path (the Add reads the quantizer of the layer that
reads the same value, so both consumers are one chain). With the Add inputs quantized as DIANA
trains them, every Conv sub-layer of a ResNet qualifies.

Cases declined (the output stays float): a path into an Add whose input is not quantized (a model
trained without the Add quantizers, the floor chain), a pool that averages, a graph output or a
layer read unquantized; consumers whose quantizers differ (two layers with their own clips reading
one conv's output, or an Add input quantized on another grid than its sibling consumer); an input
that is not quantized (no activation Q/DQ, e.g. the floor chain or an untrained mapping).
"""

from __future__ import annotations

import copy

import numpy as np
import onnx
from onnx import helper, numpy_helper

from odimo.ir import names
from odimo.ir.graph import GraphIndex, clip_bounds
from odimo.passes.base import PassResult

# Ops q commutes with: q(max(a, b)) = max(q(a), q(b)) for a non-decreasing q with q(0) = 0;
# a Concat only places values. A Clip does too when its bounds are on q's grid (ReLU6: 0 and 6 are
# codes of every step 2^-k with k >= -1): q(clip(x, a, b)) = clip(q(x), a, b).
TRANSPARENT = frozenset({"Concat", "Relu", "MaxPool"})
LAYER_OPS = frozenset({"Conv", "Gemm"})


def requant_outputs(model: onnx.ModelProto) -> PassResult:
    """A Q/DQ pair after every Conv/Gemm whose input is quantized and whose output may be (see above)."""
    work = copy.deepcopy(model)
    index = GraphIndex.of(work.graph)
    nodes: list[onnx.NodeProto] = []
    added = 0
    for node in work.graph.node:
        nodes.append(node)
        quantizer = _downstream_quantizer(node, index) if _reads_quantized(node, index) else None
        if quantizer is None:
            continue
        output = node.output[0]
        for consumer in index.consumers[output]:
            consumer.input[list(consumer.input).index(output)] = names.dequantize_output(output)
        nodes += _pair(node.name, output, quantizer, work.graph)
        added += 1
    del work.graph.node[:]
    work.graph.node.extend(nodes)
    return PassResult(work, changed=added > 0, report={"outputs_requantized": added})


def _reads_quantized(node: onnx.NodeProto, index: GraphIndex) -> bool:
    """A Conv/Gemm whose input and weight are both DequantizeLinear outputs."""
    if node.op_type not in LAYER_OPS or len(node.input) < 2:
        return False
    producers = [index.producer.get(name) for name in node.input[:2]]
    return all(p is not None and p.op_type == "DequantizeLinear" for p in producers)


def _downstream_quantizer(node: onnx.NodeProto, index: GraphIndex) -> tuple[np.ndarray, np.ndarray] | None:
    """(scale, zero point) of a Q/DQ pair exact for every activation quantizer the output reaches
    (all on one step), or None. The codes are the layer input's type where they fit in it, because
    onnxruntime fuses a QLinearConv only when its input and output types agree (an int8 pair is
    exact before a uint8 7-bit quantizer: that quantizer's Clip drops what int8 adds)."""
    found: dict[float, tuple[np.ndarray, float, float]] = {}  # step -> (scale, lowest code, highest code)
    types: set[np.dtype] = set()
    bounds: list[float] = []  # of the Clips on the way, to be on the grid found at the end
    pending, seen = [node.output[0]], set()
    while pending:
        value = pending.pop()
        if value in seen:
            continue
        seen.add(value)
        users = index.consumers.get(value, [])
        if value in index.outputs or not users:
            return None
        for user in users:
            clip = _own_clip_bounds(user, index)
            if user.op_type in TRANSPARENT or clip is not None:
                bounds += clip or []
                pending.extend(user.output)
                continue
            quantizer = _act_quantizer(user, index)
            if quantizer is None:
                return None
            scale, zero_point, low, high = quantizer
            step = float(scale)
            _, lowest, highest = found.get(step, (scale, low, high))
            found[step] = (scale, min(lowest, low), max(highest, high))
            types.add(zero_point.dtype)
    if len(found) != 1:
        return None
    step, (scale, low, high) = next(iter(found.items()))
    if not all(float(b / step).is_integer() for b in bounds):
        return None
    input_type = _code_type(index.producer[node.input[0]], index)
    fitting = [t for t in (input_type, *sorted(types, key=str)) if t is not None and _holds(t, low, high)]
    return (scale, np.zeros((), fitting[0])) if fitting else None


def _code_type(dequantize: onnx.NodeProto, index: GraphIndex) -> np.dtype | None:
    """The integer type a DequantizeLinear reads (its zero point's), None if it has none."""
    return index.array(dequantize.input[2]).dtype if len(dequantize.input) > 2 and dequantize.input[2] else None


def _holds(code_type: np.dtype, low: float, high: float) -> bool:
    limits = np.iinfo(code_type)
    return limits.min <= low and high <= limits.max


def _own_clip_bounds(node: onnx.NodeProto, index: GraphIndex) -> list[float] | None:
    """A model's own Clip (ReLU6 and the like, not an activation quantizer's) with constant bounds:
    its finite bounds; else None."""
    if node.op_type != "Clip" or names.is_act_quant(node.name):
        return None
    bounds = clip_bounds(node, index)
    return None if None in bounds else [b for b in bounds if np.isfinite(b)]


def _act_quantizer(node: onnx.NodeProto, index: GraphIndex) -> tuple[np.ndarray, np.ndarray, float, float] | None:
    """(scale, zero point, lowest code, highest code) of an activation quantizer's Clip ->
    QuantizeLinear, else None."""
    if node.op_type != "Clip" or not names.is_act_quant(node.name):
        return None
    quant = index.sole_consumer(node.output[0])
    if quant is None or quant.op_type != "QuantizeLinear" or len(quant.input) < 3:
        return None
    scale, zero_point = index.array(quant.input[1]), index.array(quant.input[2])
    bounds = clip_bounds(node, index)
    if scale.size != 1 or np.any(zero_point != 0) or not all(b is not None and np.isfinite(b) for b in bounds):
        return None
    low, high = (float(b / scale) for b in bounds)
    return scale, zero_point, low, high


def _pair(
    node: str, output: str, quantizer: tuple[np.ndarray, np.ndarray], graph: onnx.GraphProto
) -> list[onnx.NodeProto]:
    prefix = names.requant(node)
    scale, zero_point = quantizer
    graph.initializer.extend(
        [
            numpy_helper.from_array(scale, names.part(prefix, "scale")),
            numpy_helper.from_array(zero_point, names.part(prefix, "zero_point")),
        ]
    )
    inputs = [names.part(prefix, "scale"), names.part(prefix, "zero_point")]
    return [
        helper.make_node(
            "QuantizeLinear", [output, *inputs], [names.quantize_output(output)], name=names.part(prefix, "quant")
        ),
        helper.make_node(
            "DequantizeLinear",
            [names.quantize_output(output), *inputs],
            [names.dequantize_output(output)],
            name=names.part(prefix, "dequant"),
        ),
    ]
