"""Apply channel permutations to every node the coupling names, so the function is unchanged.

Producers get their weight rows and bias permuted; transparent nodes their per-channel constants
(BatchNormalization, depthwise weights, per-channel Mul/Add); sinks their weight columns, expanded
over feature blocks after Flatten and block-diagonal after Concat (coupling.view_positions). An
initializer shared with another node is copied as `W@<node>` first. No Gather is ever inserted.
"""

from __future__ import annotations

import copy
from collections import defaultdict

import numpy as np
import onnx
from onnx import numpy_helper

from odimo.ir.coupling import Coupling, View, touches, view_positions
from odimo.ir.graph import GraphIndex, drop_unused_initializers, put_initializer
from odimo.passes.base import PassResult, own_name
from odimo.passes.order_channels import ChannelOrder

Edits = dict[tuple[str, int], list[tuple[int, np.ndarray]]]


def reorder_channels(model: onnx.ModelProto, coupling: Coupling, order: ChannelOrder) -> PassResult:
    biased = {n.name for n in model.graph.node if len(n.input) > 2 and n.input[2]}
    edits = _collect_edits(coupling, order, biased)
    if not edits:
        return PassResult(model, changed=False, report={"initializers_permuted": 0})
    work = copy.deepcopy(model)
    index = GraphIndex.of(work.graph)
    nodes = {node.name: node for node in work.graph.node}
    values = {init.name: init for init in work.graph.initializer}
    permuted = 0
    for (node_name, input_index), steps in sorted(edits.items()):
        node = nodes[node_name]
        if input_index >= len(node.input) or not node.input[input_index]:
            continue  # an optional input this model does not have (a depthwise conv with no bias)
        permuted += 1
        name = node.input[input_index]
        array = numpy_helper.to_array(values[name])
        for axis, positions in steps:
            array = np.take(array, positions, axis=axis)
        target = own_name(index, name, node_name)
        tensor = numpy_helper.from_array(np.ascontiguousarray(array), target)
        put_initializer(work.graph, values, tensor)
        node.input[input_index] = target
    drop_unused_initializers(work.graph)
    return PassResult(
        work, changed=True, report={"initializers_permuted": permuted, "spaces_permuted": len(order.perms)}
    )


def _collect_edits(coupling: Coupling, order: ChannelOrder, biased: set[str]) -> Edits:
    edits: Edits = defaultdict(list)
    for space, perm in order.perms.items():
        edits[(space, 1)].append((0, perm))  # a permuted space is always a Conv/Gemm output
        if space in biased:
            edits[(space, 2)].append((0, perm))
    for param in coupling.params:
        if touches(param.view, order.perms):
            edits[(param.node, param.input_index)].append((param.axis, _positions(param.view, order)))
    for sink in coupling.sinks:
        if touches(sink.view, order.perms):
            edits[(sink.node, 1)].append((1, _positions(sink.view, order)))
    return edits


def _positions(view: View, order: ChannelOrder) -> np.ndarray:
    return view_positions(view, order.perms)
