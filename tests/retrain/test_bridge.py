"""The ONNX -> torch bridge (retrain/bridge.py): onnxruntime's outputs, trainable, exact write-back.

Every model is imported first (`load_model`), so the bridge sees the canonical graph the search
sees. Equivalence is float32 in eval mode at batch 1 and 3 (one batch for the two big reference
networks): max |torch − onnxruntime| <= 1e-5. Single-op graphs check each op and attribute variant
(relative 1e-5 as well: their sums grow); the few semantics the importer refuses or cannot express
(a scalar output, opset 18 GroupNormalization) run without it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from builders import SMALL_GRAPHS, GraphBuilder, append_node, tensor_info
from onnx import TensorProto, helper, numpy_helper
from torch import nn
from torch_helpers import randomize_batchnorm
from zoo.export import EXPORTERS
from zoo.families import FAMILIES
from zoo.fixtures import ZooModel

from odimo.ir.records import ImportedModel
from odimo.ir.verify import session
from odimo.models.export import export_onnx
from odimo.models.zoo import MODELS, build
from odimo.passes.set_weights import set_weights
from odimo.retrain.bridge import LayerModule, OnnxModule

MAX_ABS_DIFF = 1e-5
Importer = Callable[[onnx.ModelProto, str], ImportedModel]  # the `imported` fixture (conftest.py)

BIG_MODELS = {"mobilenetv1_100", "darkside_seed"}


def _max_diff_to_onnxruntime(imported: ImportedModel, batches: tuple[int, ...]) -> float:
    module = OnnxModule(imported.model).eval()
    sess = session(imported.model)
    worst = 0.0
    for batch in batches:
        x = np.random.default_rng(batch).random((batch, *imported.input_shape), dtype=np.float32)
        (expected,) = sess.run(None, {imported.input_name: x})
        with torch.no_grad():
            actual = module(torch.from_numpy(x)).numpy()
        worst = max(worst, float(np.max(np.abs(actual - expected))))
    return worst


def kept_bn_prelu_no_bias() -> onnx.ModelProto:
    """x -> conv1 (no bias) -> relu -> bn (kept: no conv to fold into) -> prelu -> conv2 -> gap -> flatten -> fc

    Every kind of trained initializer the write-back handles: layer weights and biases, a layer
    without a bias, BN affine parameters and PRelu slopes.
    """
    g = GraphBuilder()
    y = g.conv("x", 8, "conv1")
    g.nodes[-1].input.pop()  # drop conv1's bias input
    g.inits = [t for t in g.inits if t.name != "conv1.bias"]
    y = g.bn(g.relu(y, "relu1"), "bn")
    g.inits.append(numpy_helper.from_array(np.full((8, 1, 1), 0.25, np.float32), "prelu.slope"))
    y = append_node(g, "PRelu", [y, "prelu.slope"], "prelu", g.shapes[y])
    y = g.conv(y, 8, "conv2")
    return g.build(g.gemm(g.flatten(g.gap(y, "gap"), "flatten"), 4, "fc"))


TRAINABLE_GRAPHS = {**SMALL_GRAPHS, "kept_bn_prelu_no_bias": kept_bn_prelu_no_bias}


# --------------------------------------------------------------------------------- equivalence


@pytest.mark.parametrize("name", sorted(SMALL_GRAPHS))
def test_bridge_matches_onnxruntime_on_small_graph(name: str, imported: Importer) -> None:
    assert _max_diff_to_onnxruntime(imported(SMALL_GRAPHS[name](), name), (1, 3)) <= MAX_ABS_DIFF


@pytest.mark.parametrize(
    ("family", "exporter"), [pytest.param(f, e, id=f"{f}-{e}") for f in FAMILIES for e in EXPORTERS]
)
def test_bridge_matches_onnxruntime_on_zoo_family(
    zoo_model: ZooModel, family: str, exporter: str, imported: Importer
) -> None:
    model = onnx.load(str(zoo_model(family, exporter)))
    assert _max_diff_to_onnxruntime(imported(model, f"{family}-{exporter}"), (1, 3)) <= MAX_ABS_DIFF


@pytest.mark.parametrize("name", [pytest.param(n, marks=[pytest.mark.slow] if n in BIG_MODELS else []) for n in MODELS])
def test_bridge_matches_onnxruntime_on_reference_model(name: str, imported: Importer, tmp_path) -> None:
    torch.manual_seed(0)
    path = tmp_path / f"{name}-export.onnx"
    export_onnx(randomize_batchnorm(build(name, 10, 3), seed=1), path, (3, 32, 32))
    batches = (1,) if name in BIG_MODELS else (1, 3)
    assert _max_diff_to_onnxruntime(imported(onnx.load(str(path)), name), batches) <= MAX_ABS_DIFF


# ---------------------------------------------------------------------------------- training


def _sgd_step(module: OnnxModule, shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    """One SGD step on a random batch with random labels; returns the batch."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(4, *shape, generator=g)
    module.train()
    logits = module(x)
    labels = torch.randint(0, logits.shape[1], (4,), generator=g)
    optimizer = torch.optim.SGD([p for p in module.parameters() if p.requires_grad], lr=0.1)
    optimizer.zero_grad()
    F.cross_entropy(logits, labels).backward()
    optimizer.step()
    return x


@pytest.mark.parametrize("name", sorted(TRAINABLE_GRAPHS))
def test_one_sgd_step_reaches_every_layer_and_changes_the_output(name: str, imported: Importer) -> None:
    model = imported(TRAINABLE_GRAPHS[name](), name)
    module = OnnxModule(model.model)
    x = torch.rand(3, *model.input_shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        before = module.eval()(x)
    _sgd_step(module, model.input_shape)
    layers = [m for m in module.modules() if isinstance(m, LayerModule)]
    assert {m.node_name for m in layers} == {n.name for n in model.model.graph.node if n.op_type in ("Conv", "Gemm")}
    for layer in layers:
        grad = layer.weight.grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().max() > 0, layer.node_name
        if layer.has_bias:
            assert layer.bias.grad is not None and layer.bias.grad.abs().max() > 0, layer.node_name
    for param_name, param in module.named_parameters():
        if param.requires_grad:
            assert param.grad is not None and torch.isfinite(param.grad).all(), param_name
    with torch.no_grad():
        after = module.eval()(x)
    assert (after - before).abs().max() > 1e-4


def test_layer_without_bias_keeps_a_frozen_zero_bias(imported: Importer) -> None:
    model = imported(kept_bn_prelu_no_bias(), "no_bias")
    module = OnnxModule(model.model)
    _sgd_step(module, model.input_shape)
    conv1 = module.layer("conv1")
    assert not conv1.has_bias and not conv1.bias.requires_grad
    assert torch.equal(conv1.bias, torch.zeros(8))


@pytest.mark.parametrize("name", sorted(TRAINABLE_GRAPHS))
def test_set_weights_after_a_training_step_gives_the_torch_module(name: str, imported: Importer) -> None:
    source = imported(TRAINABLE_GRAPHS[name](), name)
    model = source.model
    module = OnnxModule(model)
    _sgd_step(module, source.input_shape)
    layers = [m for m in module.modules() if isinstance(m, LayerModule)]
    weights = {m.node_name: m.weight.detach().numpy() for m in layers}
    biases = {m.node_name: m.bias.detach().numpy() for m in layers if m.has_bias}
    constants = {
        name: getattr(module, attr).detach().numpy()
        for name, attr in module.const_names.items()
        if isinstance(getattr(module, attr), nn.Parameter)
    }
    result = set_weights(model, weights, biases, constants)

    written = result.model
    onnx.checker.check_model(written, full_check=True)
    assert [(n.name, n.op_type, list(n.input)) for n in written.graph.node] == [
        (n.name, n.op_type, list(n.input)) for n in model.graph.node
    ]
    assert list(written.opset_import) == list(model.opset_import)
    assert result.report == {"weights_set": len(layers), "biases_set": len(biases), "constants_set": len(constants)}
    x = np.random.default_rng(3).random((3, *source.input_shape), dtype=np.float32)
    (from_onnx,) = session(written).run(None, {source.input_name: x})
    (from_original,) = session(model).run(None, {source.input_name: x})
    with torch.no_grad():
        from_torch = module.eval()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(from_onnx, from_torch, rtol=0, atol=MAX_ABS_DIFF)
    assert np.abs(from_original - from_torch).max() > 1e-4  # the step did change the network


def test_kept_bn_affine_and_prelu_slopes_train_but_bn_statistics_do_not(imported: Importer) -> None:
    model = imported(kept_bn_prelu_no_bias(), "kept").model
    assert {"BatchNormalization", "PRelu"} <= {n.op_type for n in model.graph.node}
    module = OnnxModule(model)
    kinds = {name: isinstance(getattr(module, attr), nn.Parameter) for name, attr in module.const_names.items()}
    assert {name for name, trained in kinds.items() if trained} == {"bn.scale", "bn.bias", "prelu.slope"}
    assert kinds["bn.mean"] is False and kinds["bn.var"] is False


# ----------------------------------------------------------------------- one op against onnxruntime

OP_RTOL = OP_ATOL = 1e-5  # sums over up to ~200 terms (reductions, Lp pools) round differently in the last bits
F32, I64 = np.float32, np.int64
NO_AXES = np.zeros(0, I64)


def one_node(
    op: str,
    opset: int = 18,
    consts: tuple = (),
    shape: tuple[int, ...] = (4, 7, 9),
    out_shape: list | None = None,
    out_type: int = TensorProto.FLOAT,
    **attrs,
) -> onnx.ModelProto:
    """x [batch, *shape] -> `op` 'node' (constant inputs `consts` after x, None for an absent one) -> y

    The output type comes from shape inference unless `out_shape` is given (GroupNormalization, a
    function op, gets no inferred shape)."""
    inits, inputs = [], ["x"]
    for k, value in enumerate(consts, start=1):
        inputs.append("" if value is None else f"node.in{k}")
        if value is not None:
            inits.append(numpy_helper.from_array(np.asarray(value), f"node.in{k}"))
    output = tensor_info("y", out_shape, out_type) if out_shape else helper.make_tensor_value_info("y", out_type, None)
    node = helper.make_node(op, inputs, ["y"], name="node", **attrs)
    graph = helper.make_graph([node], op, [tensor_info("x", ["batch", *shape])], [output], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_operatorsetid("", opset)], producer_name="odimo-tests")
    model.ir_version = 8
    return model if out_shape else onnx.shape_inference.infer_shapes(model, strict_mode=True)


def _probe(shape: tuple[int, ...], values: str, seed: int) -> np.ndarray:
    """'normal' inputs; 'ties' (halves, so maxima repeat); 'positive' in [0.5, 1.5) (logs, products)."""
    rng = np.random.default_rng(seed)
    if values == "positive":
        return rng.uniform(0.5, 1.5, shape).astype(F32)
    x = rng.standard_normal(shape).astype(F32)
    return np.round(2 * x) / 2 if values == "ties" else x


def _assert_graph_output_matches_onnxruntime(model: onnx.ModelProto, values: str = "normal") -> None:
    module = OnnxModule(model).eval()
    sess = session(model)
    per_sample = tuple(d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim[1:])
    for batch in (1, 3):
        x = _probe((batch, *per_sample), values, batch)
        (expected,) = sess.run(None, {"x": x})
        with torch.no_grad():
            actual = module.graph_output(torch.from_numpy(x)).numpy()
        assert (actual.dtype, actual.shape) == (expected.dtype, expected.shape)
        np.testing.assert_allclose(actual, expected, rtol=OP_RTOL, atol=OP_ATOL)


def _case(case_id: str, model: Callable[[], onnx.ModelProto], values: str = "normal") -> object:
    return pytest.param(model, values, id=case_id)


def _reduce_cases(op: str) -> list:
    values = "positive"  # ReduceLogSum needs x > 0; ReduceProd stays O(1)
    return [
        _case(f"{op}-18-axes13", lambda: one_node(op, 18, (np.array([1, 3]),), keepdims=0), values),
        _case(f"{op}-18-axis-1-keep", lambda: one_node(op, 18, (np.array([-1]),)), values),
        _case(f"{op}-18-all-but-batch", lambda: one_node(op, 18, (np.array([1, 2, 3]),), keepdims=0), values),
        _case(f"{op}-18-noop-absent-axes", lambda: one_node(op, 18, noop_with_empty_axes=1), values),
        _case(f"{op}-18-noop-empty-axes", lambda: one_node(op, 18, (NO_AXES,), noop_with_empty_axes=1), values),
        _case(f"{op}-13-attribute-axes", lambda: one_node(op, 13, axes=[2, 3]), values),
    ]


LP_POOLS = {
    "ceil-pads": {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "ceil_mode": 1},
    "asymmetric-pads": {"kernel_shape": [2, 2], "pads": [0, 1, 1, 0]},
    "dilated": {"kernel_shape": [2, 3], "strides": [1, 2], "dilations": [2, 2], "pads": [1, 0, 1, 1]},
}
_REDUCTIONS = ("ReduceL1", "ReduceSumSquare", "ReduceLogSumExp", "ReduceLogSum", "ReduceProd")


GN_OUT = ["batch", 4, 7, 9]


def _group_norm(groups: int) -> onnx.ModelProto:
    scale, bias = np.linspace(0.5, 1.5, 4, dtype=F32), np.linspace(-1, 1, 4, dtype=F32)
    return one_node("GroupNormalization", 21, (scale, bias), out_shape=GN_OUT, num_groups=groups, epsilon=1e-3)


def _arg_index(op: str, keep: int, last: int) -> onnx.ModelProto:
    return one_node(op, 13, out_type=TensorProto.INT64, axis=1, keepdims=keep, select_last_index=last)


NEW_OP_CASES = [
    *(case for op in _REDUCTIONS for case in _reduce_cases(op)),
    *(
        _case(f"LpPool-p{p}-{name}", lambda p=p, kw=kw: one_node("LpPool", 18, p=p, **kw))
        for p in (1, 2, 3)
        for name, kw in LP_POOLS.items()
    ),
    _case("LpPool-13-default-p", lambda: one_node("LpPool", 13, kernel_shape=[2, 2], strides=[2, 2])),
    *(_case(f"GlobalLpPool-p{p}", lambda p=p: one_node("GlobalLpPool", 18, p=p)) for p in (1, 2, 3)),
    *(_case(f"GroupNormalization-21-g{g}", lambda g=g: _group_norm(g)) for g in (1, 2, 4)),
    _case("Shrink-default", lambda: one_node("Shrink")),
    _case("Shrink-lambd-bias", lambda: one_node("Shrink", lambd=0.3, bias=0.1)),
    _case("Shrink-zero-lambd", lambda: one_node("Shrink", lambd=0.0, bias=-0.2)),
    _case("ThresholdedRelu-default", lambda: one_node("ThresholdedRelu", 22), "ties"),
    _case("ThresholdedRelu-alpha", lambda: one_node("ThresholdedRelu", 22, alpha=-0.5), "ties"),
    _case("Hardmax-default-axis", lambda: one_node("Hardmax", 13), "ties"),
    *(_case(f"Hardmax-axis{axis}", lambda axis=axis: one_node("Hardmax", 13, axis=axis), "ties") for axis in (1, 2)),
    *(
        _case(f"{op}-keep{keep}-last{last}", lambda op=op, keep=keep, last=last: _arg_index(op, keep, last), "ties")
        for op in ("ArgMax", "ArgMin")
        for keep in (0, 1)
        for last in (0, 1)
    ),
]


@pytest.mark.parametrize(("model", "values"), NEW_OP_CASES)
def test_bridge_runs_new_op_as_onnxruntime(
    model: Callable[[], onnx.ModelProto], values: str, imported: Importer
) -> None:
    _assert_graph_output_matches_onnxruntime(imported(model(), "op").model, values)


def _resize(scales: list[float] | None = None, sizes: list[int] | None = None, **attrs) -> onnx.ModelProto:
    consts = (None, None if scales is None else np.array(scales, F32), None if sizes is None else np.array(sizes))
    return one_node("Resize", 19, consts, **attrs)


def _slice(starts: list[int], ends: list[int], axes: list[int], steps: list[int]) -> onnx.ModelProto:
    return one_node("Slice", 13, tuple(np.array(v) for v in (starts, ends, axes, steps)))


_TRANSFORMS = ("half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners", "asymmetric")
_ROUNDINGS = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")
_SPATIAL_PADS, _CROPPING_PADS = np.array([0, 0, 1, 2, 0, 0, 2, 1]), np.array([0, 1, -1, 2, 0, 0, 2, -2])
FIXED_OP_CASES = [
    _case("SpaceToDepth", lambda: one_node("SpaceToDepth", shape=(3, 8, 6), blocksize=2)),
    _case("Flatten-axis2", lambda: one_node("Flatten", axis=2)),
    _case("Flatten-axis-1", lambda: one_node("Flatten", axis=-1)),
    _case("Gather-negative-indices", lambda: one_node("Gather", 13, (np.array([-1, 0, -3]),), axis=2)),
    _case("Selu-attributes", lambda: one_node("Selu", alpha=2.0, gamma=0.5)),
    _case("Slice-negative-steps", lambda: _slice([6, -1], [0, -100], [2, 3], [-1, -2])),
    _case("Slice-positive-step-clamped", lambda: _slice([1], [100], [3], [3])),
    _case(
        "AveragePool-asymmetric-exclude-pad", lambda: one_node("AveragePool", kernel_shape=[2, 2], pads=[0, 1, 1, 0])
    ),
    _case(
        "AveragePool-ceil-include-pad",
        lambda: one_node(
            "AveragePool", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1, count_include_pad=1
        ),
    ),
    _case(
        "AveragePool-19-dilated",
        lambda: one_node("AveragePool", 19, kernel_shape=[2, 2], dilations=[2, 1], pads=[1, 0, 0, 1]),
    ),
    _case(
        "MaxPool-asymmetric-dilated-ceil",
        lambda: one_node(
            "MaxPool", kernel_shape=[3, 2], strides=[2, 2], dilations=[1, 2], pads=[1, 0, 1, 1], ceil_mode=1
        ),
    ),
    _case("LRN-size3", lambda: one_node("LRN", size=3, alpha=0.5, beta=0.75, bias=1.5)),
    *(
        _case(f"Pad-{mode}", lambda mode=mode: one_node("Pad", 19, (_SPATIAL_PADS,), mode=mode))
        for mode in ("reflect", "edge", "wrap")
    ),
    _case("Pad-constant-crop-and-value", lambda: one_node("Pad", 19, (_CROPPING_PADS, np.array(0.5, F32)))),
    _case("Pad-18-axes", lambda: one_node("Pad", 18, (np.array([1, 2, 2, 1]), None, np.array([2, -1])), mode="edge")),
    *(
        _case(
            f"Resize-linear-{transform}",
            lambda transform=transform: _resize(
                [1, 1, 1.5, 0.7], mode="linear", coordinate_transformation_mode=transform
            ),
        )
        for transform in _TRANSFORMS
    ),
    _case("Resize-linear-sizes-axes", lambda: _resize(sizes=[4, 13], mode="linear", axes=[3, 2])),
    *(
        _case(
            f"Resize-nearest-{transform}-{rounding}",
            lambda transform=transform, rounding=rounding: _resize(
                [1, 1, 2, 0.5], coordinate_transformation_mode=transform, nearest_mode=rounding
            ),
        )
        for transform in _TRANSFORMS
        for rounding in _ROUNDINGS
    ),
    _case("Resize-nearest-sizes-axes", lambda: _resize(sizes=[21, 18], axes=[2, 3])),
]


@pytest.mark.parametrize(("model", "values"), FIXED_OP_CASES)
def test_bridge_runs_attribute_variants_as_onnxruntime(
    model: Callable[[], onnx.ModelProto], values: str, imported: Importer
) -> None:
    """Ops the bridge ran wrongly before (SpaceToDepth's channel order, Flatten axis >= 2, negative
    Gather indices and Slice steps, asymmetric or ceil_mode pools, wrap pads, Resize modes)."""
    _assert_graph_output_matches_onnxruntime(imported(model(), "op").model, values)


def test_group_normalization_18_per_group_scale_matches_onnxruntime() -> None:
    """Opset 18's per-group scale and bias (deprecated: the checker, so the importer, refuse it; see
    tests/compiler/test_op_table.py) still run as onnxruntime runs them, told apart by their size."""
    consts = (np.array([0.5, 1.5], F32), np.array([-0.25, 0.75], F32))
    _assert_graph_output_matches_onnxruntime(one_node("GroupNormalization", 18, consts, out_shape=GN_OUT, num_groups=2))


@pytest.mark.parametrize("op", _REDUCTIONS)
def test_reduce_without_axes_reduces_every_axis(op: str) -> None:
    """No axes, no noop: a scalar, batch included (not importable: odimo needs a per-image output)."""
    _assert_graph_output_matches_onnxruntime(one_node(op, 18, shape=(3, 4, 5), keepdims=0), "positive")


def test_reduce_noop_keeps_the_elementwise_step() -> None:
    """noop_with_empty_axes reduces nothing but still squares (ReduceSumSquare) or logs (ReduceLogSum)."""
    x = torch.tensor([[[[0.5, 2.0]]]])
    for op, expected in (("ReduceSumSquare", x**2), ("ReduceLogSum", x.log()), ("ReduceL1", x.abs())):
        module = OnnxModule(one_node(op, 18, shape=(1, 1, 2), noop_with_empty_axes=1))
        assert torch.equal(module.graph_output(x), expected), op


def test_lp_pool_of_a_zero_window_has_a_finite_gradient() -> None:
    """A window of zeros (after a ReLU) has an infinite root derivative; the bridge gives it 0."""
    module = OnnxModule(one_node("LpPool", 18, shape=(1, 4, 4), kernel_shape=[2, 2], strides=[2, 2], p=2))
    x = torch.zeros(1, 1, 4, 4, requires_grad=True)
    module.graph_output(x).sum().backward()
    assert torch.isfinite(x.grad).all()


# ------------------------------------------------------------------------ ArgMax as the graph tail


def argmax_tail(cast: bool = False) -> onnx.ModelProto:
    """x -> conv1 -> relu -> gap -> flatten -> fc (4 logits) -> ArgMax 'classes' (axis 1, keepdims 1)
    -> Reshape [-1] 'flat' (-> Cast int32 'cast')"""
    g = GraphBuilder()
    logits = g.gemm(g.flatten(g.gap(g.relu(g.conv("x", 8, "conv1"), "relu"), "gap"), "flatten"), 4, "fc")
    classes = append_node(g, "ArgMax", [logits], "classes", (1,), axis=1, keepdims=1)
    out = append_node(g, "Reshape", [classes, g._const("flat.shape", np.array([-1], I64))], "flat", ())
    if cast:
        out = append_node(g, "Cast", [out], "cast", (), to=TensorProto.INT32)
    inp = tensor_info("x", ["batch", 3, 8, 8])
    output = tensor_info(out, ["batch"], TensorProto.INT32 if cast else TensorProto.INT64)
    graph = helper.make_graph(g.nodes, "argmax", [inp], [output], g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_operatorsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


@pytest.mark.parametrize("cast", [False, True], ids=["reshape", "reshape-cast"])
def test_argmax_tail_forward_gives_logits_and_graph_output_gives_classes(cast: bool, imported: Importer) -> None:
    model = imported(argmax_tail(cast), "argmax").model
    module = OnnxModule(model).eval()
    assert module.logits_name == "fc" and module.output_name == ("cast" if cast else "flat")
    assert module.tail_nodes == ({"classes", "flat", "cast"} if cast else {"classes", "flat"})
    x = np.random.default_rng(0).random((3, 3, 8, 8), dtype=F32)
    (expected,) = session(model).run(None, {"x": x})
    with torch.no_grad():
        logits, classes = module(torch.from_numpy(x)), module.graph_output(torch.from_numpy(x))
    assert logits.shape == (3, 4) and logits.dtype == torch.float32
    assert classes.dtype == (torch.int32 if cast else torch.int64)
    np.testing.assert_array_equal(classes.numpy(), expected)
    np.testing.assert_array_equal(logits.argmax(1).numpy(), expected)


def test_argmax_tail_trains_on_its_logits(imported: Importer) -> None:
    model = imported(argmax_tail(), "argmax")
    module = OnnxModule(model.model)
    _sgd_step(module, model.input_shape)
    assert all(layer.weight.grad is not None and layer.weight.grad.abs().max() > 0 for layer in module.layers.values())


def test_graph_without_tail_has_its_output_as_logits(imported: Importer) -> None:
    module = OnnxModule(imported(SMALL_GRAPHS["conv_bn_relu"](), "plain").model)
    assert (module.logits_name, module.tail_nodes) == ("fc", frozenset())
