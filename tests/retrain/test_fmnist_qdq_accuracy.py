"""On real data: the QDQ model in onnxruntime scores what the torch fake-quantized model scores.

The bundled ResNet-20 on the full Fashion-MNIST test set (10,000 images), after a few batches of
final-phase training on a discretized 50/50 mapping: the two accuracies agree within 0.5 points
(issue 6, method.md §7.4). Skipped where Debian's dataset is not installed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from odimo.compiler.cli import compile_main
from odimo.retrain.data import FASHION_MNIST_DIR

MODEL = Path(__file__).resolve().parents[2] / "models" / "resnet20_fmnist.onnx"


@pytest.mark.slow
@pytest.mark.skipif(
    not (Path(FASHION_MNIST_DIR) / "t10k-images-idx3-ubyte.gz").exists(),
    reason="Debian's dataset-fashion-mnist is not installed",
)
def test_qdq_accuracy_in_onnxruntime_matches_torch_on_fashion_mnist(tmp_path: Path) -> None:
    out = tmp_path / "r20.onnx"
    assert (
        compile_main(
            [
                str(MODEL),
                "--target",
                "diana",
                "--epochs",
                "0,0,1",
                "--limit-batches",
                "3",
                "--no-progress",
                "-o",
                str(out),
            ]
        )
        == 0
    )
    accuracy = json.loads((tmp_path / "r20.report.json").read_text())["accuracy"]
    assert accuracy["float"] > 0.90
    assert abs(accuracy["onnx"] - accuracy["final"]) <= 0.005
