"""`--qdq-opset 25`: ternary weights stored as INT2, the same numbers as the int8 form (deliverable 3).

DequantizeLinear takes INT2 from opset 25. The QDQ model is converted first (onnx.version_converter
drops node metadata_props), then annotated, so the labels survive; the float companion keeps the
input's opset. An input already at opset >= 25 gets INT2 without asking.
"""

from __future__ import annotations

import json
from pathlib import Path

import builders
import numpy as np
import onnx
import onnxruntime as ort
import pytest

from odimo.compiler.cli import compile_main
from odimo.compiler.importer import MAX_OPSET
from odimo.ir.graph import opset_version
from odimo.ir.verify import probe_inputs, run

# residual_add split across both CUs (untrained: the formats' initial scales)
SPLIT = {
    "stem": ["digital"] * 3 + ["analog"] * 5,
    "conv1": ["analog", "digital"] * 4,
    "conv2": ["digital"] * 6 + ["analog"] * 2,
    "fc": ["digital", "analog", "analog", "analog"],
}


def untrained(folder: Path) -> list[str]:
    mapping = folder / "split.json"
    mapping.write_text(json.dumps({"schema": "odimo.mapping/1", "target": "diana", "layers": SPLIT}))
    return ["--target", "diana", "--mapping", str(mapping)]


def compiled(folder: Path, source: Path, name: str, *extra: str) -> onnx.ModelProto:
    output = folder / f"{name}.onnx"
    assert compile_main([str(source), *untrained(folder), "-o", str(output), *extra]) == 0
    return onnx.load(str(output))


def int2_codes(model: onnx.ModelProto) -> list[onnx.TensorProto]:
    return [i for i in model.graph.initializer if i.data_type == onnx.TensorProto.INT2]


def test_int2_output_computes_the_int8_output_exactly_and_keeps_its_labels(tmp_path: Path) -> None:
    source = Path(builders.save(builders.residual_add(), tmp_path / "residual_add.onnx"))
    int8 = compiled(tmp_path, source, "int8")
    int2 = compiled(tmp_path, source, "int2", "--qdq-opset", "25")

    assert opset_version(int2) == 25 and int2.ir_version >= 13 and opset_version(int8) == 17
    assert opset_version(onnx.load(str(tmp_path / "int2.float.onnx"))) == 17  # the companion keeps the input's
    ternary = [n for n in int8.graph.node if n.op_type == "DequantizeLinear" and n.name.endswith("/analog/dequant")]
    assert ternary and len(int2_codes(int2)) == 2 * len(ternary)  # codes and zero point of each
    assert (tmp_path / "int2.onnx").stat().st_size < (tmp_path / "int8.onnx").stat().st_size

    labels = {n.name: {p.key: p.value for p in n.metadata_props} for n in int2.graph.node}
    assert labels == {n.name: {p.key: p.value for p in n.metadata_props} for n in int8.graph.node}
    assert labels["conv1/analog"]["odimo.cu"] == "analog"

    probes = probe_inputs(int8, seed=0)
    for level in (ort.GraphOptimizationLevel.ORT_DISABLE_ALL, ort.GraphOptimizationLevel.ORT_ENABLE_ALL):
        sessions = []
        for model in (int8, int2):
            options = ort.SessionOptions()
            options.graph_optimization_level = level
            sess = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
            sessions.append(sess)
        for a, b in zip(run(sessions[0], probes), run(sessions[1], probes), strict=True):
            np.testing.assert_array_equal(b, a)


def test_an_input_at_opset_25_gets_int2_by_default(tmp_path: Path) -> None:
    at25 = onnx.version_converter.convert_version(builders.residual_add(), 25)
    at25.ir_version = 13
    source = Path(builders.save(at25, tmp_path / "at25.onnx"))
    model = compiled(tmp_path, source, "out")
    assert opset_version(model) == 25 and int2_codes(model)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--qdq-opset", "16"], "--qdq-opset 16 is outside 17-"),
        (["--qdq-opset", str(MAX_OPSET + 1)], f"is outside 17-{MAX_OPSET}"),
        (["--qdq-opset", "25", "--emit", "float"], "but this compile emits float"),
    ],
)
def test_an_unusable_qdq_opset_is_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture, extra: list[str], message: str
) -> None:
    source = Path(builders.save(builders.residual_add(), tmp_path / "residual_add.onnx"))
    assert compile_main([str(source), *untrained(tmp_path), "-o", str(tmp_path / "out.onnx"), *extra]) == 2
    err = capsys.readouterr().err
    assert "E130 qdq-opset" in err and message in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["residual_add.onnx", "split.json"]
