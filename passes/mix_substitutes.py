"""The Darkside reference: each searched layer as the 0/1-masked sum of the conv and its substitute.

`y = m ⊙ conv(x, W) + (1 − m) ⊙ dwconv(x, W_dw)` with m the per-channel mask of the assignment
(method.md §1.2, paper Eq. 2 at a one-hot θ). This is what the search trains and what the split
graph must equal, so it is the model the float emission is verified against.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from functools import partial

import numpy as np
import onnx
from onnx import helper, numpy_helper

from odimo.ir import names
from odimo.ir.records import Substitute
from odimo.passes.base import LayerCUs, PassResult


def mix_substitutes(model: onnx.ModelProto, assignment: LayerCUs, substitutes: Mapping[str, Substitute]) -> PassResult:
    work = copy.deepcopy(model)
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []
    mixed = 0
    for node in work.graph.node:
        sub = substitutes.get(node.name)
        if sub is None:
            nodes.append(node)
            continue
        mask = np.array([cu != sub.cu for cu in assignment[node.name]], dtype=np.float32).reshape(1, -1, 1, 1)
        of_node, of_value = partial(names.part, node.name), partial(names.part, node.output[0])
        conv = copy.deepcopy(node)
        conv.output[0] = of_value("conv")
        dw = helper.make_node(
            "Conv",
            [node.input[0], of_node("dw", "weight"), of_node("dw", "bias")],
            [of_value("dw")],
            name=of_node("dw"),
        )
        dw.attribute.extend(a for a in copy.deepcopy(node.attribute) if a.name not in ("group", "kernel_shape"))
        dw.attribute.extend(
            [
                helper.make_attribute("group", sub.weight.shape[0]),
                helper.make_attribute("kernel_shape", list(sub.weight.shape[2:])),
            ]
        )
        inits += [
            numpy_helper.from_array(sub.weight.astype(np.float32), of_node("dw", "weight")),
            numpy_helper.from_array(sub.bias.astype(np.float32), of_node("dw", "bias")),
            numpy_helper.from_array(mask, of_node("mask")),
            numpy_helper.from_array(1 - mask, of_node("mask_complement")),
        ]
        nodes += [
            conv,
            dw,
            helper.make_node(
                "Mul",
                [of_value("conv"), of_node("mask")],
                [of_value("conv_masked")],
                name=of_node("mask_conv"),
            ),
            helper.make_node(
                "Mul",
                [of_value("dw"), of_node("mask_complement")],
                [of_value("dw_masked")],
                name=of_node("mask_dw"),
            ),
            helper.make_node(
                "Add",
                [of_value("conv_masked"), of_value("dw_masked")],
                [node.output[0]],
                name=of_node("mix"),
            ),
        ]
        mixed += 1
    del work.graph.node[:]
    work.graph.node.extend(nodes)
    work.graph.initializer.extend(inits)
    return PassResult(work, changed=mixed > 0, report={"layers_mixed": mixed})


def diagonal_substitutes(model: onnx.ModelProto, layers: list[str], cu: str) -> dict[str, Substitute]:
    """Depthwise weights for layers that were never trained with a substitute (a baseline mapping).

    W_dw[c] = W[c, c]: the part of the full 3x3 conv that a depthwise conv can express (the kernel
    from input channel c to output channel c), with the conv's bias. The search replaces these with
    trained weights; for an untrained baseline this is the least-surprising start.
    """
    inits = {i.name: i for i in model.graph.initializer}
    nodes = {n.name: n for n in model.graph.node}
    result = {}
    for name in layers:
        node = nodes[name]
        weight = numpy_helper.to_array(inits[node.input[1]])
        bias = (
            numpy_helper.to_array(inits[node.input[2]])
            if len(node.input) > 2 and node.input[2]
            else np.zeros(weight.shape[0], np.float32)
        )
        diagonal = weight[np.arange(weight.shape[0]), np.arange(weight.shape[0])][:, None]
        result[name] = Substitute(cu=cu, weight=diagonal.astype(np.float32), bias=bias.astype(np.float32))
    return result
