"""Apache TVM takes odimo's outputs: the Relax ONNX frontend imports the QDQ and the float file of a
trained tiny model, TVM builds them for llvm, and the VM computes what onnxruntime computes.

Skipped without `apache-tvm` (failing in CI, where `./setup.sh --test` installs it). The model is
residual_add on DIANA with conv1 split across digital and analog, fine-tuned for one step, so both
files carry five 7-bit activation quantizers (the four layers' inputs and the Add's input from conv2;
the identity path reads conv1's): Clip -> QuantizeLinear -> DequantizeLinear (the default,
half-to-even rounding) or, with `--act-rounding floor`, Clip -> Mul -> Add -> Floor -> Div:

    x -> stem/digital -> stem_relu -+-> conv1/digital -+-> conv1/concat -> relu1 -> conv2/digital -> add -> ...
                                    +-> conv1/analog  -+

Tolerance: a floor quantizer evaluated in float flips a code where two runtimes' pre-quantization
floats straddle a step (measured on the bundled model: 0.02 % of 7-bit codes, logits off by up to
3.8e-3 of their range, no changed prediction in 1024 images). One flipped code moves a logit by a
fraction of its range, so logits must agree within 2 % of the largest one and predictions on all
but one image of 64; a wrong import (a dropped dequantization, a misplaced Concat) is off by far more.
"""

from __future__ import annotations

import json
from pathlib import Path

import builders
import numpy as np
import onnx
import pytest
from optional import require_module

from odimo.compiler import cli
from odimo.ir.verify import session

HERE = Path(__file__).parent
MAPPING = HERE.parent / "netron" / "residual_add_split.mapping.json"  # conv1 split digital/analog
BATCH = 64
RELATIVE_TOLERANCE = 2e-2


@pytest.fixture(scope="module", params=["half-even", "floor"])
def outputs(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path | str]:
    folder = tmp_path_factory.mktemp("tvm")
    source = builders.save(builders.residual_add(), folder / "residual_add.onnx")
    out = folder / "residual_add.diana.onnx"
    args = ["--target", "diana", "--mapping", str(MAPPING), "--train", "--data", "synthetic"]
    args += ["--epochs", "0,1,1", "--limit-batches", "1", "--no-progress", "-o", str(out)]
    args += ["--act-rounding", request.param]
    assert cli.compile_main([source, *args]) == 0
    report = json.loads(out.with_name("residual_add.diana.report.json").read_text())
    assert report["layers"][1]["split"] == {"analog": 5, "digital": 3}
    return {"qdq": out, "float": out.with_name("residual_add.diana.float.onnx"), "rounding": request.param}


@pytest.mark.parametrize("emit", ["qdq", "float"])
def test_tvm_relax_builds_the_output_for_llvm_and_agrees_with_onnxruntime(
    outputs: dict[str, Path | str], emit: str
) -> None:
    tvm = require_module("tvm")
    from tvm import relax
    from tvm.relax.frontend.onnx import from_onnx

    model = onnx.load(str(outputs[emit]))
    ops = [n.op_type for n in model.graph.node]
    floor = outputs["rounding"] == "floor"
    assert ops.count("Floor") == (5 if floor else 0) and ops.count("QuantizeLinear") >= (0 if floor else 5)
    assert ops.count("DequantizeLinear") >= (5 if emit == "qdq" else 0)
    image = model.graph.input[0].name
    x = np.random.default_rng(0).standard_normal((BATCH, 3, 8, 8)).astype(np.float32)

    module = from_onnx(model, shape_dict={image: list(x.shape)})
    assert module.script().count("R.dequantize(") == ops.count("DequantizeLinear")  # imported as QDQ
    machine = relax.VirtualMachine(tvm.compile(module, target="llvm"), tvm.cpu())
    got = machine["main"](tvm.runtime.tensor(x)).numpy()

    want = session(model).run(None, {image: x})[0]
    scale = float(np.abs(want).max())
    assert got.shape == want.shape and scale > 0
    np.testing.assert_allclose(got, want, rtol=0, atol=RELATIVE_TOLERANCE * scale)
    assert int((got.argmax(1) != want.argmax(1)).sum()) <= 1
