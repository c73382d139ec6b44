"""`load_model` on valid files: the canonical model computes what the file does, and the interface
facts later stages read (onnx-io.md §1) are right."""

from __future__ import annotations

import hashlib
from pathlib import Path

import builders
import numpy as np
import onnx
import pytest
from onnx import helper
from onnx.external_data_helper import uses_external_data

from odimo.compiler.canonicalize import restore_signature
from odimo.compiler.importer import load_model
from odimo.ir.errors import ModelImportError
from odimo.ir.graph import value_shape
from odimo.ir.records import ImportedModel
from odimo.ir.verify import session


def assert_same_outputs(before: onnx.ModelProto, after: onnx.ModelProto) -> None:
    """onnxruntime gives the same outputs on seeded inputs at batch 1 and batch 3."""
    shape = value_shape(before.graph.input[0])
    for batch in (1, 3):
        x = np.random.default_rng(batch).random((batch, *shape[1:]), dtype=np.float32)
        (expected,), (actual,) = session(before).run(None, {"x": x}), session(after).run(None, {"x": x})
        np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-6)


def imported(model: onnx.ModelProto, folder: Path, name: str = "model.onnx") -> ImportedModel:
    return load_model(builders.save(model, folder / name))


@pytest.mark.parametrize("name", sorted(builders.SMALL_GRAPHS))
def test_load_model_canonical_graph_computes_the_original(name: str, tmp_path: Path) -> None:
    model = builders.SMALL_GRAPHS[name]()
    result = imported(model, tmp_path)
    onnx.checker.check_model(result.model, full_check=True)
    assert_same_outputs(model, result.model)


def test_load_model_reads_external_data_beside_the_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = builders.conv_bn_relu()
    folder = tmp_path / "exported"
    folder.mkdir()
    on_disk = onnx.ModelProto()
    on_disk.CopyFrom(model)  # save_as_external_data rewrites the proto it is given
    onnx.save(
        on_disk,
        str(folder / "m.onnx"),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="w.data",
        size_threshold=0,
    )
    assert sorted(p.name for p in folder.iterdir()) == ["m.onnx", "w.data"]
    monkeypatch.chdir(tmp_path)  # a relative path: data is found beside the model, not in the cwd
    result = load_model(Path("exported") / "m.onnx")
    assert not any(uses_external_data(t) for t in result.original.graph.initializer)
    assert not any(uses_external_data(t) for t in result.model.graph.initializer)
    assert_same_outputs(model, result.model)


def test_load_model_keeps_the_dynamic_batch(tmp_path: Path) -> None:
    result = imported(builders.conv_bn_relu(), tmp_path)
    assert value_shape(result.model.graph.input[0]) == ("batch", 3, 8, 8)
    assert value_shape(result.model.graph.output[0]) == ("batch", 4)


def test_load_model_frees_a_fixed_batch_and_keeps_the_users_signature(tmp_path: Path) -> None:
    """The working graph runs at any batch; the original (whose signature emission restores) keeps 2."""
    g = builders.GraphBuilder(batch=2)
    model = g.build(g.gemm(g.flatten(g.gap(g.conv("x", 8, "conv"), "gap"), "flatten"), 4, "fc"))
    result = imported(model, tmp_path)
    assert value_shape(result.model.graph.input[0]) == ("batch", 3, 8, 8)
    assert value_shape(result.original.graph.input[0]) == (2, 3, 8, 8)
    restored = restore_signature(result.model, result.original)
    assert value_shape(restored.graph.input[0]) == (2, 3, 8, 8) and value_shape(restored.graph.output[0]) == (2, 4)


def test_fixed_batch_baked_into_a_reshape_is_freed(tmp_path: Path) -> None:
    """x [1,3,8,8] -> conv -> Reshape [1, 8, 64] -> ReduceMean -> fc: the exported batch in a target"""
    g = builders.GraphBuilder(batch=1)
    y = g.conv("x", 8, "conv")
    y = g._node("Reshape", [y, g._const("shape", np.array([1, 8, 64], np.int64))], "reshape", (8, 64))[0]
    y = g._node("ReduceMean", [y], "mean", (8,), axes=[2], keepdims=0)[0]
    result = imported(g.build(g.gemm(y, 4, "fc")), tmp_path)
    batch3 = np.random.default_rng(0).random((3, 3, 8, 8), dtype=np.float32)
    assert session(result.model).run(None, {"x": batch3})[0].shape == (3, 4)


def test_graph_that_mixes_the_images_of_a_fixed_batch_is_e117(tmp_path: Path) -> None:
    """x [2,3,8,8] -> conv -> Reshape [1, 2*8*64] (both images in one row) -> Reshape [2, 512] -> fc"""
    g = builders.GraphBuilder(batch=2)
    y = g._node("Reshape", [g.conv("x", 8, "conv"), g._const("rows", np.array([1, 1024], np.int64))], "mix", (1024,))[0]
    y = g._node("Reshape", [y, g._const("back", np.array([2, 512], np.int64))], "unmix", (512,))[0]
    path = builders.save(g.build(g.gemm(y, 4, "fc")), tmp_path / "mix.onnx")
    with pytest.raises(ModelImportError) as info:
        load_model(path)
    assert info.value.code == "E117" and "exported batch 2" in info.value.what and "dynamic_axes" in info.value.fix


def test_imported_model_reports_its_interface(tmp_path: Path) -> None:
    g = builders.GraphBuilder(channels=5, size=12)
    model = g.build(g.gemm(g.flatten(g.gap(g.conv("x", 8, "conv"), "gap"), "flatten"), 7, "fc"))
    path = builders.save(model, tmp_path / "m.onnx")
    result = load_model(path)
    assert result.input_shape == (5, 12, 12)
    assert result.num_outputs == 7
    assert (result.input_name, result.output_name, result.opset) == ("x", "fc", builders.OPSET)
    assert result.source_sha256 == hashlib.sha256(Path(path).read_bytes()).hexdigest()
    assert result.path == Path(path)


def test_load_model_logs_each_rewrite(tmp_path: Path) -> None:
    result = imported(builders.conv_bn_relu(), tmp_path)
    assert "folded 1 BatchNormalization nodes into their Conv/Gemm" in result.rewrites


def test_load_model_accepts_duplicate_node_names(tmp_path: Path) -> None:
    """onnxruntime rejects duplicate node names; import names them apart and still verifies."""
    model = builders.conv_bn_relu()
    model.graph.node[2].name = "conv1"  # relu1
    result = imported(model, tmp_path)
    assert [n.name for n in result.model.graph.node][:2] == ["conv1", "conv1#1"]


def test_load_model_inlines_local_functions(tmp_path: Path) -> None:
    """x -> block (local::ConvRelu) -> gap -> flatten -> fc"""
    body = [
        helper.make_node("Conv", ["i", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["o"], name="relu"),
    ]
    function = helper.make_function(
        "local", "ConvRelu", ["i", "w", "b"], ["o"], body, [helper.make_operatorsetid("", builders.OPSET)]
    )
    g = builders.GraphBuilder()
    weight = g._const("block.w", g.rng.normal(0, 0.3, (4, 3, 3, 3)).astype(np.float32))
    bias = g._const("block.b", np.zeros(4, np.float32))
    g.nodes.append(helper.make_node("ConvRelu", ["x", weight, bias], ["block"], name="block", domain="local"))
    g.shapes["block"] = (4, 8, 8)
    y = g.gemm(g.flatten(g.gap("block", "gap"), "flatten"), 3, "fc")
    model = builders.make_model(
        g.nodes,
        g.inits,
        [builders.tensor_info("x", ["batch", 3, 8, 8])],
        [builders.tensor_info(y, ["batch", 3])],
        domains={"local": 1},
        functions=[function],
    )
    result = imported(model, tmp_path)
    assert [n.op_type for n in result.model.graph.node] == ["Conv", "Relu", "GlobalAveragePool", "Flatten", "Gemm"]
    assert_same_outputs(model, result.model)
