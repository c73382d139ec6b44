"""One test per canonicalization rule (onnx-io.md §1.3).

Each builds the non-canonical spelling with onnx.helper, canonicalizes it, then checks the structure,
`check_model(full_check=True)`, and onnxruntime outputs before vs after at batch 1 and batch 3 (the
batch is symbolic, and must stay usable at any size).
"""

from __future__ import annotations

import builders
import numpy as np
import onnx
import pytest
from builders import GraphBuilder, append_node, make_model, tensor_info
from onnx import helper, numpy_helper

from odimo.compiler.canonicalize import canonicalize
from odimo.ir.graph import attr, value_shape
from odimo.ir.verify import session

BATCHES = (1, 3)


def canonical(model: onnx.ModelProto) -> tuple[onnx.ModelProto, tuple[str, ...]]:
    """`canonicalize`, checking it leaves its input untouched and returns a valid model."""
    before = model.SerializeToString(deterministic=True)
    result, log = canonicalize(model)
    assert model.SerializeToString(deterministic=True) == before
    onnx.checker.check_model(result, full_check=True)
    return result, log


def assert_same_outputs(before: onnx.ModelProto, after: onnx.ModelProto, batches: tuple[int, ...] = BATCHES) -> None:
    """onnxruntime (no graph optimizations) gives the same outputs on seeded inputs at each batch."""
    name, shape = before.graph.input[0].name, value_shape(before.graph.input[0])
    for batch in batches:
        x = np.random.default_rng(batch).random((batch, *shape[1:]), dtype=np.float32)
        expected, actual = session(before).run(None, {name: x}), session(after).run(None, {name: x})
        for ref, new in zip(expected, actual, strict=True):
            assert new.shape == ref.shape
            np.testing.assert_allclose(new, ref, rtol=1e-5, atol=1e-6)


def op_types(model: onnx.ModelProto) -> list[str]:
    return [n.op_type for n in model.graph.node]


def node(model: onnx.ModelProto, name: str) -> onnx.NodeProto:
    (found,) = [n for n in model.graph.node if n.name == name]
    return found


def initializer(model: onnx.ModelProto, name: str) -> np.ndarray:
    (found,) = [i for i in model.graph.initializer if i.name == name]
    return numpy_helper.to_array(found)


def constant(name: str, value: np.ndarray) -> onnx.NodeProto:
    """A Constant node, as the TorchScript exporter writes them."""
    return helper.make_node(
        "Constant", [], [name], name=f"{name}/Constant", value=numpy_helper.from_array(np.asarray(value))
    )


# --- constants and pass-through nodes -----------------------------------------------------------


def test_constant_nodes_become_initializers_with_their_rank() -> None:
    """x -> conv -> mul (Constant scalar 'scale') -> add (Constant [4,1,1] 'shift')"""
    g = GraphBuilder()
    y = g.conv("x", 4, "conv")
    g.nodes += [constant("scale", np.array(0.5, np.float32)), constant("shift", np.full((4, 1, 1), 0.25, np.float32))]
    y = append_node(g, "Add", [append_node(g, "Mul", [y, "scale"], "mul", (4, 8, 8)), "shift"], "add", (4, 8, 8))
    model = g.build(y)
    result, _ = canonical(model)
    assert op_types(result) == ["Conv", "Mul", "Add"]
    assert initializer(result, "scale").shape == ()  # a scalar stays 0-d (a Gather index would change rank)
    assert initializer(result, "shift").shape == (4, 1, 1)
    assert list(node(result, "mul").input) == ["conv", "scale"]
    assert_same_outputs(model, result)


def test_identity_and_dropout_are_removed() -> None:
    """x -> conv -> Identity 'id' -> Dropout 'drop' -> relu -> conv2"""
    g = GraphBuilder()
    y = g.relu(g.unary("Dropout", g.unary("Identity", g.conv("x", 4, "conv"), "id"), "drop"), "relu")
    model = g.build(g.conv(y, 4, "conv2"))
    result, _ = canonical(model)
    assert op_types(result) == ["Conv", "Relu", "Conv"]
    assert list(node(result, "relu").input) == ["conv"]
    assert_same_outputs(model, result)


@pytest.mark.parametrize("op", ["Identity", "Dropout"])
def test_pass_through_node_producing_the_graph_output_is_kept(op: str) -> None:
    """x -> conv -> Identity|Dropout 'out' (graph output: its name is the interface)"""
    g = GraphBuilder()
    model = g.build(g.unary(op, g.conv("x", 4, "conv"), "out"))
    result, _ = canonical(model)
    assert op_types(result) == ["Conv", op]
    assert result.graph.output[0].name == "out"
    assert_same_outputs(model, result)


# --- Reshape -> Flatten ---------------------------------------------------------------------------


def test_torchscript_view_reshape_becomes_flatten_at_any_batch() -> None:
    """`x.view(x.size(0), -1)` as the TorchScript exporter writes it:

    x -> conv -+--------------------------------------------------> Reshape 'view' -> fc
               +-> Shape -> Gather(0) -> Unsqueeze(0) -> Concat(., [-1]) -^ (target)
    """
    g = GraphBuilder()
    y = g.conv("x", 4, "conv")
    g.nodes += [
        helper.make_node("Shape", [y], ["shape"], name="Shape_1"),
        constant("index", np.array(0, np.int64)),
        helper.make_node("Gather", ["shape", "index"], ["batch"], name="Gather_2", axis=0),
        constant("axes", np.array([0], np.int64)),
        helper.make_node("Unsqueeze", ["batch", "axes"], ["batch1"], name="Unsqueeze_3"),
        constant("rest", np.array([-1], np.int64)),
        helper.make_node("Concat", ["batch1", "rest"], ["target"], name="Concat_4", axis=0),
    ]
    flat = append_node(g, "Reshape", [y, "target"], "view", (4 * 8 * 8,))
    model = g.build(g.gemm(flat, 5, "fc"))
    result, _ = canonical(model)
    assert op_types(result) == ["Conv", "Flatten", "Gemm"]
    assert attr(node(result, "view"), "axis") == 1
    assert list(node(result, "view").input) == ["conv"]
    assert_same_outputs(model, result)


@pytest.mark.parametrize(
    ("target", "batch", "expected", "batches"),
    [
        ([-1, 256], "batch", "Flatten", BATCHES),
        ([0, -1], "batch", "Flatten", BATCHES),
        ([0, 256], "batch", "Flatten", BATCHES),
        # The exporter baked batch 1 in and -1 absorbs any other batch: [1, 3*256] at batch 3.
        ([1, -1], "batch", "Reshape", BATCHES),
        ([1, -1], 1, "Flatten", (1,)),  # a static batch of 1 proves it
        ([1, 256], "batch", "Flatten", (1,)),  # runs at batch 1 only, where it is a Flatten
    ],
    ids=["-1,CHW", "0,-1", "0,CHW", "1,-1@dynamic", "1,-1@batch1", "1,CHW@dynamic"],
)
def test_constant_reshape_target_becomes_flatten_only_when_batch_free(target, batch, expected, batches) -> None:
    """x -> conv (4x8x8) -> Reshape 'view' (constant target) [graph output, declared [batch, 256]]"""
    g = GraphBuilder(batch=batch)
    y = g.conv("x", 4, "conv")
    model = g.build(append_node(g, "Reshape", [y, g._const("target", np.array(target, np.int64))], "view", (256,)))
    result, _ = canonical(model)
    assert op_types(result) == ["Conv", expected]
    assert_same_outputs(model, result, batches)
    if expected == "Flatten" and isinstance(batch, str):
        x = np.zeros((3, 3, 8, 8), np.float32)
        assert session(result).run(None, {"x": x})[0].shape == (3, 256)  # trainable at any batch


# --- ReduceMean -> GlobalAveragePool ------------------------------------------------------------


@pytest.mark.parametrize("keepdims", [1, 0])
@pytest.mark.parametrize(("opset", "axes"), [(17, [2, 3]), (18, [2, 3]), (18, [-1, -2])])
def test_spatial_reduce_mean_becomes_global_average_pool(opset: int, axes: list[int], keepdims: int) -> None:
    """x -> conv -> ReduceMean 'pool' (axes as attribute up to opset 17, as input from 18)"""
    g = GraphBuilder()
    y = g.conv("x", 4, "conv")
    shape = (4, 1, 1) if keepdims else (4,)
    if opset < 18:
        pool = append_node(g, "ReduceMean", [y], "pool", shape, axes=axes, keepdims=keepdims)
    else:
        pool = append_node(
            g, "ReduceMean", [y, g._const("pool.axes", np.array(axes, np.int64))], "pool", shape, keepdims=keepdims
        )
    model = g.build(pool, opset=opset)
    result, _ = canonical(model)
    assert op_types(result) == ["Conv", "GlobalAveragePool"] + ([] if keepdims else ["Flatten"])
    assert node(result, "pool").op_type == "GlobalAveragePool"
    if not keepdims:
        assert node(result, "pool/flatten").output[0] == "pool"
        assert attr(node(result, "pool/flatten"), "axis") == 1
    assert "pool.axes" not in {i.name for i in result.graph.initializer}
    assert_same_outputs(model, result)


def test_reduce_mean_over_channels_is_not_a_pool() -> None:
    """x -> conv -> ReduceMean 'mean' (axes=[1]): stays"""
    g = GraphBuilder()
    model = g.build(append_node(g, "ReduceMean", [g.conv("x", 4, "conv")], "mean", (1, 8, 8), axes=[1]))
    result, _ = canonical(model)
    assert op_types(result) == ["Conv", "ReduceMean"]


# --- fully connected ---------------------------------------------------------------------------


def _pooled_features(g: GraphBuilder) -> str:
    """x -> conv (4 ch) -> gap -> flatten: [N, 4] features."""
    return g.flatten(g.gap(g.conv("x", 4, "conv"), "gap"), "flatten")


@pytest.mark.parametrize("bias_first", [False, True])
def test_matmul_plus_add_becomes_one_gemm(bias_first: bool) -> None:
    """... flatten [N,4] -> MatMul 'fc' (W 4x5) -> Add 'fc_add' (b 5)"""
    g = GraphBuilder()
    features = _pooled_features(g)
    weight = g._const("fc.weight", g.rng.normal(0, 0.5, (4, 5)).astype(np.float32))
    bias = g._const("fc.bias", g.rng.normal(0, 0.1, 5).astype(np.float32))
    y = append_node(g, "MatMul", [features, weight], "fc", (5,))
    model = g.build(append_node(g, "Add", [bias, y] if bias_first else [y, bias], "fc_add", (5,)))
    result, _ = canonical(model)
    assert op_types(result) == ["Conv", "GlobalAveragePool", "Flatten", "Gemm"]
    gemm = node(result, "fc")
    assert list(gemm.output) == ["fc_add"]
    assert attr(gemm, "transB") == 1
    assert initializer(result, gemm.input[1]).shape == (5, 4)
    assert gemm.input[2] == "fc/bias"
    assert_same_outputs(model, result)


@pytest.mark.parametrize("bias_shape", [(5,), (1, 5), (1,)])
def test_gemm_is_normalized_to_unit_alpha_beta_and_trans_b(bias_shape: tuple[int, ...]) -> None:
    """... flatten [N,4] -> Gemm 'fc' (alpha=0.5, beta=2, transB=0, B 4x5, C broadcast to 5)"""
    g = GraphBuilder()
    features = _pooled_features(g)
    weight = g._const("fc.weight", g.rng.normal(0, 0.5, (4, 5)).astype(np.float32))
    bias = g._const("fc.bias", g.rng.normal(0, 0.1, bias_shape).astype(np.float32))
    model = g.build(append_node(g, "Gemm", [features, weight, bias], "fc", (5,), alpha=0.5, beta=2.0, transB=0))
    result, _ = canonical(model)
    gemm = node(result, "fc")
    assert (attr(gemm, "alpha"), attr(gemm, "beta"), attr(gemm, "transB")) == (1.0, 1.0, 1)
    assert gemm.input[1] == "fc.weight"  # read by this Gemm only: rewritten in place
    assert initializer(result, gemm.input[1]).shape == (5, 4)
    assert initializer(result, gemm.input[2]).shape == (5,)
    assert_same_outputs(model, result)


# --- padding -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("op", "mode", "pads"),
    [
        # 8x8, 3x3, stride 2 -> 4x4 needs 1 pad row: SAME_UPPER puts it at the end, SAME_LOWER at the start.
        ("Conv", "SAME_UPPER", [0, 0, 1, 1]),
        ("Conv", "SAME_LOWER", [1, 1, 0, 0]),
        ("Conv", "VALID", [0, 0, 0, 0]),
        ("MaxPool", "SAME_UPPER", [0, 0, 1, 1]),
    ],
)
def test_auto_pad_becomes_explicit_pads(op: str, mode: str, pads: list[int]) -> None:
    """x (3x8x8) -> Conv|MaxPool 'layer' (3x3, stride 2, auto_pad=mode)"""
    g = GraphBuilder()
    out = 3 if mode == "VALID" else 4
    if op == "Conv":
        weight = g._const("layer.weight", g.rng.normal(0, 0.3, (4, 3, 3, 3)).astype(np.float32))
        y = append_node(
            g, "Conv", ["x", weight], "layer", (4, out, out), kernel_shape=[3, 3], strides=[2, 2], auto_pad=mode
        )
    else:
        y = append_node(g, "MaxPool", ["x"], "layer", (3, out, out), kernel_shape=[3, 3], strides=[2, 2], auto_pad=mode)
    model = g.build(y)
    result, _ = canonical(model)
    layer = node(result, "layer")
    assert attr(layer, "auto_pad", b"NOTSET") == b"NOTSET"
    assert attr(layer, "pads") == pads
    assert_same_outputs(model, result)


def _pad_then_conv(mode: str = "constant", value: float = 0.0) -> onnx.ModelProto:
    """x (3x8x8) -> Pad 'pad' (top 1, left 2, bottom 2, right 1) -> Conv 'conv' (3x3, pads 1) -> 4x13x13"""
    g = GraphBuilder()
    pads = g._const("pad.pads", np.array([0, 0, 1, 2, 0, 0, 2, 1], np.int64))
    value_input = [g._const("pad.value", np.array(value, np.float32))] if mode == "constant" else []
    padded = append_node(g, "Pad", ["x", pads, *value_input], "pad", (3, 11, 11), mode=mode)
    return g.build(g.conv(padded, 4, "conv"))


def test_zero_pad_folds_into_the_next_conv() -> None:
    model = _pad_then_conv()
    result, _ = canonical(model)
    assert op_types(result) == ["Conv"]
    conv = node(result, "conv")
    assert conv.input[0] == "x"
    assert attr(conv, "pads") == [1 + 1, 1 + 2, 1 + 2, 1 + 1]
    assert_same_outputs(model, result)


@pytest.mark.parametrize(("mode", "value"), [("constant", 0.5), ("reflect", 0.0), ("edge", 0.0)])
def test_non_zero_pad_is_not_folded(mode: str, value: float) -> None:
    model = _pad_then_conv(mode, value)
    result, _ = canonical(model)
    assert op_types(result) == ["Pad", "Conv"]
    assert attr(node(result, "conv"), "pads") == [1, 1, 1, 1]
    assert_same_outputs(model, result)


# --- BatchNormalization folding -------------------------------------------------------------------


def test_batchnorm_folds_into_the_preceding_conv() -> None:
    """x -> conv1 -> bn1 -> relu -> conv2 -> gap -> flatten -> fc (builders.conv_bn_relu)"""
    model = builders.conv_bn_relu()
    result, _ = canonical(model)
    assert "BatchNormalization" not in op_types(result)
    conv = node(result, "conv1")
    assert list(conv.output) == ["bn1"] and list(node(result, "relu1").input) == ["bn1"]
    assert initializer(result, conv.input[1]).shape == (8, 3, 3, 3)
    assert_same_outputs(model, result)


def test_batchnorm_fold_gives_a_conv_without_bias_its_own() -> None:
    """x -> conv (no bias) -> bn"""
    g = GraphBuilder()
    weight = g._const("conv.weight", g.rng.normal(0, 0.3, (4, 3, 3, 3)).astype(np.float32))
    y = append_node(g, "Conv", ["x", weight], "conv", (4, 8, 8), kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    model = g.build(g.bn(y, "bn"))
    result, _ = canonical(model)
    assert op_types(result) == ["Conv"]
    assert list(node(result, "conv").input) == ["x", "conv.weight", "conv/bias"]
    assert_same_outputs(model, result)


def test_batchnorm_folds_into_the_preceding_gemm() -> None:
    """... flatten [N,4] -> fc (Gemm) -> bn (BatchNormalization over [N, 5])"""
    g = GraphBuilder()
    model = g.build(g.bn(g.gemm(_pooled_features(g), 5, "fc"), "bn"))
    result, _ = canonical(model)
    assert op_types(result) == ["Conv", "GlobalAveragePool", "Flatten", "Gemm"]
    assert list(node(result, "fc").output) == ["bn"]
    assert_same_outputs(model, result)


def test_batchnorm_is_kept_when_the_conv_output_has_a_second_consumer() -> None:
    """x -> conv -+-> bn -> add
    +--------^"""
    g = GraphBuilder()
    y = g.conv("x", 4, "conv")
    model = g.build(g.binary("Add", g.bn(y, "bn"), y, "add"))
    result, _ = canonical(model)
    assert op_types(result) == ["Conv", "BatchNormalization", "Add"]
    np.testing.assert_array_equal(initializer(result, "conv.weight"), initializer(model, "conv.weight"))
    assert_same_outputs(model, result)


def test_shared_weight_is_copied_so_each_batchnorm_folds_on_its_own() -> None:
    """x -+-> conv_a (W, b_a) -> bn_a -+-> add
    +-> conv_b (W, b_b) -> bn_b -+        (one initializer W, two BNs with different statistics)"""
    g = GraphBuilder()
    weight = g._const("W", g.rng.normal(0, 0.3, (4, 3, 3, 3)).astype(np.float32))
    branches = []
    for name in ("conv_a", "conv_b"):
        bias = g._const(f"{name}.bias", g.rng.normal(0, 0.1, 4).astype(np.float32))
        conv = append_node(g, "Conv", ["x", weight, bias], name, (4, 8, 8), kernel_shape=[3, 3], pads=[1, 1, 1, 1])
        branches.append(g.bn(conv, f"bn_{name[-1]}"))
    model = g.build(g.binary("Add", *branches, "add"))
    result, _ = canonical(model)
    assert op_types(result) == ["Conv", "Conv", "Add"]
    assert node(result, "conv_a").input[1] == "W@conv_a"
    assert node(result, "conv_b").input[1] == "W@conv_b"
    assert "W" not in {i.name for i in result.graph.initializer}
    assert_same_outputs(model, result)


# --- names and functions -----------------------------------------------------------------------


def test_unnamed_and_duplicate_nodes_get_deterministic_unique_names() -> None:
    """x -> Conv '' -> Relu '' -> Relu 'act' -> Relu 'act#1' -> Relu 'act' -> Relu 'act'"""
    g = GraphBuilder()
    y = g.conv("x", 4, "conv")
    g.nodes[-1].name = ""
    for k, name in enumerate(["", "act", "act#1", "act", "act"]):
        g.nodes.append(helper.make_node("Relu", [y], [f"r{k}"], name=name))
        y = f"r{k}"
    g.shapes[y] = (4, 8, 8)
    model = g.build(y)
    result, log = canonical(model)
    assert [n.name for n in result.graph.node] == ["Conv_0", "Relu_1", "act", "act#1", "act#2", "act#3"]
    assert log == ("named 4 unnamed or duplicate nodes",)
    runnable = onnx.ModelProto()
    runnable.CopyFrom(model)
    for n in runnable.graph.node:
        n.name = ""  # onnxruntime rejects the duplicates this rule cures
    assert_same_outputs(runnable, result)


def test_local_functions_are_inlined() -> None:
    """x -> block1 (local::ConvRelu) -> block2 (local::ConvRelu) with ConvRelu(i, w, b) = Relu(Conv(i, w, b))"""
    body = [
        helper.make_node("Conv", ["i", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["o"], name="relu"),
    ]
    function = helper.make_function(
        "local", "ConvRelu", ["i", "w", "b"], ["o"], body, [helper.make_operatorsetid("", builders.OPSET)]
    )
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.normal(0, 0.3, (4, 3, 3, 3)).astype(np.float32), "w1"),
        numpy_helper.from_array(rng.normal(0, 0.1, 4).astype(np.float32), "b1"),
        numpy_helper.from_array(rng.normal(0, 0.3, (4, 4, 3, 3)).astype(np.float32), "w2"),
        numpy_helper.from_array(rng.normal(0, 0.1, 4).astype(np.float32), "b2"),
    ]
    nodes = [
        helper.make_node("ConvRelu", ["x", "w1", "b1"], ["y1"], name="block1", domain="local"),
        helper.make_node("ConvRelu", ["y1", "w2", "b2"], ["y2"], name="block2", domain="local"),
    ]
    model = make_model(
        nodes,
        inits,
        [tensor_info("x", ["batch", 3, 8, 8])],
        [tensor_info("y2", ["batch", 4, 8, 8])],
        domains={"local": 1},
        functions=[function],
    )
    onnx.checker.check_model(model, full_check=True)
    result, log = canonical(model)
    assert not result.functions
    assert op_types(result) == ["Conv", "Relu", "Conv", "Relu"]
    assert all(n.domain == "" for n in result.graph.node)
    assert len({n.name for n in result.graph.node}) == 4
    assert "inlined local functions: ConvRelu" in log
    assert_same_outputs(model, result)


# --- opsets ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("opset", "ir_version"), [(13, 7), (22, 10)])
def test_canonical_model_keeps_the_input_opset_and_ir_version(opset: int, ir_version: int) -> None:
    """x -> conv -> bn -> Dropout -> mul (Constant 2) -> ReduceMean (2,3; keepdims 0) -> MatMul -> Add"""
    g = GraphBuilder()
    y = g.unary("Dropout", g.bn(g.conv("x", 4, "conv"), "bn"), "drop")
    g.nodes.append(constant("two", np.array(2.0, np.float32)))
    y = append_node(g, "Mul", [y, "two"], "mul", (4, 8, 8))
    if opset < 18:
        y = append_node(g, "ReduceMean", [y], "pool", (4,), axes=[2, 3], keepdims=0)
    else:
        y = append_node(
            g, "ReduceMean", [y, g._const("pool.axes", np.array([2, 3], np.int64))], "pool", (4,), keepdims=0
        )
    y = append_node(
        g, "MatMul", [y, g._const("fc.weight", g.rng.normal(0, 0.5, (4, 5)).astype(np.float32))], "fc", (5,)
    )
    model = g.build(
        append_node(g, "Add", [y, g._const("fc.bias", np.full(5, 0.1, np.float32))], "fc_add", (5,)),
        opset=opset,
        ir_version=ir_version,
    )
    result, _ = canonical(model)
    assert op_types(result) == ["Conv", "Mul", "GlobalAveragePool", "Flatten", "Gemm"]
    assert list(result.opset_import) == list(model.opset_import)
    assert result.ir_version == ir_version
    assert_same_outputs(model, result)


@pytest.mark.parametrize("name", sorted(builders.SMALL_GRAPHS))
def test_canonical_model_is_a_fixed_point(name: str) -> None:
    once, _ = canonical(builders.SMALL_GRAPHS[name]())
    twice, log = canonical(once)
    assert log == ()
    assert twice.SerializeToString(deterministic=True) == once.SerializeToString(deterministic=True)
