"""The default search compiles every zoo family, from both exporters, at a dynamic and a fixed batch.

What a new user does with their own CNN: `odimo-compile model.onnx --target T`, the model exported
with or without dynamic axes. On tiny synthetic data (`--epochs 0,1,1 --limit-batches 2 --batch-size
8 --calibration-images 16`) each run must exit 0 and write a model that passes the checker, keeps the
user's graph inputs and outputs (names, types, shapes: a fixed batch stays fixed), labels every Conv
with its CU, and runs in onnxruntime at its own batch.

The split plot is replaced by a fixed PNG here: matplotlib takes 0.3 s of the 0.7 s a zoo model's
compile costs, 192 times over, and the plot has its own tests (test_pipeline.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from zoo.export import EXPORTERS, FIXED_BATCHES
from zoo.families import FAMILIES, INPUT_SHAPE, NUM_CLASSES
from zoo.fixtures import ZooModel

from odimo.compiler import pipeline
from odimo.compiler.cli import compile_main

FORMS = [(exporter, batch) for exporter in EXPORTERS for batch in (None, *FIXED_BATCHES)]
TARGETS = ("diana", "darkside")
SMOKE_RUN = (
    *("--data", "synthetic", "--epochs", "0,1,1", "--limit-batches", "2", "--batch-size", "8"),
    *("--calibration-images", "16", "--no-progress"),
)


def _cases() -> list:
    return [
        pytest.param(family, exporter, batch, target, id=f"{family}-{exporter}-{batch or 'dynamic'}-{target}")
        for family in FAMILIES
        for exporter, batch in FORMS
        for target in TARGETS
    ]


@pytest.fixture(autouse=True)
def _no_matplotlib(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pipeline, "split_plot", lambda report: PNG_STUB)


PNG_STUB = b"\x89PNG\r\n\x1a\n"


def signature(model: onnx.ModelProto) -> list[tuple[str, str, int, tuple[int | str, ...]]]:
    """(kind, name, element type, dims) of every graph input and output; dim_params by name."""
    initializers = {i.name for i in model.graph.initializer}
    values = [("input", v) for v in model.graph.input if v.name not in initializers]
    values += [("output", v) for v in model.graph.output]
    return [
        (
            kind,
            v.name,
            v.type.tensor_type.elem_type,
            tuple(d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim),
        )
        for kind, v in values
    ]


@pytest.mark.parametrize(("family", "exporter", "batch", "target"), _cases())
def test_default_search_compiles_every_family_and_export_form(
    zoo_model: ZooModel,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    family: str,
    exporter: str,
    batch: int | None,
    target: str,
) -> None:
    source = zoo_model(family, exporter, batch)
    out = tmp_path / "out.onnx"
    code = compile_main([str(source), "--target", target, *SMOKE_RUN, "-o", str(out)])
    assert code == 0, capsys.readouterr().err
    onnx.checker.check_model(str(out), full_check=True)
    emitted = onnx.load(str(out))
    assert signature(emitted) == signature(onnx.load(str(source)))
    unlabelled = [
        n.name
        for n in emitted.graph.node
        if n.op_type == "Conv" and "odimo.cu" not in {p.key for p in n.metadata_props}
    ]
    assert not unlabelled
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    images = np.random.default_rng(0).random((batch or 3, *INPUT_SHAPE), dtype=np.float32)
    (logits,) = session.run(None, {session.get_inputs()[0].name: images})
    assert logits.shape == (len(images), NUM_CLASSES) and np.isfinite(logits).all()
