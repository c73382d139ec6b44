"""One op table: every op the importer accepts the training bridge runs, and every attribute value the
bridge would not compute exactly is refused at import (E110, naming node, op and attribute), before
any data is loaded, instead of failing or drifting minutes into training."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import builders
import numpy as np
import onnx
import pytest
from builders import GraphBuilder, append_node, make_model, tensor_info
from onnx import TensorProto, helper

from odimo.compiler.importer import load_model
from odimo.ir import coupling
from odimo.ir.errors import ModelImportError, UnsupportedOpError
from odimo.retrain import bridge

X_INFO = tensor_info("x", ["batch", 3, 8, 8])


def test_importer_accepts_exactly_the_ops_the_bridge_runs() -> None:
    assert coupling.SUPPORTED_OPS == bridge.TORCH_OPS


def test_attribute_tables_agree() -> None:
    """The Cast targets and Pad modes the importer lets through are the ones the bridge computes."""
    assert coupling.INDEX_CASTS == set(bridge.CAST_DTYPES)
    assert coupling.PAD_MODES == {"constant", *bridge.PAD_MODES}
    assert set(coupling.ATTRIBUTE_LIMITS) <= coupling.SUPPORTED_OPS
    assert coupling.INDEX_OPS | coupling.INDEX_TAIL_OPS <= coupling.SUPPORTED_OPS


# --- Upsample ----------------------------------------------------------------------------------


def upsample(opset: int = 13) -> onnx.ModelProto:
    """x -> conv -> Upsample 'up' (nearest, x2) -> gap -> flatten -> fc  (not checked: it is invalid)"""
    g = GraphBuilder()
    y = g.conv("x", 4, "conv")
    up = append_node(g, "Upsample", [y, g._const("up.scales", np.array([1, 1, 2, 2], np.float32))], "up", (4, 16, 16))
    out = g.gemm(g.flatten(g.gap(up, "gap"), "flatten"), 3, "fc")
    return make_model(g.nodes, g.inits, [X_INFO], [tensor_info(out, ["batch", 3])], opset=opset)


def test_upsample_is_refused_by_the_checker_in_odimo_opsets(tmp_path: Path) -> None:
    """Upsample is deprecated since opset 10 and odimo imports opsets 13-22: onnx.checker refuses it."""
    with pytest.raises(ModelImportError) as error:
        load_model(builders.save(upsample(), tmp_path / "m.onnx"))
    assert error.value.code == "E104" and "Upsample is deprecated" in error.value.what


def test_upsample_has_no_channel_rule() -> None:
    """Were the checker to let it through, the op table refuses it too (E110)."""
    problems = coupling.unsupported_nodes(upsample(), canonical=True)
    assert "node #1 'up' (Upsample): no channel rule for this op" in problems


def test_group_normalization_18_is_refused_by_the_checker(tmp_path: Path) -> None:
    """Opset 18's per-group scale is deprecated (opset 21 scales channels): E104, not a silent mix-up."""
    g = GraphBuilder()
    y = g.conv("x", 4, "conv")
    inputs = [y, g._const("gn.scale", np.ones(2, np.float32)), g._const("gn.bias", np.zeros(2, np.float32))]
    append_node(g, "GroupNormalization", inputs, "gn", (4, 8, 8), num_groups=2)
    model = make_model(g.nodes, g.inits, [X_INFO], [tensor_info("gn", ["batch", 4, 8, 8])], opset=18)
    with pytest.raises(ModelImportError) as error:
        load_model(builders.save(model, tmp_path / "m.onnx"))
    assert error.value.code == "E104" and "GroupNormalization is deprecated" in error.value.what


# --- attribute limits: E110 at import ------------------------------------------------------------


def around_conv(op: str, consts: list, shape: tuple[int, ...], opset: int = 19, **attrs) -> onnx.ModelProto:
    """x -> conv (4 ch, 8x8) -> `op` 'node' -> gap -> flatten -> fc

    `consts` are the node's constant inputs after the conv output, None for an absent one."""
    g = GraphBuilder()
    inputs = [g.conv("x", 4, "conv")]
    inputs += ["" if value is None else g._const(f"node.in{k}", np.asarray(value)) for k, value in enumerate(consts, 1)]
    y = append_node(g, op, inputs, "node", shape, **attrs)
    return g.build(g.gemm(g.flatten(g.gap(y, "gap"), "flatten"), 3, "fc"), opset=opset)


def resize(
    scales: list[float] | None,
    shape: tuple[int, ...],
    sizes: list[int] | None = None,
    roi: list[float] | None = None,
    **attrs,
) -> onnx.ModelProto:
    consts = [roi and np.array(roi, np.float32), scales and np.array(scales, np.float32), sizes and np.array(sizes)]
    return around_conv("Resize", consts, shape, **attrs)


def pool(op: str, shape: tuple[int, ...], **attrs) -> onnx.ModelProto:
    return around_conv(op, [], shape, **attrs)


def cast_and_back(to: int) -> onnx.ModelProto:
    """x -> conv -> Cast 'node' (to) -> Cast 'back' (float) -> gap -> flatten -> fc"""
    g = GraphBuilder()
    y = append_node(g, "Cast", [g.conv("x", 4, "conv")], "node", (4, 8, 8), to=to)
    y = append_node(g, "Cast", [y], "back", (4, 8, 8), to=TensorProto.FLOAT)
    return g.build(g.gemm(g.flatten(g.gap(y, "gap"), "flatten"), 3, "fc"))


def around_conv_two_outputs(op: str, **attrs) -> onnx.ModelProto:
    """x -> conv -> `op` 'node' -+-> (data) gap -> flatten -> fc -> add -> out
    +-> (second output) cast float -> gap -> flatten -> fc2 -^"""
    g = GraphBuilder()
    y = g.conv("x", 4, "conv")
    shape = (4, 4, 4) if op == "MaxPool" else (4, 8, 8)
    g.nodes.append(helper.make_node(op, [y], ["node", "node:1"], name="node", **attrs))
    g.shapes["node"] = g.shapes["node:1"] = shape
    second = append_node(g, "Cast", ["node:1"], "second", shape, to=TensorProto.FLOAT)
    a = g.gemm(g.flatten(g.gap("node", "gap"), "flatten"), 3, "fc")
    b = g.gemm(g.flatten(g.gap(second, "gap2"), "flatten2"), 3, "fc2")
    return g.build(g.binary("Add", a, b, "out"), opset=19)


UP_2, PAD_1 = [1, 1, 2, 2], [1, 1, 1, 1]
REFUSALS: dict[str, tuple[Callable[[], onnx.ModelProto], str]] = {
    "resize-cubic": (lambda: resize(UP_2, (4, 16, 16), mode="cubic"), "mode='cubic'"),
    "resize-crop": (
        lambda: resize(
            UP_2,
            (4, 16, 16),
            roi=[0, 0, 0, 0, 1, 1, 1, 1],
            mode="linear",
            coordinate_transformation_mode="tf_crop_and_resize",
        ),
        "coordinate_transformation_mode='tf_crop_and_resize'",
    ),
    "resize-antialias": (lambda: resize([1, 1, 0.5, 0.5], (4, 4, 4), mode="linear", antialias=1), "antialias=1"),
    "resize-aspect": (
        lambda: resize(
            None, (4, 12, 12), sizes=[16, 12], axes=[2, 3], mode="linear", keep_aspect_ratio_policy="not_larger"
        ),
        "keep_aspect_ratio_policy='not_larger'",
    ),
    "resize-nearest-fractional": (
        lambda: resize([1, 1, 1.5, 1.5], (4, 12, 12)),
        "mode='nearest' with scale 1.5 on axis 2",
    ),
    "pad-reflect-channels": (
        lambda: around_conv("Pad", [[0, 1, 1, 1, 0, 1, 1, 1]], (6, 10, 10), mode="reflect"),
        "mode='reflect' pads=[0, 1, 1, 1, 0, 1, 1, 1]",
    ),
    "pad-edge-crop": (
        lambda: around_conv("Pad", [[0, 0, -1, 1, 0, 0, 1, 1]], (4, 8, 10), mode="edge"),
        "mode='edge' pads=[0, 0, -1, 1, 0, 0, 1, 1]",
    ),
    "cast-int": (lambda: cast_and_back(TensorProto.INT64), "to=INT64"),
    "maxpool-indices": (
        lambda: around_conv_two_outputs("MaxPool", kernel_shape=[2, 2], strides=[2, 2]),
        "the Indices output",
    ),
    "maxpool-ceil-right-pad": (
        lambda: pool("MaxPool", (4, 4, 4), kernel_shape=[2, 2], strides=[3, 3], pads=PAD_1, ceil_mode=1),
        "ceil_mode=1 with a last window that starts in the right padding",
    ),
    "dropout-mask": (lambda: around_conv_two_outputs("Dropout"), "the mask output is read"),
    "gelu-approximate": (lambda: around_conv("Gelu", [], (4, 8, 8), opset=20, approximate="erf"), "approximate='erf'"),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_attribute_the_bridge_cannot_run_is_e110_at_import(case: str, tmp_path: Path) -> None:
    build, reason = REFUSALS[case]
    model = build()
    with pytest.raises(UnsupportedOpError) as error:
        load_model(builders.save(model, tmp_path / "m.onnx"))
    node = next(n for n in model.graph.node if n.name == "node")
    assert error.value.code == "E110" and "1 node(s)" in error.value.what
    assert f"'node' ({node.op_type}): {reason}" in error.value.where


# --- ArgMax/ArgMin only as the graph tail ----------------------------------------------------------


def argmax_model(feeds: str | None = None, axis: int = 1, cast_to: int | None = None) -> onnx.ModelProto:
    """x -> conv -> gap -> flatten -> fc -> ArgMax 'node' (axis) [-> Cast 'cast'] -> out
    With `feeds`, the indices feed that op instead: Add 'use' (indices + a float logit) -> out."""
    g = GraphBuilder()
    logits = g.gemm(g.flatten(g.gap(g.conv("x", 4, "conv"), "gap"), "flatten"), 3, "fc")
    classes = append_node(g, "ArgMax", [logits], "node", (1,), axis=axis, keepdims=1)
    out, elem = classes, TensorProto.INT64
    if cast_to is not None:
        out, elem = append_node(g, "Cast", [classes], "cast", (1,), to=cast_to), cast_to
    if feeds:
        as_float = append_node(g, "Cast", [classes], "as_float", (1,), to=TensorProto.FLOAT)
        out, elem = append_node(g, feeds, [as_float, logits], "use", (3,)), TensorProto.FLOAT
    output = helper.make_tensor_value_info(out, elem, None)
    model = make_model(g.nodes, g.inits, [X_INFO], [output], opset=17)
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    onnx.checker.check_model(model, full_check=True)
    return model


def test_argmax_inside_the_network_is_e110(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedOpError) as error:
        load_model(builders.save(argmax_model(feeds="Add"), tmp_path / "m.onnx"))
    assert "'node' (ArgMax): ArgMax inside the network (its indices feed 'use' (Add))" in error.value.where


def test_argmax_tail_over_another_axis_is_e110(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedOpError) as error:
        load_model(builders.save(argmax_model(axis=0), tmp_path / "m.onnx"))
    assert "'node' (ArgMax): axis=0" in error.value.where


@pytest.mark.parametrize("cast_to", [None, TensorProto.INT32, TensorProto.FLOAT], ids=["bare", "int32", "float"])
def test_argmax_tail_and_integer_casts_after_it_import(cast_to: int | None, tmp_path: Path) -> None:
    imported = load_model(builders.save(argmax_model(cast_to=cast_to), tmp_path / "m.onnx"))
    tail = coupling.index_tail(imported.model.graph)
    assert tail == coupling.IndexTail("fc", frozenset({"node"} | ({"cast"} if cast_to is not None else set())))
