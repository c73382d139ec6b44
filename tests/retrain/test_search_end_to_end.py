"""`odimo-compile --mapping search` end to end on a tiny graph, DIANA (QDQ) and Darkside (float).

Smoke settings (`--data synthetic --epochs 0,1,1 --limit-batches 2`). Beyond exit code and files,
the emitted model must compute what training measured: its onnxruntime accuracy on the test images
equals the report's torch fake-quantized `final` accuracy within 0.5 points, and per image it agrees
on top-1 with the trained supernet (rebuilt from the last checkpoint, which is the state `final`
was measured on) for >= 99 % of the images (method.md §7.4).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from builders import residual_add

from odimo.compiler.cli import compile_main
from odimo.compiler.importer import load_model
from odimo.ir.assignment import Assignment
from odimo.ir.verify import session
from odimo.retrain.data import fit_to_model, load_dataset
from odimo.retrain.supernet import Supernet
from odimo.targets import get_target
from odimo.targets.mapping import load_mapping
from odimo.targets.plan import plan_for_target

SMOKE = [
    "--data",
    "synthetic",
    "--epochs",
    "0,1,1",
    "--limit-batches",
    "2",
    "--batch-size",
    "32",
    "--lambda",
    "1e-5",
    "--no-progress",
]


def _test_images(model_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The test part of the data the search used (the CLI's default seed 0)."""
    imported = load_model(model_path)
    data = load_dataset("synthetic", input_shape=imported.input_shape, num_classes=imported.num_outputs, seed=0)
    data = fit_to_model(data, imported.input_shape, imported.num_outputs)
    return data.x_test, data.y_test


def _supernet_from_checkpoint(model_path: Path, target: str, checkpoint: Path) -> Supernet:
    source = load_model(model_path)
    supernet = Supernet(source.model, plan_for_target(source.model, get_target(target)))
    payload = torch.load(checkpoint, map_location="cpu", weights_only=True)
    mapping = json.loads(payload["state"])["mapping"]
    supernet.fix_mapping(Assignment(target, {name: tuple(cus) for name, cus in mapping.items()}))
    supernet.load_state_dict(payload["model"])
    return supernet.eval()


@pytest.mark.parametrize(
    ("target", "emit", "rounding"),
    [("diana", "qdq", "half-even"), ("diana", "qdq", "floor"), ("darkside", "float", "half-even")],
)
def test_search_compiles_and_the_onnx_scores_what_training_measured(
    target: str, emit: str, rounding: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    source = tmp_path / "residual_add.onnx"
    onnx.save(residual_add(), str(source))
    output = tmp_path / f"out.{target}.onnx"

    argv = [str(source), "--target", target, "-o", str(output), "--act-rounding", rounding, *SMOKE]
    assert compile_main(argv) == 0
    assert "accuracy:" in capsys.readouterr().out

    stem = tmp_path / f"out.{target}"
    expected_files = {
        output,
        Path(f"{stem}.report.json"),
        Path(f"{stem}.mapping.json"),
        Path(f"{stem}.split.png"),
        Path(f"{stem}.ckpt/last.pt"),
    }
    if emit == "qdq":
        expected_files.add(Path(f"{stem}.float.onnx"))
    assert all(f.is_file() and f.stat().st_size > 0 for f in expected_files), sorted(
        str(f) for f in expected_files if not f.is_file()
    )
    report = json.loads(Path(f"{stem}.report.json").read_text())
    assert report["emit"] == emit and report["mapping"] == "search"
    assert {"float", "final", "onnx"} <= report["accuracy"].keys()
    mapping = load_mapping(f"{stem}.mapping.json")
    assert mapping.target == target and mapping.layers

    emitted = onnx.load(str(output))
    onnx.checker.check_model(emitted, full_check=True)
    ops = {n.op_type for n in emitted.graph.node}
    assert ("DequantizeLinear" in ops) == (emit == "qdq")
    # the 7-bit activation quantizers: standard Q/DQ when they round half to even, else the floor chain
    assert ("QuantizeLinear" in ops) == (target == "diana" and rounding == "half-even")
    assert ("Floor" in ops) == (target == "diana" and rounding == "floor")

    x, y = _test_images(source)
    sess = session(emitted)
    onnx_top1 = np.concatenate(
        [sess.run(None, {sess.get_inputs()[0].name: x[k : k + 64]})[0].argmax(1) for k in range(0, len(y), 64)]
    )
    onnx_accuracy = float((onnx_top1 == y).mean())
    assert onnx_accuracy == pytest.approx(report["accuracy"]["onnx"], abs=1e-12)
    assert abs(report["accuracy"]["onnx"] - report["accuracy"]["final"]) <= 0.005, report["accuracy"]

    supernet = _supernet_from_checkpoint(source, target, Path(f"{stem}.ckpt/last.pt"))
    with torch.no_grad():
        torch_top1 = supernet(torch.from_numpy(x)).argmax(1).numpy()
    assert float((torch_top1 == y).mean()) == pytest.approx(report["accuracy"]["final"], abs=1e-12)
    assert float((torch_top1 == onnx_top1).mean()) >= 0.99


def _with_argmax_tail(model: onnx.ModelProto) -> onnx.ModelProto:
    """residual_add -> Softmax -> ArgMax(axis=1, keepdims=0): the graph outputs class indices."""
    tailed = onnx.ModelProto()
    tailed.CopyFrom(model)
    logits = tailed.graph.output[0].name
    tailed.graph.node.extend(
        [
            onnx.helper.make_node("Softmax", [logits], ["probs"], name="softmax", axis=1),
            onnx.helper.make_node("ArgMax", ["probs"], ["label"], name="argmax", axis=1, keepdims=0),
        ]
    )
    batch = tailed.graph.output[0].type.tensor_type.shape.dim[0].dim_param
    del tailed.graph.output[:]
    tailed.graph.output.append(onnx.helper.make_tensor_value_info("label", onnx.TensorProto.INT64, [batch]))
    return tailed


@pytest.mark.parametrize("target", ["diana", "darkside"])
def test_search_on_a_model_ending_in_argmax_trains_on_its_logits(target: str, tmp_path: Path) -> None:
    """The loss reads the ArgMax's input; the emitted model still outputs int64 class indices."""
    source = tmp_path / "argmax.onnx"
    onnx.save(_with_argmax_tail(residual_add()), str(source))
    output = tmp_path / "out.onnx"
    assert compile_main([str(source), "--target", target, "-o", str(output), *SMOKE]) == 0
    report = json.loads((tmp_path / "out.report.json").read_text())
    x, y = _test_images(source)
    (labels,) = session(onnx.load(str(output))).run(None, {"x": x})
    assert labels.dtype == np.int64 and labels.shape == (len(x),)
    assert abs(float(np.mean(labels == y)) - report["accuracy"]["onnx"]) < 1e-9
    assert report["accuracy"]["final"] is not None


@pytest.mark.parametrize(
    ("target", "functions"),
    [
        ("diana", {"DianaMixedConv", "DianaMixedConvContiguous", "DianaMixedGemmContiguous"}),
        ("darkside", {"DarksideConvOrDw"}),
    ],
)
def test_the_search_graph_calls_one_function_per_searchable_layer(
    target: str, functions: set[str], tmp_path: Path
) -> None:
    """onnx-io.md §2: the compile checked it against the supernet's logits; here it opens and runs."""
    source = tmp_path / "residual_add.onnx"
    onnx.save(residual_add(), str(source))
    graph_path = tmp_path / "search.onnx"
    argv = [str(source), "--target", target, "-o", str(tmp_path / "out.onnx"), "--save-search-graph", str(graph_path)]
    assert compile_main([*argv, *SMOKE]) == 0
    graph = onnx.load(str(graph_path))
    onnx.checker.check_model(graph, full_check=True)
    assert {f.name for f in graph.functions} == functions
    calls = [n for n in graph.graph.node if n.domain == "odimo.search"]
    report = json.loads((tmp_path / "out.report.json").read_text())
    assert {n.name for n in calls} == {row["name"] for row in report["layers"] if row["class"] == "searchable"}
    assert all({"odimo.search.assignment", "odimo.search.expected"} <= {p.key for p in n.metadata_props} for n in calls)
    x, _ = _test_images(source)
    sess = session(graph)
    assert sess.run(None, {sess.get_inputs()[0].name: x[:4]})[0].shape == (4, 4)


def test_speedup_reports_what_was_asked_and_reached(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    source = tmp_path / "residual_add.onnx"
    onnx.save(residual_add(), str(source))
    smoke = [a for a in SMOKE if a not in ("--lambda", "1e-5")]
    assert (
        compile_main([str(source), "--target", "diana", "-o", str(tmp_path / "o.onnx"), "--speedup", "2", *smoke]) == 0
    )
    goal = json.loads((tmp_path / "o.report.json").read_text())["goal"]
    assert goal["asked"] == 2.0 and goal["against"] == "All-8bit" and goal["reached"] > 0
    assert "asked 2.00x faster than All-8bit: reached" in capsys.readouterr().out


@pytest.mark.parametrize(
    "flags",
    [
        ["--speedup", "0.5"],
        ["--speedup", "nan"],
        ["--speedup", "2", "--energy-saving", "2"],
        ["--speedup", "2", "--objective", "energy"],
    ],
)
def test_a_cost_target_must_be_a_ratio_above_one_for_its_objective(flags: list[str], tmp_path: Path) -> None:
    source = tmp_path / "residual_add.onnx"
    onnx.save(residual_add(), str(source))
    with pytest.raises(SystemExit) as exit_:
        compile_main([str(source), "--target", "diana", *flags])
    assert exit_.value.code not in (0, None, 3) and not list(tmp_path.glob("residual_add.diana*"))
