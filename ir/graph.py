"""Small read helpers over an ONNX graph: who produces and who consumes a value, attributes, shapes.

Passes and the importer rewrite `onnx.ModelProto`s directly (graph-surgeon drops metadata and doc
strings we must keep); these helpers keep that code short.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper


@dataclass(frozen=True)
class GraphIndex:
    """Lookup tables for one graph, built once per pass; the graph must not change meanwhile."""

    producer: dict[str, onnx.NodeProto]
    consumers: dict[str, list[onnx.NodeProto]]
    initializers: dict[str, onnx.TensorProto]
    shapes: dict[str, tuple[int | str, ...]]
    outputs: frozenset[str]

    @staticmethod
    def of(graph: onnx.GraphProto) -> "GraphIndex":
        producer: dict[str, onnx.NodeProto] = {}
        consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
        for node in graph.node:
            for name in node.output:
                if name:
                    producer[name] = node
            for name in node.input:
                if name:
                    consumers[name].append(node)
        shapes = {
            info.name: value_shape(info)
            for info in (*graph.input, *graph.value_info, *graph.output)
            if info.type.HasField("tensor_type")
        }
        return GraphIndex(
            producer=producer,
            consumers=dict(consumers),
            initializers={init.name: init for init in graph.initializer},
            shapes=shapes,
            outputs=frozenset(o.name for o in graph.output),
        )

    def is_constant(self, name: str) -> bool:
        return name in self.initializers

    def array(self, name: str) -> np.ndarray:
        return numpy_helper.to_array(self.initializers[name])

    def sole_consumer(self, name: str) -> onnx.NodeProto | None:
        """The only node reading `name`, or None if zero, several, or a graph output reads it."""
        users = self.consumers.get(name, [])
        if len(users) != 1 or name in self.outputs:
            return None
        return users[0]


def value_shape(info: onnx.ValueInfoProto) -> tuple[int | str, ...]:
    """Dims as ints, dim_params as strings, unknown dims as '?'."""
    dims = info.type.tensor_type.shape.dim
    return tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in dims)


def attr(node: onnx.NodeProto, name: str, default=None):
    """An attribute's Python value, or `default` when absent."""
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def clip_bounds(node: onnx.NodeProto, index: GraphIndex) -> tuple[float | None, float | None]:
    """A Clip's (min, max): from its constant inputs (opset >= 11) or attributes (older), ±inf where
    absent, None where the bound is a computed value."""

    def bound(position: int, name: str, absent: float) -> float | None:
        if len(node.input) > position and node.input[position]:
            value = node.input[position]
            return float(index.array(value)) if index.is_constant(value) and index.array(value).size == 1 else None
        return float(attr(node, name, absent))

    return bound(1, "min", float("-inf")), bound(2, "max", float("inf"))


def set_attr(node: onnx.NodeProto, name: str, value) -> None:
    """Replace or add one attribute."""
    for i, a in enumerate(node.attribute):
        if a.name == name:
            del node.attribute[i]
            break
    node.attribute.append(helper.make_attribute(name, value))


def opset_version(model: onnx.ModelProto) -> int:
    """The default-domain opset the model declares."""
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return entry.version
    return 0


def describe_node(index: int, node: onnx.NodeProto) -> str:
    """`node #41 'attn/MatMul' (MatMul)`: how every message points at a node."""
    return f"node #{index} '{node.name}' ({node.op_type})"


def drop_unused_initializers(graph: onnx.GraphProto) -> int:
    """Remove initializers no node reads (a rewrite left them behind); return how many."""
    used = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    kept = [init for init in graph.initializer if init.name in used]
    dropped = len(graph.initializer) - len(kept)
    del graph.initializer[:]
    graph.initializer.extend(kept)
    return dropped


def put_initializer(graph: onnx.GraphProto, values: dict[str, onnx.TensorProto], tensor: onnx.TensorProto) -> None:
    """Replace the initializer named like `tensor` in place, or append it; `values` (name -> the
    graph's own TensorProto) is kept current so later calls see the new one."""
    if tensor.name in values:
        values[tensor.name].CopyFrom(tensor)
    else:
        graph.initializer.append(tensor)
        values[tensor.name] = graph.initializer[-1]
