"""Analyse: the networkx view of a canonical model, its costed layers and their channel coupling."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import onnx

from odimo.ir.coupling import Coupling, analyse_coupling
from odimo.ir.geometry import LayerGeometry
from odimo.ir.graph import GraphIndex, attr


@dataclass(frozen=True)
class Layer:
    """A Conv or Gemm node with constant weights: the unit a mapping assigns channels of."""

    node: str
    op_type: str
    geometry: LayerGeometry
    input: str
    output: str
    weight: str
    bias: str | None

    @property
    def name(self) -> str:
        return self.node


@dataclass(frozen=True)
class Analysis:
    """Everything later stages read about the model's structure; computed once, never mutated."""

    model: onnx.ModelProto
    layers: tuple[Layer, ...]
    coupling: Coupling

    def layer(self, name: str) -> Layer:
        for layer in self.layers:
            if layer.node == name:
                return layer
        raise KeyError(name)

    @property
    def geometries(self) -> tuple[LayerGeometry, ...]:
        return tuple(layer.geometry for layer in self.layers)


def find_layers(model: onnx.ModelProto) -> tuple[Layer, ...]:
    """Every Conv/Gemm with constant weights, in graph (topological) order, with its geometry."""
    index = GraphIndex.of(model.graph)
    layers = []
    for node in model.graph.node:
        if node.op_type not in ("Conv", "Gemm") or not index.is_constant(node.input[1]):
            continue
        weight = index.array(node.input[1])
        bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
        if node.op_type == "Gemm":
            geometry = LayerGeometry.linear(node.name, c_in=int(weight.shape[1]), c_out=int(weight.shape[0]))
        else:
            out_shape = index.shapes[node.output[0]]
            geometry = LayerGeometry.conv(
                node.name,
                c_in=int(index.shapes[node.input[0]][1]),
                c_out=int(weight.shape[0]),
                kernel=tuple(int(k) for k in weight.shape[2:4]),
                out_hw=(int(out_shape[2]), int(out_shape[3])),
                stride=tuple(attr(node, "strides", [1, 1])),
                groups=int(attr(node, "group", 1)),
                dilation=tuple(attr(node, "dilations", [1, 1])),
            )
        layers.append(Layer(node.name, node.op_type, geometry, node.input[0], node.output[0], node.input[1], bias))
    return tuple(layers)


def analyse(model: onnx.ModelProto, merge_io: Iterable[str] = ()) -> Analysis:
    """Analyse a canonical model; `merge_io` as in `analyse_coupling` (target-specific)."""
    return Analysis(model=model, layers=find_layers(model), coupling=analyse_coupling(model, merge_io))
