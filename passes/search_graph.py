"""The search graph: each searchable layer as a call to a model-local function (onnx-io.md §2).

Netron draws a call as one box (`DianaMixedConv ƒ`) that opens into its body, so a user sees where
the search sits and what it mixes; onnxruntime runs it and must match the torch supernet in eval
mode. Bodies use standard ops only; the layer's Conv attributes are passed by reference.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

import numpy as np
import onnx
from onnx import helper, numpy_helper

from odimo.ir.records import SearchNode
from odimo.ir.graph import drop_unused_initializers
from odimo.passes.base import PassResult

DOMAIN = "odimo.search"
FUNCTION_IR = 8  # local functions need IR >= 8
CONV_ATTRS = ("strides", "pads", "dilations")


def search_graph(model: onnx.ModelProto, layers: Mapping[str, SearchNode]) -> PassResult:
    work = copy.deepcopy(model)
    used: set[str] = set()
    nodes = []
    for node in work.graph.node:
        state = layers.get(node.name)
        if state is None:
            nodes.append(node)
            continue
        names = [f"{node.name}/{key}" for key in state.tensors]
        work.graph.initializer.extend(
            numpy_helper.from_array(np.ascontiguousarray(v, dtype=np.float32), n)
            for n, v in zip(names, state.tensors.values())
        )
        call = helper.make_node(
            state.function, [node.input[0], *names], [node.output[0]], name=node.name, domain=DOMAIN
        )
        call.attribute.extend(a for a in node.attribute if a.name in CONV_ATTRS)
        call.attribute.extend(helper.make_attribute(k, v) for k, v in sorted(state.attributes.items()))
        call.metadata_props.extend(
            onnx.StringStringEntryProto(key=k, value=v) for k, v in sorted(state.metadata.items())
        )
        nodes.append(call)
        used.add(state.function)
    del work.graph.node[:]
    work.graph.node.extend(nodes)
    opset = next(o.version for o in work.opset_import if o.domain in ("", "ai.onnx"))
    work.functions.extend(FUNCTIONS[name](opset) for name in sorted(used))
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


def _theta_share(nodes: list, rank_axes: list[int]) -> None:
    """share = Unsqueeze(Gather(Softmax(theta / T, axis 0), 0)) — θ_dig per channel."""
    nodes += [
        helper.make_node("Div", ["theta", "T"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["theta_soft"], axis=0),
        _const("row0", np.array(0, dtype=np.int64)),
        helper.make_node("Gather", ["theta_soft", "row0"], ["share"], axis=0),
        _const("axes", np.array(rank_axes, dtype=np.int64)),
        helper.make_node("Unsqueeze", ["share", "axes"], ["share_w"]),
    ]


def _prefix_share(nodes: list, rank_axes: list[int]) -> None:
    """share = 1[Σ_{j≥i} |α_j| > 0.5] — the cumulative prefix mask of paper Eq. 6."""
    nodes += [
        helper.make_node("Abs", ["alpha"], ["alpha_abs"]),
        _const("axis0", np.array(0, dtype=np.int64)),
        helper.make_node("CumSum", ["alpha_abs", "axis0"], ["theta"], reverse=1),
        _const("half", np.array(0.5, dtype=np.float32)),
        helper.make_node("Greater", ["theta", "half"], ["mask_bool"]),
        helper.make_node("Cast", ["mask_bool"], ["share"], to=onnx.TensorProto.FLOAT),
        _const("axes", np.array(rank_axes, dtype=np.int64)),
        helper.make_node("Unsqueeze", ["share", "axes"], ["share_w"]),
    ]


def _blend(nodes: list) -> None:
    """W = s·W_d + (1 − s)·W_a, B likewise: paper Eq. 5's effective weights."""
    nodes += [
        _const("one", np.array(1.0, dtype=np.float32)),
        helper.make_node("Sub", ["one", "share_w"], ["rest_w"]),
        helper.make_node("Sub", ["one", "share"], ["rest"]),
        helper.make_node("Mul", ["share_w", "W_digital"], ["wd"]),
        helper.make_node("Mul", ["rest_w", "W_analog"], ["wa"]),
        helper.make_node("Add", ["wd", "wa"], ["W"]),
        helper.make_node("Mul", ["share", "B_digital"], ["bd"]),
        helper.make_node("Mul", ["rest", "B_analog"], ["ba"]),
        helper.make_node("Add", ["bd", "ba"], ["B"]),
    ]


def diana_mixed_conv(opset: int) -> onnx.FunctionProto:
    nodes: list = []
    _theta_share(nodes, [1, 2, 3])
    _blend(nodes)
    nodes.append(_conv(["X", "W", "B"], "Y", "conv"))
    return _function(
        "DianaMixedConv",
        ["X", "theta", "T", "W_digital", "W_analog", "B_digital", "B_analog"],
        nodes,
        opset,
        CONV_ATTRS,
    )


def diana_mixed_conv_contiguous(opset: int) -> onnx.FunctionProto:
    nodes: list = []
    _prefix_share(nodes, [1, 2, 3])
    _blend(nodes)
    nodes.append(_conv(["X", "W", "B"], "Y", "conv"))
    return _function(
        "DianaMixedConvContiguous",
        ["X", "alpha", "W_digital", "W_analog", "B_digital", "B_analog"],
        nodes,
        opset,
        CONV_ATTRS,
    )


def diana_mixed_gemm(opset: int) -> onnx.FunctionProto:
    nodes: list = []
    _theta_share(nodes, [1])
    _blend(nodes)
    nodes.append(helper.make_node("Gemm", ["X", "W", "B"], ["Y"], transB=1))
    return _function(
        "DianaMixedGemm", ["X", "theta", "T", "W_digital", "W_analog", "B_digital", "B_analog"], nodes, opset
    )


def diana_mixed_gemm_contiguous(opset: int) -> onnx.FunctionProto:
    nodes: list = []
    _prefix_share(nodes, [1])
    _blend(nodes)
    nodes.append(helper.make_node("Gemm", ["X", "W", "B"], ["Y"], transB=1))
    return _function(
        "DianaMixedGemmContiguous", ["X", "alpha", "W_digital", "W_analog", "B_digital", "B_analog"], nodes, opset
    )


def darkside_conv_or_dw(opset: int) -> onnx.FunctionProto:
    """y = m·Conv(X, W, B) + (1 − m)·Conv(X, W_dw, B_dw, group=C)."""
    nodes: list = []
    _prefix_share(nodes, [0, 2, 3])
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
    return _function(
        "DarksideConvOrDw", ["X", "alpha", "W", "B", "W_dw", "B_dw"], nodes, opset, (*CONV_ATTRS, "channels")
    )


FUNCTIONS = {
    "DianaMixedConv": diana_mixed_conv,
    "DianaMixedConvContiguous": diana_mixed_conv_contiguous,
    "DianaMixedGemm": diana_mixed_gemm,
    "DianaMixedGemmContiguous": diana_mixed_gemm_contiguous,
    "DarksideConvOrDw": darkside_conv_or_dw,
}
