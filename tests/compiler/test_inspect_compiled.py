"""`odimo-inspect` on odimo's own outputs: the partition read back from the `odimo.*` metadata.

residual_add compiled for DIANA with conv1 split (QDQ main file and float companion), and for
Darkside with conv2 on the DWE as a depthwise substitute:

    x -> stem/digital -> stem_relu -+-> conv1/digital -+-> conv1/concat -> relu1 -> conv2/digital -> add -> ...
                                    +-> conv1/analog  -+
"""

from __future__ import annotations

import json
from pathlib import Path

import builders
import onnx
import pytest
from onnx import version_converter

from odimo.compiler import cli, pipeline
from odimo.compiler.annotations import VERSION, channel_ranges, parse_channel_ranges
from odimo.compiler.pipeline import CompileOptions, CompileResult

SPLIT = {
    "diana": {
        "stem": ["digital"] * 8,
        "conv1": ["digital", "analog", "analog", "digital", "analog", "digital", "analog", "analog"],
        "conv2": ["digital"] * 8,
        "fc": ["digital"] * 4,
    },
    "darkside": {"conv1": ["cluster"] * 8, "conv2": ["dwe"] * 8},
}


def compiled(folder: Path, target: str) -> CompileResult:
    source = builders.save(builders.residual_add(), folder / "residual_add.onnx")
    mapping = folder / f"{target}.mapping.json"
    mapping.write_text(json.dumps({"schema": "odimo.mapping/1", "target": target, "layers": SPLIT[target]}))
    return pipeline.compile(
        source, CompileOptions(target=target, mapping=str(mapping), output=folder / f"out.{target}.onnx")
    )


@pytest.fixture(scope="module")
def diana(tmp_path_factory: pytest.TempPathFactory) -> CompileResult:
    return compiled(tmp_path_factory.mktemp("diana"), "diana")


def inspected(path: Path, capsys: pytest.CaptureFixture[str], *args: str) -> dict:
    assert cli.inspect_main([str(path), "--json", *args]) == 0
    return json.loads(capsys.readouterr().out)


def error(path: Path, capsys: pytest.CaptureFixture[str], *args: str) -> str:
    assert cli.inspect_main([str(path), *args]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "Traceback" not in err
    return err


@pytest.mark.parametrize(("which", "stored", "file"), [("model", "int8", "qdq"), ("float_model", "float32", "float")])
def test_inspect_shows_the_partition_of_both_outputs(
    diana: CompileResult, capsys: pytest.CaptureFixture[str], which: str, stored: str, file: str
) -> None:
    path = getattr(diana.paths, which)
    shown = inspected(path, capsys)
    assert shown["file"] == file
    summary = diana.report.summary
    assert shown["compiled"] and shown["producer"] == {"name": "odimo", "version": VERSION}
    assert shown["odimo"]["target"] == "diana" and shown["odimo"]["emit"] == "qdq"
    assert [layer["name"] for layer in shown["layers"]] == [row.name for row in summary.layers]
    for layer, row in zip(shown["layers"], summary.layers):
        subs = layer["sublayers"]
        assert [s["node"] for s in subs] == list(row.sublayers) and layer["latency_cycles"] == row.latency_cycles
        assert {s["cu"]: parse_channel_ranges(s["channels"]) for s in subs} == row.channels
        assert {s["cu"]: s["cycles"] for s in subs} == {cu: row.cycles[cu] for cu in row.channels}
    conv1 = {s["cu"]: s for s in shown["layers"][1]["sublayers"]}
    assert conv1["analog"]["weight_format"] == "ternary" and conv1["analog"]["count"] == 5
    assert conv1["digital"]["concat_range"] == "0:3" and conv1["digital"]["channels"] == "0,3,5"
    assert {s["stored"] for layer in shown["layers"] for s in layer["sublayers"]} == {stored}
    assert shown["cus"] == {
        "digital": {"sublayers": 4, "channels": 23, "cycles": sum(r.cycles["digital"] for r in summary.layers)},
        "analog": {"sublayers": 1, "channels": 5, "cycles": summary.layers[1].cycles["analog"]},
    }
    assert shown["totals"] == {"all": summary.total.to_dict(), "searchable": summary.searchable.to_dict()}
    assert [b["name"] for b in shown["baselines"]] == [b.name for b in summary.baselines]
    assert shown["summary"] == onnx.load(str(path)).doc_string


def test_the_table_lists_each_sub_layer_and_the_totals(diana: CompileResult, capsys) -> None:
    assert cli.inspect_main([str(diana.paths.model), "--target", "diana"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"out.diana.onnx: odimo {VERSION} output for diana, qdq file (run's emit: qdq)")
    analog = next(line.split() for line in lines if "conv1/analog" in line)
    assert analog == ["conv1/analog", "analog", "1-2,4,6-7", "5", "ternary", "int8", "867", "3:8"]
    assert any(line.split()[:2] == ["analog:", "1"] for line in lines)
    assert any(line.startswith(f"  total: {diana.report.summary.total.cycles:,.2f} cycles") for line in lines)


def test_inspect_reads_metadata_not_names(diana: CompileResult, tmp_path: Path, capsys) -> None:
    """Every node and inner tensor renamed (as onnxruntime's QDQ naming or another tool would): the
    same partition."""
    model = onnx.load(str(diana.paths.model))
    graph = model.graph
    kept = {v.name for v in (*graph.input, *graph.output)}
    renamed = {t: f"t{k}" for k, t in enumerate(sorted({*(i.name for i in graph.initializer)} - kept))}
    renamed |= {o: f"v{k}" for k, o in enumerate(o for n in graph.node for o in n.output if o not in kept)}
    for init in graph.initializer:
        init.name = renamed.get(init.name, init.name)
    for k, node in enumerate(graph.node):
        node.name = f"node{k}"
        node.input[:] = [renamed.get(i, i) for i in node.input]
        node.output[:] = [renamed.get(o, o) for o in node.output]
    del graph.value_info[:]
    onnx.checker.check_model(model, full_check=True)
    path = tmp_path / "renamed.onnx"
    onnx.save(model, str(path))
    before, after = inspected(diana.paths.model, capsys), inspected(path, capsys)
    for layer in (*before["layers"], *after["layers"]):
        for sub in layer["sublayers"]:
            sub.pop("node")
    assert {**after, "model": before["model"]} == before


def test_node_labels_dropped_by_the_version_converter_are_e115(diana: CompileResult, tmp_path: Path, capsys) -> None:
    converted = version_converter.convert_version(onnx.load(str(diana.paths.float_model)), 18)
    path = tmp_path / "opset18.onnx"
    onnx.save(converted, str(path))
    err = error(path, capsys)
    assert "error E115 bad-odimo-metadata" in err and "version_converter" in err and str(path) in err


def test_labels_that_contradict_the_report_are_e115(diana: CompileResult, tmp_path: Path, capsys) -> None:
    model = onnx.load(str(diana.paths.float_model))
    analog = next(n for n in model.graph.node if n.name == "conv1/analog")
    next(p for p in analog.metadata_props if p.key == "odimo.channels").value = "1-2"
    path = tmp_path / "edited.onnx"
    onnx.save(model, str(path))
    err = error(path, capsys)
    assert "error E115 bad-odimo-metadata: layer 'conv1'" in err and "analog: 2" in err


def test_another_target_than_the_compiled_one_is_e150(diana: CompileResult, capsys) -> None:
    err = error(diana.paths.model, capsys, "--target", "darkside")
    assert "error E150 bad-target: the model was compiled for 'diana', not 'darkside'" in err


def test_darkside_output_shows_the_depthwise_substitute(tmp_path: Path, capsys) -> None:
    result = compiled(tmp_path, "darkside")
    shown = inspected(result.paths.model, capsys)
    conv2 = next(layer for layer in shown["layers"] if layer["name"] == "conv2")
    assert [(s["cu"], s["op"], s["count"], s["stored"]) for s in conv2["sublayers"]] == [
        ("dwe", "Conv(depthwise substitute)", 8, "float32")
    ]
    assert shown["odimo"]["emit"] == shown["file"] == "float" and set(shown["cus"]) == {"cluster", "dwe"}


@pytest.mark.parametrize("indices", [[0], [0, 1, 2, 3, 7], [1, 2, 4, 6, 7], [5, 9, 10, 11]])
def test_channel_ranges_read_back(indices: list[int]) -> None:
    assert parse_channel_ranges(channel_ranges(indices)) == indices


@pytest.mark.parametrize("text", ["", "3-1", "2,1", "a", "1-", "0,0"])
def test_bad_channel_ranges_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_channel_ranges(text)
