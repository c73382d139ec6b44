"""Write new weight and bias values into existing layers: same nodes, names and opset.

Used to write trained (and fake-quantized) weights back into the user's graph instead of
re-exporting it, so everything the user's exporter wrote stays as it was.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

import numpy as np
import onnx
from onnx import numpy_helper

from odimo.ir import names
from odimo.ir.errors import UnknownInitializerError, UnknownLayerError, WeightShapeMismatchError
from odimo.ir.graph import GraphIndex, put_initializer
from odimo.passes.base import PassResult


def set_weights(
    model: onnx.ModelProto,
    weights: Mapping[str, np.ndarray],
    biases: Mapping[str, np.ndarray] = {},
    constants: Mapping[str, np.ndarray] = {},
) -> PassResult:
    """`weights[node]` replaces input 1 of that node, `biases[node]` input 2 (added if absent);
    `constants[initializer]` replaces other trained initializers (BN affine, PRelu) by name."""
    work = copy.deepcopy(model)
    index = GraphIndex.of(work.graph)
    nodes = {n.name: n for n in work.graph.node}
    values = {init.name: init for init in work.graph.initializer}
    for name, table, slot in [(n, weights, 1) for n in weights] + [(n, biases, 2) for n in biases]:
        node = nodes.get(name)
        if node is None:
            raise UnknownLayerError(
                f"no node named '{name}' to write weights into",
                fix="pass names of Conv/Gemm nodes of this model",
            )
        array = np.ascontiguousarray(table[name], dtype=np.float32)
        current = node.input[slot] if slot < len(node.input) and node.input[slot] else None
        if current is not None and tuple(numpy_helper.to_array(values[current]).shape) != array.shape:
            raise WeightShapeMismatchError(
                f"new {'weight' if slot == 1 else 'bias'} of '{name}' has shape {array.shape}, "
                f"the graph's {tuple(numpy_helper.to_array(values[current]).shape)}",
                fix="write back weights of the same layer",
            )
        target = (
            current
            if current is not None and len(index.consumers.get(current, [])) == 1
            else names.new_parameter(node.name, "weight" if slot == 1 else "bias")
        )
        tensor = numpy_helper.from_array(array, target)
        put_initializer(work.graph, values, tensor)
        while len(node.input) <= slot:
            node.input.append("")
        node.input[slot] = target
    for name, array in constants.items():
        if name not in values or tuple(numpy_helper.to_array(values[name]).shape) != np.shape(array):
            raise UnknownInitializerError(
                f"no initializer '{name}' of shape {np.shape(array)} to overwrite",
                fix="write back constants of the same graph",
            )
        values[name].CopyFrom(numpy_helper.from_array(np.asarray(array, dtype=np.float32), name))
    return PassResult(
        work,
        changed=bool(weights or biases or constants),
        report={"weights_set": len(weights), "biases_set": len(biases), "constants_set": len(constants)},
    )
