"""QDQ emission: integer weights and one DequantizeLinear(axis=0) per sub-layer (onnx-io.md §3).

The float model already holds exactly representable values (q · step per output row), so this pass
only re-expresses them: `W/<cu>` becomes the output of `L/<cu>/dequant`, which reads the codes
`W/<cu>_quantized`, the per-row `W/<cu>_scale` and a zero `W/<cu>_zero_point`, and writes
`W/<cu>_DequantizeLinear_Output`: onnxruntime's names, so its `qdq_loss_debug` pairs each code
tensor with the float model's `W/<cu>`. Codes are int8; the nodes in `int2_nodes` (ternary
weights, at opset >= 25, where DequantizeLinear takes INT2) store them as INT2, a quarter of the
bytes. Biases and activations are other passes' work (qdq_bias, act_quant).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

import ml_dtypes
import numpy as np
import onnx

from odimo.ir import names
from odimo.ir.errors import NotQuantizedError
from odimo.ir.graph import GraphIndex, drop_unused_initializers
from odimo.passes.base import PassResult, dequantized_input

# The float weights are q·step rounded to float32; anything further from an integer code is a bug.
CODE_TOLERANCE = 1e-3


# The first opset whose DequantizeLinear accepts INT2 codes.
INT2_OPSET = 25


def qdq_weights(
    model: onnx.ModelProto, steps: Mapping[str, np.ndarray], int2_nodes: frozenset[str] = frozenset()
) -> PassResult:
    """`steps[node]` is the per-output-row quantization step of that node's weight; the weights of
    `int2_nodes` must be ternary and the model at opset >= INT2_OPSET."""
    work = copy.deepcopy(model)
    index = GraphIndex.of(work.graph)
    nodes: list[onnx.NodeProto] = []
    for node in work.graph.node:
        step = steps.get(node.name)
        if step is not None:
            code_type = ml_dtypes.int2 if node.name in int2_nodes else np.int8
            nodes.append(_dequantize(node, index, np.asarray(step, dtype=np.float32), work.graph, code_type))
        nodes.append(node)
    del work.graph.node[:]
    work.graph.node.extend(nodes)
    drop_unused_initializers(work.graph)
    report = {"weights_quantized": len(steps), "weights_int2": len(int2_nodes & steps.keys())}
    return PassResult(work, changed=bool(steps), report=report)


def _dequantize(
    node: onnx.NodeProto, index: GraphIndex, step: np.ndarray, graph: onnx.GraphProto, code_type: type
) -> onnx.NodeProto:
    weight_name = node.input[1]
    weight = index.array(weight_name)
    shape = (-1,) + (1,) * (weight.ndim - 1)
    exact = weight / step.reshape(shape)
    codes = np.round(exact)
    limit = 1 if code_type is ml_dtypes.int2 else 127  # INT2 holds -2..1; ternary codes are -1..1
    if np.max(np.abs(exact - codes), initial=0.0) > CODE_TOLERANCE or np.max(np.abs(codes), initial=0.0) > limit:
        raise NotQuantizedError(
            f"weights of '{node.name}' are not integer multiples of their step",
            fix="fake-quantize the weights before the QDQ pass",
        )
    stored = codes.astype(np.int8).astype(code_type)
    return dequantized_input(node, 1, index, graph, stored, step, names.dequant(node.name))
