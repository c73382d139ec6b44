"""onnxruntime's own tools read odimo's QDQ output as quantized (issue 14, deliverable 2).

`onnxruntime.quantization.qdq_loss_debug` pairs tensors by name: an integer initializer `W_quantized`
with the float model's `W`, an activation `X` with `X_QuantizeLinear_Input` or `X_DequantizeLinear_Output`.
A one-batch fine-tuning of residual_shortcut (synthetic data; an identity block and a strided block
with a 1x1 shortcut conv), every conv half digital and half analog, gives a QDQ file with trained
activation quantizers on the layers' and the residual Adds' inputs, requantized outputs and int32
biases; every one of them must be matched, and onnxruntime runs every Conv sub-layer as a QLinearConv.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import builders
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnxruntime.quantization import qdq_loss_debug

from odimo.compiler.cli import compile_main
from odimo.ir.verify import probe_inputs

SPLIT_CONVS = {"stem": 8, "conv1": 8, "conv2": 8, "conv3": 16, "conv4": 16, "short": 16}
FC = {"fc": ["digital"] * 4}
SMOKE = ["--data", "synthetic", "--epochs", "0,1,1", "--limit-batches", "1", "--batch-size", "32", "--no-progress"]


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(QDQ output, float companion) of a one-batch fine-tuning of a split mapping."""
    folder = tmp_path_factory.mktemp("ort_tooling")
    source = Path(builders.save(builders.residual_shortcut(), folder / "residual_shortcut.onnx"))
    halves = {name: ["digital"] * (c // 2) + ["analog"] * (c - c // 2) for name, c in SPLIT_CONVS.items()}
    mapping = folder / "halves.mapping.json"
    mapping.write_text(json.dumps({"schema": "odimo.mapping/1", "target": "diana", "layers": halves | FC}))
    output = folder / "out.onnx"
    argv = [str(source), "--target", "diana", "--mapping", str(mapping), "--train", "-o", str(output), *SMOKE]
    assert compile_main(argv) == 0
    return output, folder / "out.float.onnx"


def _constant_dequantizers(model: onnx.ModelProto) -> list[str]:
    """The code initializers every DequantizeLinear of a weight or bias reads."""
    initializers = {i.name for i in model.graph.initializer}
    return [n.input[0] for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in initializers]


def test_weight_matching_pairs_every_weight_and_bias_with_its_float_tensor(
    compiled: tuple[Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    qdq, float_model = compiled
    codes = _constant_dequantizers(onnx.load(str(qdq)))
    assert any("bias" in c for c in codes) and len(codes) > 6
    with caplog.at_level(logging.ERROR):
        matched = qdq_loss_debug.create_weight_matching(str(float_model), str(qdq))
    assert caplog.records == []  # "Dequantized tensor name ... not recognized!" would be logged here
    assert sorted(matched) == sorted(c.removesuffix("_quantized") for c in codes)
    for name, pair in matched.items():  # the float companion holds the dequantized numbers themselves
        np.testing.assert_allclose(pair["dequantized"], pair["float"], rtol=1e-6, atol=1e-9, err_msg=name)


class _Probes:
    """An onnxruntime CalibrationDataReader over odimo's seeded probe images."""

    def __init__(self, model: Path) -> None:
        loaded = onnx.load(str(model))
        self.name = loaded.graph.input[0].name
        self.batches = iter([probe_inputs(loaded, seed=0, count=3)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self.batches, None)
        return None if batch is None else {self.name: batch}

    def __iter__(self):
        return iter(self.get_next, None)


def _activations(model: Path, folder: Path) -> dict[str, list[np.ndarray]]:
    augmented = folder / f"{model.stem}.augmented.onnx"
    qdq_loss_debug.modify_model_output_intermediate_tensors(str(model), str(augmented))
    return qdq_loss_debug.collect_activations(str(augmented), _Probes(model))


def test_activation_matching_finds_every_quantized_activation(compiled: tuple[Path, Path], tmp_path: Path) -> None:
    qdq, float_model = compiled
    model = onnx.load(str(qdq))
    pairs = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    assert any(n.name.endswith("/requant/quant") for n in pairs) and any("/act/" in n.name for n in pairs)
    matched = qdq_loss_debug.create_activation_matching(
        _activations(qdq, tmp_path), _activations(float_model, tmp_path)
    )
    quantized_values = {
        n.input[0].removesuffix("_QuantizeLinear_Input") if n.input[0].endswith("_QuantizeLinear_Input") else n.input[0]
        for n in pairs
    }
    assert set(matched) == quantized_values
    for name, values in matched.items():
        assert {"pre_qdq", "post_qdq", "float"} <= values.keys(), name
        assert values["pre_qdq"][0].shape == values["post_qdq"][0].shape == values["float"][0].shape, name


def test_onnxruntime_runs_every_conv_sublayer_as_qlinearconv(compiled: tuple[Path, Path], tmp_path: Path) -> None:
    """The stem (through its ReLU), each block's second conv and the 1x1 shortcut meet a residual Add:
    their outputs are quantized as the Add's inputs, so they fuse like the others."""
    qdq, _ = compiled
    model = onnx.load(str(qdq))
    convs = [n.name for n in model.graph.node if n.op_type == "Conv"]
    requantized = [n.name.removesuffix("/requant/quant") for n in model.graph.node if n.name.endswith("/requant/quant")]
    assert len(convs) == 2 * len(SPLIT_CONVS) and sorted(requantized) == sorted(convs)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(qdq), options, providers=["CPUExecutionProvider"])
    optimized = onnx.load(options.optimized_model_filepath).graph.node
    assert not [n.name for n in optimized if n.op_type == "Conv"]
    fused = [n.name for n in optimized if n.op_type == "QLinearConv"]
    assert len(fused) == len(convs) and all(any(f.startswith(c) for f in fused) for c in convs), (fused, convs)
