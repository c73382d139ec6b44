"""End to end: `compile()` and `odimo-compile` on small graphs saved to tmp_path (onnx-io.md §3-§5).

Every run here uses a given mapping (a baseline or a file), so no training happens.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import builders
import onnx
import pytest

from odimo.compiler import pipeline
from odimo.compiler.cli import compile_main
from odimo.compiler.pipeline import CompileOptions
from odimo.ir.assignment import Assignment
from odimo.ir.errors import ReferenceMismatchError
from odimo.targets import get_target
from odimo.targets.baselines import MappingRecipe
from odimo.targets.mapping import load_mapping

PNG = b"\x89PNG\r\n\x1a\n"
MAPPING_BASELINES = [
    (t, b.name) for t in ("diana", "darkside") for b in get_target(t).baselines if isinstance(b, MappingRecipe)
]
# residual_add on DIANA: conv1 is free (interleaved), stem/conv2 share the residual group, fc feeds
# the output; on Darkside conv1 and conv2 are searchable, stem and fc cluster-only.
SPLIT_MAPPINGS = {
    "diana": {
        "stem": ["digital"] * 3 + ["analog"] * 5,
        "conv1": ["analog", "digital"] * 4,
        "conv2": ["digital"] * 6 + ["analog"] * 2,
        "fc": ["digital", "analog", "analog", "analog"],
    },
    "darkside": {"conv1": ["cluster"] * 5 + ["dwe"] * 3, "conv2": ["dwe"] * 8},
}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def saved(tmp_path: Path, model: onnx.ModelProto | None = None, name: str = "residual_add") -> Path:
    return Path(builders.save(model or builders.residual_add(), tmp_path / f"{name}.onnx"))


def mapping_file(folder: Path, target: str, layers: dict[str, list[str]], name: str = "split.json") -> Path:
    path = folder / name
    path.write_text(json.dumps({"schema": "odimo.mapping/1", "target": target, "layers": layers}))
    return path


def cli(*args: object) -> int:
    return compile_main([str(a) for a in args])


def expand(ranges: str) -> list[int]:
    """'0-3,7' -> [0, 1, 2, 3, 7]"""
    bounds = [tuple(map(int, part.split("-"))) for part in ranges.split(",")]
    return [c for b in bounds for c in range(b[0], b[-1] + 1)]


def props(entries) -> dict[str, str]:
    return {e.key: e.value for e in entries}


@pytest.mark.parametrize(("target", "baseline"), MAPPING_BASELINES)
def test_every_baseline_writes_model_report_mapping_and_plot(tmp_path: Path, target: str, baseline: str) -> None:
    source = saved(tmp_path)
    out = tmp_path / "out.onnx"
    result = pipeline.compile(source, CompileOptions(target=target, mapping=baseline.lower(), output=out))
    qdq = get_target(target).default_emit == "qdq"
    expected = {"residual_add.onnx", "out.onnx", "out.report.json", "out.mapping.json", "out.split.png"} | (
        {"out.float.onnx"} if qdq else set()
    )
    assert {p.name for p in tmp_path.iterdir()} == expected
    for path in (out, tmp_path / "out.float.onnx") if qdq else (out,):
        onnx.checker.check_model(str(path), full_check=True)
    report = json.loads((tmp_path / "out.report.json").read_text())
    assert report == json.loads(result.report.to_json()) and report["mapping"] == baseline
    assert [b["name"] for b in report["baselines"]] == [b.name for b in get_target(target).baselines]
    written = load_mapping(tmp_path / "out.mapping.json")
    assert written == result.mapping
    c_out = {i.name: i.dims[0] for i in onnx.load(str(source)).graph.initializer}
    for row in report["layers"]:
        assert sum(row["split"].values()) == c_out[f"{row['name']}.weight"]
        assert sorted(c for chans in row["channels"].values() for c in chans) == list(
            range(c_out[f"{row['name']}.weight"])
        )
    assert set(report["emission"]["files"]) == {p.name for p in (out, tmp_path / "out.float.onnx") if p.exists()}
    assert report["emission"]["files"]["out.onnx"] == sha256(out)
    assert (tmp_path / "out.split.png").read_bytes().startswith(PNG)


def test_cli_default_output_is_model_dot_target_beside_the_input(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "models").mkdir()
    source = saved(tmp_path / "models")
    monkeypatch.chdir(tmp_path)
    assert cli(source, "--target", "darkside", "--mapping", "all-dw") == 0
    assert {p.name for p in source.parent.iterdir()} == {
        "residual_add.onnx",
        "residual_add.darkside.onnx",
        "residual_add.darkside.report.json",
        "residual_add.darkside.mapping.json",
        "residual_add.darkside.split.png",
    }
    assert [p.name for p in tmp_path.iterdir()] == ["models"]
    out = capsys.readouterr()
    assert out.err == "" and "darkside / All-DW" in out.out and "residual_add.darkside.onnx" in out.out


@pytest.mark.parametrize(
    ("target", "emit", "qdq"),
    [("diana", None, True), ("diana", "float", False), ("darkside", None, False), ("darkside", "qdq", True)],
)
def test_emit_mode_decides_the_main_file_and_the_float_companion(
    tmp_path: Path, target: str, emit: str | None, qdq: bool
) -> None:
    source = saved(tmp_path)
    out = tmp_path / "out.onnx"
    args = [source, "--target", target, "--mapping", mapping_file(tmp_path, target, SPLIT_MAPPINGS[target]), "-o", out]
    assert cli(*args, *(["--emit", emit] if emit else [])) == 0
    main = onnx.load(str(out))
    dequantized = [n.name for n in main.graph.node if n.op_type == "DequantizeLinear"]
    assert bool(dequantized) == qdq and (tmp_path / "out.float.onnx").exists() == qdq
    assert props(main.metadata_props)["odimo.emit"] == ("qdq" if qdq else "float")
    if qdq:
        floating = onnx.load(str(tmp_path / "out.float.onnx"))
        assert not [n for n in floating.graph.node if n.op_type == "DequantizeLinear"]
        assert props(floating.metadata_props)["odimo.emit"] == "qdq"  # the run's mode, on both files


@pytest.mark.parametrize("target", ["diana", "darkside"])
def test_every_node_is_annotated_and_the_report_is_embedded(tmp_path: Path, target: str) -> None:
    source = saved(tmp_path)
    out = tmp_path / "out.onnx"
    result = pipeline.compile(
        source,
        CompileOptions(target=target, mapping=str(mapping_file(tmp_path, target, SPLIT_MAPPINGS[target])), output=out),
    )
    model = onnx.load(str(out))
    nodes = {n.name: props(n.metadata_props) for n in model.graph.node}
    assert all("odimo.cu" in p for p in nodes.values())
    for row in result.report.summary.layers:
        for sub, cu in zip(row.sublayers, row.channels):
            assert nodes[sub]["odimo.cu"] == cu and nodes[sub]["odimo.source_node"] == row.name
            assert expand(nodes[sub]["odimo.channels"]) == row.channels[cu]
    if target == "diana":
        assert (
            nodes["conv1/digital"]["odimo.channels"] == "1,3,5,7"
            and nodes["conv1/analog"]["odimo.concat_range"] == "4:8"
        )
        assert (
            nodes["conv1/concat"]["odimo.role"] == "concat" and nodes["conv2/analog/dequant"]["odimo.role"] == "dequant"
        )
        assert nodes["conv2/digital"]["odimo.reindexed"] == "true"  # conv2 reads conv1's permuted channels
    else:
        assert nodes["conv1/dwe/slice"]["odimo.role"] == "input-slice" and nodes["conv1/dwe"]["odimo.channels"] == "5-7"
        assert nodes["conv2/dwe"]["odimo.op"] == "Conv(depthwise substitute)"
    embedded = json.loads(props(model.metadata_props)["odimo.report"])
    written = json.loads(result.report.to_json())
    assert embedded == {k: written[k] for k in ("target", "objective", "lambda", "totals", "layers", "baselines")}
    meta = props(model.metadata_props)
    assert meta["odimo.target"] == target and meta["odimo.source.sha256"] == sha256(source)
    assert model.doc_string.startswith(f"{target.upper()}, latency, given mapping: ")


def test_fixed_and_host_layers_are_reported_and_emitted_whole(tmp_path: Path) -> None:
    """depthwise_grouped on DIANA: dw is fixed on digital, the grouped conv runs on the host."""
    source = saved(tmp_path, builders.depthwise_grouped(), "dwg")
    result = pipeline.compile(
        source, CompileOptions(target="diana", mapping="all-ternary", output=tmp_path / "out.onnx")
    )
    rows = {row["name"]: row for row in result.report.to_dict()["layers"]}
    assert [rows[n]["class"] for n in ("pw1", "dw", "pw2", "grouped", "fc")] == [
        "searchable",
        "fixed",
        "searchable",
        "host",
        "searchable",
    ]
    assert rows["dw"]["split"] == {"digital": 8} and rows["dw"]["sublayers"] == ["dw/digital"]
    assert (
        rows["grouped"]["split"] == {"host": 8}
        and rows["grouped"]["cycles"] is None
        and rows["grouped"]["sublayers"] == ["grouped/host"]
    )
    model = onnx.load(str(tmp_path / "out.onnx"))
    nodes = {n.name: props(n.metadata_props) for n in model.graph.node}
    assert nodes["grouped/host"]["odimo.cu"] == "host" and nodes["dw/digital"]["odimo.weight_format"] == "int8"
    assert nodes["pw1/analog"]["odimo.weight_format"] == "ternary" and "odimo.concat_range" not in nodes["pw1/analog"]
    assert "grouped" not in load_mapping(tmp_path / "out.mapping.json").layers


@pytest.mark.parametrize(("opset", "ir_version"), [(17, 8), (13, 7)])
def test_interface_opset_and_ir_version_are_kept(tmp_path: Path, opset: int, ir_version: int) -> None:
    g = builders.GraphBuilder()
    y = g.relu(g.conv(g.relu(g.conv("x", 8, "conv1"), "relu1"), 8, "conv2"), "relu2")
    source = saved(
        tmp_path,
        g.build(g.gemm(g.flatten(g.gap(y, "gap"), "flatten"), 4, "fc"), opset=opset, ir_version=ir_version),
        "net",
    )
    original = onnx.load(str(source))
    assert cli(source, "--target", "diana", "--mapping", "io-8bit", "-o", tmp_path / "out.onnx") == 0
    for name in ("out.onnx", "out.float.onnx"):
        model = onnx.load(str(tmp_path / name))
        assert list(model.graph.input) == list(original.graph.input)
        assert list(model.graph.output) == list(original.graph.output)
        assert list(model.opset_import) == list(original.opset_import) and model.ir_version == ir_version


@pytest.mark.parametrize("target", ["diana", "darkside"])
def test_compiling_twice_gives_the_same_bytes(tmp_path: Path, target: str) -> None:
    source = saved(tmp_path)
    mapping = mapping_file(tmp_path, target, SPLIT_MAPPINGS[target])
    files = ("out.onnx", "out.float.onnx", "out.report.json", "out.mapping.json", "out.split.png")
    digests = []
    for run in ("first", "second"):
        (tmp_path / run).mkdir()
        assert (
            cli(source, "--target", target, "--mapping", mapping, "--emit", "qdq", "-o", tmp_path / run / "out.onnx")
            == 0
        )
        digests.append({name: sha256(tmp_path / run / name) for name in files})
    assert digests[0] == digests[1]


@pytest.mark.parametrize("target", ["diana", "darkside"])
def test_written_mapping_reproduces_the_model(tmp_path: Path, target: str) -> None:
    """The mapping label (baseline name or file name) stays in the report, out of the model."""
    source = saved(tmp_path)
    assert cli(source, "--target", target, "--mapping", "min-cost", "-o", tmp_path / "out.onnx") == 0
    assert (
        cli(source, "--target", target, "--mapping", tmp_path / "out.mapping.json", "-o", tmp_path / "again.onnx") == 0
    )
    assert sha256(tmp_path / "again.onnx") == sha256(tmp_path / "out.onnx")
    assert (tmp_path / "again.mapping.json").read_text() == (tmp_path / "out.mapping.json").read_text()
    assert json.loads((tmp_path / "again.report.json").read_text())["mapping"] == "out.mapping.json"


def test_written_mapping_reproduces_an_interleaved_split(tmp_path: Path) -> None:
    source = saved(tmp_path)
    assert (
        cli(
            source,
            "--target",
            "diana",
            "--mapping",
            mapping_file(tmp_path, "diana", SPLIT_MAPPINGS["diana"]),
            "-o",
            tmp_path / "out.onnx",
        )
        == 0
    )
    assert load_mapping(tmp_path / "out.mapping.json") == Assignment(
        "diana", {k: tuple(v) for k, v in SPLIT_MAPPINGS["diana"].items()}
    )
    assert (
        cli(source, "--target", "diana", "--mapping", tmp_path / "out.mapping.json", "-o", tmp_path / "again.onnx") == 0
    )
    assert sha256(tmp_path / "again.onnx") == sha256(tmp_path / "out.onnx")
    assert sha256(tmp_path / "again.float.onnx") == sha256(tmp_path / "out.float.onnx")


@pytest.mark.parametrize(
    ("fail_at", "staged"),
    [(1, False), (2, False), (3, False), (4, True)],
    ids=["float-vs-reference", "qdq-vs-float", "integer-biases-and-requant", "staged-file"],
)
def test_failed_verification_exits_3_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], fail_at: int, staged: bool
) -> None:
    """DIANA QDQ compares: (1) float partition vs reference, (2) QDQ vs float, (3) QDQ with its quantizers
    before and after the integer biases and requantized outputs, (4) the staged OUT.onnx."""
    source = saved(tmp_path)
    out = tmp_path / "out.onnx"
    out.write_bytes(b"an older output")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    calls, seen_staging = [], []
    real = pipeline.require_equivalent

    def require_equivalent(reference, candidate, probes, what, candidate_batch=None):
        calls.append(1)
        if len(calls) == fail_at:
            seen_staging.append(any(tmp_path.glob(".odimo-staging-*")))
            raise ReferenceMismatchError(f"{what} changed the network function: max |y - y_ref| = 1 > 1e-05")
        return real(reference, candidate, probes, what, candidate_batch)

    monkeypatch.setattr(pipeline, "require_equivalent", require_equivalent)
    assert cli(source, "--target", "diana", "--mapping", "io-8bit", "-o", out) == 3
    err = capsys.readouterr().err
    assert err.startswith("odimo-compile: error E900 verification-failed: ") and err.count("error E") == 1
    assert seen_staging == [staged]
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_a_crash_inside_a_stage_is_an_internal_error_naming_it_and_those_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An unexpected exception in 'discretise' (here: the cost table) is E900 internal-error, exit 3."""
    source = saved(tmp_path)
    before = {p.name for p in tmp_path.iterdir()}

    def crash(*args: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(pipeline, "cost_table", crash)
    assert cli(source, "--target", "diana", "--mapping", "io-8bit", "-o", tmp_path / "out.onnx") == 3
    err = capsys.readouterr().err
    assert err.startswith(
        "odimo-compile: error E900 internal-error: stage 'discretise' failed (after import, analyse, search): "
        "RuntimeError: boom"
    )
    assert {p.name for p in tmp_path.iterdir()} == before
