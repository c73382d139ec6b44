"""The supernet graph (`--save-search-graph`, onnx-io.md §2): each searchable layer as a call to a
model-local function.

Netron draws a call as one box (`DianaMixedConv ƒ`) that opens into its body, so a user sees where
the search sits and what it mixes; onnxruntime runs it and must match the torch supernet in eval
mode. Bodies use standard ops only; the layer's Conv attributes are passed by reference. Each
`SupernetNode` names its function and the body it has (`BODIES`); a body reads its per-CU tensors by
the input names the node gives them (`W_<cu>`, `B_<cu>`), so no target or CU is named here.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from functools import partial

import numpy as np
import onnx
from onnx import helper, numpy_helper

from odimo.ir import names
from odimo.ir.graph import drop_unused_initializers
from odimo.ir.records import SupernetNode
from odimo.passes.base import PassResult

DOMAIN = "odimo.search"
FUNCTION_IR = 8  # local functions need IR >= 8
CONV_ATTRS = ("strides", "pads", "dilations")


def supernet_graph(model: onnx.ModelProto, layers: Mapping[str, SupernetNode]) -> PassResult:
    work = copy.deepcopy(model)
    used: dict[str, SupernetNode] = {}
    nodes = []
    for node in work.graph.node:
        state = layers.get(node.name)
        if state is None:
            nodes.append(node)
            continue
        inputs = [names.part(node.name, key) for key in state.tensors]
        work.graph.initializer.extend(
            numpy_helper.from_array(np.ascontiguousarray(v, dtype=np.float32), n)
            for n, v in zip(inputs, state.tensors.values())
        )
        call = helper.make_node(
            state.function, [node.input[0], *inputs], [node.output[0]], name=node.name, domain=DOMAIN
        )
        call.attribute.extend(a for a in node.attribute if a.name in CONV_ATTRS)
        call.attribute.extend(helper.make_attribute(k, v) for k, v in sorted(state.attributes.items()))
        call.metadata_props.extend(
            onnx.StringStringEntryProto(key=k, value=v) for k, v in sorted(state.metadata.items())
        )
        nodes.append(call)
        used[state.function] = state
    del work.graph.node[:]
    work.graph.node.extend(nodes)
    opset = next(o.version for o in work.opset_import if o.domain in ("", "ai.onnx"))
    work.functions.extend(_function_of(name, used[name], opset) for name in sorted(used))
    work.opset_import.append(helper.make_operatorsetid(DOMAIN, 1))
    work.ir_version = max(work.ir_version, FUNCTION_IR)
    drop_unused_initializers(work.graph)
    return PassResult(work, changed=bool(used), report={"search_calls": len(layers)})


def _conv(inputs: list[str], output: str, name: str) -> onnx.NodeProto:
    node = helper.make_node("Conv", inputs, [output], name=name)
    for attr_name in CONV_ATTRS:
        ref = onnx.AttributeProto()
        ref.name = attr_name
        ref.ref_attr_name = attr_name
        ref.type = onnx.AttributeProto.INTS
        node.attribute.append(ref)
    return node


def _const(name: str, value: np.ndarray) -> onnx.NodeProto:
    return helper.make_node(
        "Constant", [], [name], name=f"{name}_const", value=numpy_helper.from_array(np.asarray(value), name)
    )


def _function(
    name: str, inputs: list[str], nodes: list[onnx.NodeProto], opset: int, attributes: tuple[str, ...] = ()
) -> onnx.FunctionProto:
    return helper.make_function(
        DOMAIN, name, inputs, ["Y"], nodes, [helper.make_operatorsetid("", opset)], attributes=list(attributes)
    )


def _choice_share(nodes: list, rank_axes: list[int]) -> None:
    """share = 1[θ_0 >= θ_1] per channel: the first CU where its logit is at least the other's."""
    nodes += [
        _const("row0", np.array(0, dtype=np.int64)),
        _const("row1", np.array(1, dtype=np.int64)),
        helper.make_node("Gather", ["theta", "row0"], ["theta0"], axis=0),
        helper.make_node("Gather", ["theta", "row1"], ["theta1"], axis=0),
        helper.make_node("GreaterOrEqual", ["theta0", "theta1"], ["first"]),
        helper.make_node("Cast", ["first"], ["share"], to=onnx.TensorProto.FLOAT),
        _const("axes", np.array(rank_axes, dtype=np.int64)),
        helper.make_node("Unsqueeze", ["share", "axes"], ["share_w"]),
    ]


def _split_share(nodes: list, rank_axes: list[int]) -> None:
    """share = 1[i + ½ < k]: the first k channels on the first CU (`centres` holds i + ½)."""
    nodes += [
        helper.make_node("Less", ["centres", "split"], ["first"]),
        helper.make_node("Cast", ["first"], ["share"], to=onnx.TensorProto.FLOAT),
        _const("axes", np.array(rank_axes, dtype=np.int64)),
        helper.make_node("Unsqueeze", ["share", "axes"], ["share_w"]),
    ]


def _function_of(name: str, state: SupernetNode, opset: int) -> onnx.FunctionProto:
    return BODIES[state.body](name, ["X", *state.tensors], opset)


def _blend(nodes: list, inputs: list[str]) -> None:
    """W = s·W_0 + (1 − s)·W_1, B likewise: paper Eq. 5's effective weights (CU 0 first)."""
    w_first, w_second = [n for n in inputs if n.startswith("W_")]
    b_first, b_second = [n for n in inputs if n.startswith("B_")]
    nodes += [
        _const("one", np.array(1.0, dtype=np.float32)),
        helper.make_node("Sub", ["one", "share_w"], ["rest_w"]),
        helper.make_node("Sub", ["one", "share"], ["rest"]),
        helper.make_node("Mul", ["share_w", w_first], ["wd"]),
        helper.make_node("Mul", ["rest_w", w_second], ["wa"]),
        helper.make_node("Add", ["wd", "wa"], ["W"]),
        helper.make_node("Mul", ["share", b_first], ["bd"]),
        helper.make_node("Mul", ["rest", b_second], ["ba"]),
        helper.make_node("Add", ["bd", "ba"], ["B"]),
    ]


def _blend_function(name: str, inputs: list[str], opset: int, *, split: bool, op: str) -> onnx.FunctionProto:
    """Blend the weights by θ (a per-channel choice, or a contiguous group's split), then run `op`."""
    nodes: list = []
    axes = [1, 2, 3] if op == "Conv" else [1]
    (_split_share if split else _choice_share)(nodes, axes)
    _blend(nodes, inputs)
    if op == "Conv":
        nodes.append(_conv(["X", "W", "B"], "Y", "conv"))
        return _function(name, inputs, nodes, opset, CONV_ATTRS)
    nodes.append(helper.make_node("Gemm", ["X", "W", "B"], ["Y"], transB=1))
    return _function(name, inputs, nodes, opset)


def conv_or_depthwise(name: str, inputs: list[str], opset: int) -> onnx.FunctionProto:
    """y = m·Conv(X, W, B) + (1 − m)·Conv(X, W_dw, B_dw, group=C)."""
    nodes: list = []
    _split_share(nodes, [0, 2, 3])
    dw = _conv(["X", "W_dw", "B_dw"], "y_dw", "dw")
    group = onnx.AttributeProto()
    group.name = "group"
    group.ref_attr_name = "channels"
    group.type = onnx.AttributeProto.INT
    dw.attribute.append(group)
    nodes += [
        _conv(["X", "W", "B"], "y_conv", "conv"),
        dw,
        _const("one", np.array(1.0, dtype=np.float32)),
        helper.make_node("Sub", ["one", "share_w"], ["rest_w"]),
        helper.make_node("Mul", ["share_w", "y_conv"], ["yc"]),
        helper.make_node("Mul", ["rest_w", "y_dw"], ["yd"]),
        helper.make_node("Add", ["yc", "yd"], ["Y"]),
    ]
    return _function(name, inputs, nodes, opset, (*CONV_ATTRS, "channels"))


# Function bodies by `SupernetNode.body`: a per-channel choice (free groups) or a split point (contiguous).
BODIES = {
    "blend-conv": partial(_blend_function, split=False, op="Conv"),
    "blend-conv-split": partial(_blend_function, split=True, op="Conv"),
    "blend-gemm": partial(_blend_function, split=False, op="Gemm"),
    "blend-gemm-split": partial(_blend_function, split=True, op="Gemm"),
    "conv-or-depthwise": conv_or_depthwise,
}
