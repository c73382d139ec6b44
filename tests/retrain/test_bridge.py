"""The ONNX -> torch bridge (retrain/bridge.py): onnxruntime's outputs, trainable, exact write-back.

Every model is imported first (`load_model`), so the bridge sees the canonical graph the search
sees. Equivalence is float32 in eval mode at batch 1 and 3 (one batch for the two big reference
networks): max |torch − onnxruntime| <= 1e-5.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from onnx import numpy_helper
from torch import nn

from builders import SMALL_GRAPHS, GraphBuilder, append_node
from odimo.compiler.importer import ImportedModel
from odimo.compiler.verify import session
from odimo.models.export import export_onnx
from odimo.models.zoo import MODELS, build
from odimo.passes.set_weights import set_weights
from odimo.retrain.bridge import LayerModule, OnnxModule
from torch_helpers import randomize_batchnorm
from zoo.export import EXPORTERS
from zoo.families import FAMILIES
from zoo.fixtures import ZooModel, zoo_model  # noqa: F401  (importing registers the fixture)

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


@pytest.mark.parametrize(("family", "exporter"), [pytest.param(f, e, id=f"{f}-{e}") for f in FAMILIES for e in EXPORTERS])
def test_bridge_matches_onnxruntime_on_zoo_family(zoo_model: ZooModel, family: str, exporter: str, imported: Importer) -> None:  # noqa: F811
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
    constants = {name: getattr(module, attr).detach().numpy() for name, attr in module.const_names.items() if isinstance(getattr(module, attr), nn.Parameter)}
    result = set_weights(model, weights, biases, constants)

    written = result.model
    onnx.checker.check_model(written, full_check=True)
    assert [(n.name, n.op_type, list(n.input)) for n in written.graph.node] == [(n.name, n.op_type, list(n.input)) for n in model.graph.node]
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
