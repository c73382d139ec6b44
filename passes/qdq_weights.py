"""QDQ emission: integer weights and one DequantizeLinear(axis=0) per sub-layer (onnx-io.md §3).

The float model already holds exactly representable values (q · step per output row), so this pass
only re-expresses them: `W/<cu>` becomes the output of `L/<cu>/dequant`, which reads the int8 codes
`W/<cu>/q`, the per-row `W/<cu>/scale` and a zero `W/<cu>/zero_point`. Ternary codes are stored as
int8 holding {-1, 0, 1}: INT2 needs opset 25, beyond the opsets odimo keeps. Biases and
activations stay float.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

import numpy as np
import onnx
from onnx import helper, numpy_helper

from odimo.ir import names
from odimo.ir.errors import NotQuantizedError
from odimo.ir.graph import GraphIndex, drop_unused_initializers
from odimo.passes.base import PassResult, own_name

# The float weights are q·step rounded to float32; anything further from an integer code is a bug.
CODE_TOLERANCE = 1e-3


def qdq_weights(model: onnx.ModelProto, steps: Mapping[str, np.ndarray]) -> PassResult:
    """`steps[node]` is the per-output-row quantization step of that node's weight."""
    work = copy.deepcopy(model)
    index = GraphIndex.of(work.graph)
    nodes: list[onnx.NodeProto] = []
    for node in work.graph.node:
        step = steps.get(node.name)
        if step is not None:
            nodes.append(_dequantize(node, index, np.asarray(step, dtype=np.float32), work.graph))
        nodes.append(node)
    del work.graph.node[:]
    work.graph.node.extend(nodes)
    drop_unused_initializers(work.graph)
    return PassResult(work, changed=bool(steps), report={"weights_quantized": len(steps)})


def _dequantize(node: onnx.NodeProto, index: GraphIndex, step: np.ndarray, graph: onnx.GraphProto) -> onnx.NodeProto:
    weight_name = node.input[1]
    weight = index.array(weight_name)
    shape = (-1,) + (1,) * (weight.ndim - 1)
    exact = weight / step.reshape(shape)
    codes = np.round(exact)
    if np.max(np.abs(exact - codes), initial=0.0) > CODE_TOLERANCE or np.max(np.abs(codes), initial=0.0) > 127:
        raise NotQuantizedError(
            f"weights of '{node.name}' are not integer multiples of their step",
            fix="fake-quantize the weights before the QDQ pass",
        )
    prefix = own_name(index, weight_name, node.name)
    graph.initializer.extend(
        [
            numpy_helper.from_array(codes.astype(np.int8), names.part(prefix, "q")),
            numpy_helper.from_array(step, names.part(prefix, "scale")),
            numpy_helper.from_array(np.zeros(len(step), dtype=np.int8), names.part(prefix, "zero_point")),
        ]
    )
    dequantized = names.part(prefix, "dequantized")
    node.input[1] = dequantized
    return helper.make_node(
        "DequantizeLinear",
        [names.part(prefix, "q"), names.part(prefix, "scale"), names.part(prefix, "zero_point")],
        [dequantized],
        name=names.dequant(node.name),
        axis=0,
    )
