"""Sub-layer splitting: a layer on several CUs becomes one sub-layer per CU joined by a Concat.

Runs after `reorder_channels`, so each CU's channels are one stored range [start, end). Sub-layer
`L/<cu>` reads the whole input with weight rows W[start:end] (initializers `W/<cu>`, `B/<cu>`;
`W@L/<cu>` when another node shares W) and writes `Y/<cu>`; `L/concat` joins them in CU order into
the original value `Y`, so consumers are untouched. A CU that runs a *substitute* (Darkside's DWE: a
3x3 depthwise conv with its own weights) reads only its channel range of the input, through
`L/<cu>/slice`. Layers on one CU (fixed, host, or a searchable layer left whole) are renamed
`L/<cu>`; when that CU runs a substitute, the layer is replaced by it. Declines (changed=False) when
no layer is split, renamed or substituted.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

import numpy as np
import onnx
from onnx import helper, numpy_helper

from odimo.ir import names
from odimo.ir.graph import GraphIndex, drop_unused_initializers
from odimo.ir.records import Substitute
from odimo.passes.base import LayerCUs, PassResult, cu_ranges, own_name
from odimo.targets.plan import TargetPlan

HOST = "host"


def split_layers(
    model: onnx.ModelProto, plan: TargetPlan, assignment: LayerCUs, substitutes: Mapping[str, Substitute] = {}
) -> PassResult:
    work = copy.deepcopy(model)
    index = GraphIndex.of(work.graph)
    layer_names = {p.name for p in plan.layers}
    new_nodes: list[onnx.NodeProto] = []
    new_inits: list[onnx.TensorProto] = []
    report = {"layers_split": 0, "sublayers": 0, "layers_renamed": 0, "substituted": 0}
    for node in work.graph.node:
        if node.name not in layer_names:
            new_nodes.append(node)
            continue
        cus = assignment.get(node.name, (HOST,) * _rows(index, node))
        ranges = cu_ranges(cus, (*plan.target.cus, HOST))
        substitute = substitutes.get(node.name)
        if len(ranges) == 1 and (substitute is None or substitute.cu not in ranges):
            renamed = copy.deepcopy(node)
            renamed.name = names.sublayer(node.name, next(iter(ranges)))
            new_nodes.append(renamed)
            report["layers_renamed"] += 1
            continue
        nodes, inits = _split(node, index, ranges, substitute)
        new_nodes += nodes
        new_inits += inits
        report["layers_split" if len(ranges) > 1 else "substituted"] += 1
        report["sublayers"] += len(ranges)
    del work.graph.node[:]
    work.graph.node.extend(new_nodes)
    work.graph.initializer.extend(new_inits)
    drop_unused_initializers(work.graph)
    return PassResult(work, changed=any(report.values()), report=report)


def _rows(index: GraphIndex, node: onnx.NodeProto) -> int:
    return int(index.array(node.input[1]).shape[0])


def _split(
    node: onnx.NodeProto, index: GraphIndex, ranges: dict[str, tuple[int, int]], substitute: Substitute | None
) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    output = node.output[0]
    weight = index.array(node.input[1])
    weight_name = own_name(index, node.input[1], node.name)
    bias_name = (
        own_name(index, node.input[2], node.name)
        if len(node.input) > 2 and node.input[2]
        else names.new_parameter(node.name, "bias")
    )
    bias = (
        index.array(node.input[2]) if len(node.input) > 2 and node.input[2] else np.zeros(weight.shape[0], np.float32)
    )
    whole = len(ranges) == 1
    nodes, inits, parts = [], [], []
    for cu, (start, end) in ranges.items():
        sub_out = output if whole else names.sublayer_output(output, cu)
        w, b = weight[start:end], bias[start:end]
        reads = node.input[0]
        if substitute is not None and cu == substitute.cu:
            w, b = substitute.weight[start:end], substitute.bias[start:end]
            if (start, end) != (0, weight.shape[0]):
                reads = names.sliced_input(node.input[0], node.name, cu)
                nodes.append(_slice(node, cu, start, end, reads, inits))
        inits += [
            numpy_helper.from_array(np.ascontiguousarray(w), names.part(weight_name, cu)),
            numpy_helper.from_array(np.ascontiguousarray(b), names.part(bias_name, cu)),
        ]
        sub = helper.make_node(
            node.op_type,
            [reads, names.part(weight_name, cu), names.part(bias_name, cu)],
            [sub_out],
            name=names.sublayer(node.name, cu),
        )
        sub.attribute.extend(copy.deepcopy(node.attribute))
        if substitute is not None and cu == substitute.cu:
            _set_depthwise(sub, end - start, w.shape[2:])
        nodes.append(sub)
        parts.append(sub_out)
    if not whole:
        nodes.append(helper.make_node("Concat", parts, [output], name=names.concat(node.name), axis=1))
    return nodes, inits


def _slice(
    node: onnx.NodeProto, cu: str, start: int, end: int, output: str, inits: list[onnx.TensorProto]
) -> onnx.NodeProto:
    prefix = names.input_slice(node.name, cu)
    for suffix, value in (("starts", start), ("ends", end), ("axes", 1)):
        inits.append(numpy_helper.from_array(np.array([value], dtype=np.int64), names.part(prefix, suffix)))
    return helper.make_node(
        "Slice", [node.input[0], *(names.part(prefix, s) for s in ("starts", "ends", "axes"))], [output], name=prefix
    )


def _set_depthwise(node: onnx.NodeProto, channels: int, kernel: tuple[int, ...]) -> None:
    kept = [a for a in node.attribute if a.name not in ("group", "kernel_shape")]
    del node.attribute[:]
    node.attribute.extend(kept)
    node.attribute.extend(
        [helper.make_attribute("group", channels), helper.make_attribute("kernel_shape", list(kernel))]
    )
