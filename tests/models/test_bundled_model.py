"""The bundled default model, models/resnet20_fmnist.onnx."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import odimo.models
from odimo.models.export import BATCH_DIM, INPUT_NAME
from odimo.retrain.data import FASHION_MNIST_DIR, read_idx

BUNDLED = Path(odimo.models.__file__).parent / "resnet20_fmnist.onnx"
SUBSET = 1000

pytestmark = pytest.mark.skipif(
    not BUNDLED.is_file(), reason=f"{BUNDLED} not built yet (python -m odimo.models.train_default)"
)


def test_bundled_model_is_a_checked_resnet20_with_dynamic_batch() -> None:
    model = onnx.load(str(BUNDLED))
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version == 17
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == BATCH_DIM
    assert [d.dim_value for d in dims[1:]] == [1, 32, 32]
    counts = Counter(n.op_type for n in model.graph.node)
    assert counts["Conv"] + counts["Gemm"] == 22


@pytest.mark.skipif(
    not (FASHION_MNIST_DIR / "t10k-images-idx3-ubyte.gz").is_file(),
    reason=f"Fashion-MNIST test set not installed at {FASHION_MNIST_DIR} (Debian: fashion-mnist)",
)
def test_bundled_model_reaches_90_percent_on_1000_fashion_mnist_test_images() -> None:
    images = read_idx(FASHION_MNIST_DIR / "t10k-images-idx3-ubyte.gz")[:SUBSET]
    labels = read_idx(FASHION_MNIST_DIR / "t10k-labels-idx1-ubyte.gz")[:SUBSET]
    x = np.pad(images.astype(np.float32) / 255.0, ((0, 0), (2, 2), (2, 2)))[:, None]
    session = ort.InferenceSession(str(BUNDLED), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {INPUT_NAME: x})
    accuracy = float(np.mean(logits.argmax(1) == labels))
    assert accuracy >= 0.90, f"{accuracy:.3f} on the first {SUBSET} test images"
