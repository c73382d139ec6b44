"""Bad `--mapping` files and models with nothing to map, through `odimo-compile` (onnx-io.md §6).

Each case: exit code 2, one message on stderr naming what and where, and the folder unchanged.
"""

from __future__ import annotations

import json
from pathlib import Path

import builders
import onnx
import pytest
from builders import GraphBuilder

from odimo.compiler.cli import compile_main

SCHEMA = "odimo.mapping/1"
VALID = {  # residual_add, DIANA: every searchable layer, prefixes where the group is contiguous
    "stem": ["digital"] * 8,
    "conv1": ["analog", "digital"] * 4,
    "conv2": ["digital"] * 8,
    "fc": ["digital"] * 4,
}


def mapping_text(target: str = "diana", **layers: list[str] | None) -> str:
    """VALID for diana with some layers replaced (None drops one); other targets start empty."""
    base = dict(VALID) if target == "diana" else {}
    merged = {k: v for k, v in {**base, **layers}.items() if v is not None}
    return json.dumps({"schema": SCHEMA, "target": target, "layers": merged})


def listing(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def refuse(
    folder: Path,
    model: onnx.ModelProto,
    capsys: pytest.CaptureFixture[str],
    *args: str,
    code: str,
    output: str = "out.onnx",
) -> str:
    """Run odimo-compile on `model` saved as `folder`/net.onnx; assert exit 2, one `code` message, no file."""
    source = builders.save(model, folder / "net.onnx")
    before = listing(folder)
    assert compile_main([source, *args, "-o", str(folder / output)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"odimo-compile: error {code} ") and err.count("error E") == 1, err
    assert listing(folder) == before
    return err


CATALOGUE = [
    # (id, model, target, mapping file text, fragments the message must contain)
    ("not-json", builders.residual_add, "diana", '{"schema": "odimo.mapping/1",', ["not JSON"]),
    (
        "wrong-schema",
        builders.residual_add,
        "diana",
        json.dumps({"schema": "odimo.mapping/0", "target": "diana", "layers": VALID}),
        ["schema is 'odimo.mapping/0'"],
    ),
    (
        "layers-not-lists",
        builders.residual_add,
        "diana",
        json.dumps({"schema": SCHEMA, "target": "diana", "layers": {"stem": "digital"}}),
        ["layer 'stem' must map to a list"],
    ),
    (
        "wrong-target",
        builders.residual_add,
        "diana",
        mapping_text("darkside", conv1=["cluster"] * 8, conv2=["cluster"] * 8),
        ["for target 'darkside', not 'diana'"],
    ),
    (
        "unknown-layer",
        builders.residual_add,
        "diana",
        mapping_text(conv9=["digital"] * 8),
        ["layer 'conv9' is not a costed layer", "'conv9'"],
    ),
    (
        "missing-searchable",
        builders.residual_add,
        "diana",
        mapping_text(conv1=None),
        ["searchable layer 'conv1' is missing"],
    ),
    (
        "channel-count",
        builders.residual_add,
        "diana",
        mapping_text(conv1=["digital"] * 7),
        ["layer 'conv1' has 8 output channels, the mapping gives 7"],
    ),
    (
        "unknown-cu",
        builders.residual_add,
        "diana",
        mapping_text(fc=["digital", "gpu", "digital", "digital"]),
        ["layer 'fc' uses unknown CU 'gpu'"],
    ),
    (
        "cu-cannot-run",
        builders.depthwise_grouped,
        "diana",
        json.dumps(
            {
                "schema": SCHEMA,
                "target": "diana",
                "layers": {"pw1": ["digital"] * 8, "dw": ["analog"] * 8, "pw2": ["digital"] * 8, "fc": ["digital"] * 4},
            }
        ),
        ["CU 'analog' cannot run layer 'dw'", "CUs that can: digital"],
    ),
    (
        "host-layer",
        builders.depthwise_grouped,
        "diana",
        json.dumps(
            {
                "schema": SCHEMA,
                "target": "diana",
                "layers": {
                    "pw1": ["digital"] * 8,
                    "pw2": ["digital"] * 8,
                    "grouped": ["digital"] * 8,
                    "fc": ["digital"] * 4,
                },
            }
        ),
        ["layer 'grouped' runs whole on the host"],
    ),
    (
        "darkside-not-prefix",
        builders.residual_add,
        "darkside",
        mapping_text("darkside", conv1=["dwe"] + ["cluster"] * 7, conv2=["cluster"] * 8),
        ["layer 'conv1' has a non-contiguous split", "cluster then dwe"],
    ),
    (
        "residual-group-interleaved",
        builders.residual_add,
        "diana",
        mapping_text(stem=["digital", "analog"] * 4),
        ["layer 'stem'", "'conv2'", "group g1", "one range, in the order digital, analog"],
    ),
    (
        "graph-output-not-prefix",
        builders.residual_add,
        "diana",
        mapping_text(fc=["analog", "digital", "digital", "digital"]),
        ["layer 'fc'", "graph output 'fc'"],
    ),
]


@pytest.mark.parametrize(
    ("model", "target", "text", "fragments"), [c[1:] for c in CATALOGUE], ids=[c[0] for c in CATALOGUE]
)
def test_bad_mapping_is_refused_with_e310(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], model, target: str, text: str, fragments: list[str]
) -> None:
    mapping = tmp_path / "mapping.json"
    mapping.write_text(text)
    err = refuse(tmp_path, model(), capsys, "--target", target, "--mapping", str(mapping), code="E310")
    assert "bad-mapping" in err.splitlines()[0]
    for fragment in fragments:
        assert fragment in err


def test_several_bad_layers_are_named_in_one_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mapping = tmp_path / "mapping.json"
    mapping.write_text(mapping_text(conv1=["digital"] * 7, conv9=["digital"]))
    err = refuse(tmp_path, builders.residual_add(), capsys, "--target", "diana", "--mapping", str(mapping), code="E310")
    assert "where: layers 'conv9', 'conv1'" in err


def test_missing_mapping_file_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = refuse(
        tmp_path,
        builders.residual_add(),
        capsys,
        "--target",
        "diana",
        "--mapping",
        str(tmp_path / "absent.json"),
        code="E310",
    )
    assert "cannot read the mapping file" in err


def only_depthwise() -> onnx.ModelProto:
    """x -> dw (3x3, group=3) -> relu -> gap -> flatten"""
    g = GraphBuilder()
    return g.build(g.flatten(g.gap(g.relu(g.conv("x", 3, "dw", group=3), "relu"), "gap"), "flatten"))


def only_grouped() -> onnx.ModelProto:
    """x (4 ch) -> grouped (3x3, group=2) -> gap -> flatten"""
    g = GraphBuilder(channels=4)
    return g.build(g.flatten(g.gap(g.conv("x", 4, "grouped", group=2), "gap"), "flatten"))


def no_conv() -> onnx.ModelProto:
    """x -> relu -> gap -> flatten: nothing odimo maps"""
    g = GraphBuilder()
    return g.build(g.flatten(g.gap(g.relu("x", "relu"), "gap"), "flatten"))


def test_model_without_any_conv_or_gemm_is_refused_with_e120(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    err = refuse(tmp_path, no_conv(), capsys, "--target", "diana", code="E120")
    assert "net.onnx: layers found: no Conv/Gemm at all" in err


NO_SPLIT = [(only_depthwise, "diana"), (only_grouped, "diana"), (builders.depthwise_grouped, "darkside")]


@pytest.mark.parametrize(("model", "target"), NO_SPLIT)
@pytest.mark.parametrize("mapping", ["search", "min-cost"])
def test_model_with_no_splittable_layer_emits_its_fixed_mapping(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], model, target: str, mapping: str
) -> None:
    """Each layer on the only CU that runs it, annotated and verified, exit 0; the search trains nothing."""
    source = builders.save(model(), tmp_path / "net.onnx")
    args = [
        source,
        "--target",
        target,
        "--mapping",
        mapping,
        "--data",
        "npz:/nonexistent.npz",
        "-o",
        str(tmp_path / "out.onnx"),
    ]
    assert compile_main(args) == 0  # the data is never loaded: nothing to train
    notice = f"no layer of this model can be split on {target}: every layer has one CU"
    assert notice in capsys.readouterr().out
    report = json.loads((tmp_path / "out.report.json").read_text())
    assert report["notes"] == [notice] and report["accuracy"]["final"] is None
    assert report["mapping"] == ("fixed" if mapping == "search" else "Min-Cost")
    emitted = onnx.load(str(tmp_path / "out.onnx"))
    cus = {
        n.name: {p.key: p.value for p in n.metadata_props}.get("odimo.cu")
        for n in emitted.graph.node
        if n.op_type in ("Conv", "Gemm")
    }
    expected = {row["name"]: next(iter(row["split"]), "host") for row in report["layers"]}
    assert {name.split("/")[0]: cu for name, cu in cus.items()} == expected


def test_output_equal_to_the_input_is_refused_with_e130(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = refuse(
        tmp_path,
        builders.residual_add(),
        capsys,
        "--target",
        "diana",
        "--mapping",
        "all-8bit",
        code="E130",
        output="net.onnx",
    )
    assert "the output path is the input model" in err and str(tmp_path / "net.onnx") in err
