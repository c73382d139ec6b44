"""A given mapping emitted without training is calibrated to the float model first (issue 13).

`--mapping min-cost` without `--train` must already be usable: the quantized layers' scales and
per-channel re-fit come from a few training images, so the emitted model computes closer to the
user's float model than the same mapping with the initial scales (`--calibration-images 0`). Where
the data cannot be fitted to the model, the mapping is still emitted and the report says why.
"""

from __future__ import annotations

import json
from pathlib import Path

import builders
import numpy as np
import onnxruntime as ort
import pytest

from odimo.compiler.cli import compile_main

SYNTHETIC = ("--data", "synthetic", "--no-progress")


def _outputs(path: Path, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


CHEAPEST = {"diana": "all-ternary", "darkside": "all-dw"}  # every searchable channel on the second CU


def _compile(tmp_path: Path, name: str, *extra: str, target: str = "diana") -> tuple[Path, dict]:
    source = Path(builders.save(builders.residual_add(), tmp_path / "net.onnx"))
    out = tmp_path / name / "out.onnx"
    out.parent.mkdir()
    argv = [str(source), "--target", target, "--mapping", CHEAPEST[target], "-o", str(out), *extra]
    assert compile_main(argv) == 0
    return out, json.loads(out.with_suffix(".report.json").read_text())


@pytest.mark.parametrize("target", ["diana", "darkside"])
def test_an_untrained_mapping_is_calibrated_towards_the_float_model(tmp_path: Path, target: str) -> None:
    """DIANA: ternary scales and the per-channel re-fit; Darkside: least-squares depthwise
    substitutes instead of the conv's diagonal."""
    calibrated, report = _compile(tmp_path, "calibrated", *SYNTHETIC, "--calibration-images", "64", target=target)
    initial, initial_report = _compile(tmp_path, "initial", *SYNTHETIC, "--calibration-images", "0", target=target)
    x = np.random.default_rng(3).uniform(0, 1, (32, 3, 8, 8)).astype(np.float32)
    reference = _outputs(tmp_path / "net.onnx", x)
    error = {p: float(np.mean((_outputs(p, x) - reference) ** 2)) for p in (calibrated, initial)}
    assert error[calibrated] < 0.5 * error[initial], error
    assert report["notes"] == ["calibrated on 64 training images of synthetic, not trained"]
    assert report["accuracy"]["onnx"] is not None and "training" not in report  # scored, nothing trained
    assert initial_report["notes"] == ["not calibrated (--calibration-images 0)"]
    assert initial_report["accuracy"].get("onnx") is None


def test_data_that_does_not_fit_leaves_the_mapping_uncalibrated_and_says_why(tmp_path: Path) -> None:
    """Fashion-MNIST's 28x28 images cannot feed an 8x8 network: still exit 0, with the reason."""
    _, report = _compile(tmp_path, "default", "--no-progress")
    (note,) = report["notes"]
    assert note.startswith("not calibrated: ") and note.endswith("to calibrate the quantized layers"), note
