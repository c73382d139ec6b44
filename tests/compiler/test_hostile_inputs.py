"""Hostile and careless inputs (sibling of test_bad_inputs.py): names that carry terminal escapes,
sizes that would exhaust memory, mapping files built to blow up a parser or a message, data with
NaN pixels or float labels, data without a test part.

Each refusal is exit 2 and one message of at most 5 lines, escaped and bounded, with nothing
written; the one accepted case (no test part) writes a valid report that says "no test accuracy".
"""

from __future__ import annotations

import json
import math
import zipfile
from pathlib import Path

import builders
import numpy as np
import onnx
import pytest
from builders import GraphBuilder
from onnx import helper
from test_bad_inputs import listing

from odimo.compiler import cli
from odimo.ir.errors import DataError
from odimo.retrain.data import load_npz

ESCAPES = "\x1b[2J\x1b]0;owned\x07\nfix: rm -rf ~"
ONE_MESSAGE = r"odimo-(compile|inspect): error (E\d{3}) ([a-z-]+): (.+)\n  where: (.+)\n  fix: (.+)\n"


def one_message(err: str) -> tuple[str, str]:
    """(code slug, text) of exactly one three-line message without raw control characters."""
    import re

    match = re.fullmatch(ONE_MESSAGE, err)
    assert match, f"not one message:\n{err!r}"
    assert not any(ord(ch) < 0x20 and ch != "\n" for ch in err), repr(err)
    return f"{match[2]} {match[3]}", err


def run(main, argv: list[str], folder: Path, capsys: pytest.CaptureFixture[str]) -> tuple[str, str]:
    before = listing(folder)
    code = main(argv)
    out, err = capsys.readouterr()
    assert (code, out) == (2, ""), err
    assert listing(folder) == before
    return one_message(err)


def saved(model: onnx.ModelProto, folder: Path) -> Path:
    path = folder / "model.onnx"
    onnx.save(model, str(path))
    return path


# --- escaped output --------------------------------------------------------------------------------


def test_escape_codes_in_a_node_name_are_escaped_in_the_message(tmp_path: Path, capsys) -> None:
    g = GraphBuilder()
    y = g.conv("x", 4, "conv")
    g.nodes.append(helper.make_node("Fancy", [y], ["fancy"], name=f"fancy{ESCAPES}", domain="com.acme"))
    model = builders.make_model(
        g.nodes,
        g.inits,
        [builders.tensor_info("x", ["batch", 3, 8, 8])],
        [builders.tensor_info("fancy", ["batch", 4, 8, 8])],
        domains={"com.acme": 1},
    )
    code, err = run(cli.inspect_main, [str(saved(model, tmp_path))], tmp_path, capsys)
    assert code == "E110 unsupported-op"
    assert "fancy\\x1b[2J\\x1b]0;owned\\x07\\nfix: rm -rf ~" in err


def test_escape_codes_in_layer_names_are_escaped_in_the_inspect_table(tmp_path: Path, capsys) -> None:
    g = GraphBuilder()
    model = g.build(g.gemm(g.flatten(g.gap(g.conv("x", 4, f"conv{ESCAPES}"), "gap"), "flatten"), 3, "fc"))
    assert cli.inspect_main([str(saved(model, tmp_path)), "--target", "diana"]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out
    assert not any(line.lstrip().startswith("fix:") for line in out.splitlines())
    assert "conv\\x1b[2J\\x1b]0;owned\\x07\\nfix: rm -rf ~" in out


def test_escape_codes_in_a_mapping_file_are_escaped(tmp_path: Path, capsys) -> None:
    model = saved(builders.conv_bn_relu(), tmp_path)
    mapping = tmp_path / "m.json"
    mapping.write_text(json.dumps({"schema": "odimo.mapping/1", "target": "diana", "layers": {ESCAPES: ["digital"]}}))
    code, err = run(cli.compile_main, [str(model), "--target", "diana", "--mapping", str(mapping)], tmp_path, capsys)
    assert code == "E310 bad-mapping" and "\\x1b[2J" in err


# --- bounded resources -------------------------------------------------------------------------


def huge_input_model() -> onnx.ModelProto:
    """x (3x100000x100000, 120 GB an image) -> conv -> gap -> flatten -> fc"""
    g = GraphBuilder(size=100_000)
    return g.build(g.gemm(g.flatten(g.gap(g.conv("x", 4, "conv"), "gap"), "flatten"), 3, "fc"))


@pytest.mark.parametrize("main", [cli.inspect_main, cli.compile_main], ids=["inspect", "compile"])
def test_an_input_too_large_for_memory_is_refused_before_allocation(main, tmp_path: Path, capsys) -> None:
    path = saved(huge_input_model(), tmp_path)
    argv = [str(path)] + (["--target", "diana", "--mapping", "all-8bit"] if main is cli.compile_main else [])
    code, err = run(main, argv, tmp_path, capsys)
    assert code == "E118 too-large" and "tensor 'x' of shape ['batch', 3, 100000, 100000]" in err


def npz_declaring(path: Path, shape: tuple[int, ...]) -> Path:
    """An .npz whose x.npy header declares `shape` (uint8) but holds no data: what loading it
    would allocate is in the header, the file itself is a few hundred bytes."""
    header = {"descr": "|u1", "fortran_order": False, "shape": shape}
    with zipfile.ZipFile(path, "w") as archive:
        with archive.open("x.npy", "w") as stream:
            np.lib.format.write_array_header_1_0(stream, header)
        with archive.open("y.npy", "w") as stream:
            np.lib.format.write_array(stream, np.zeros(4, np.int64))
    return path


def test_an_npz_declaring_more_than_memory_is_refused_before_loading(tmp_path: Path, capsys) -> None:
    data = npz_declaring(tmp_path / "big.npz", (1 << 22, 3, 512, 512))  # 3 TiB as float32
    with pytest.raises(DataError, match="the arrays declare 12.0 TiB"):
        load_npz(data)
    model = saved(builders.conv_bn_relu(), tmp_path)
    for mapping in (["--mapping", "all-8bit", "--train"], []):  # refused up front, or by the search's loader
        argv = [str(model), "--target", "diana", *mapping, "--data", f"npz:{data}"]
        code, err = run(cli.compile_main, argv, tmp_path, capsys)
        assert code == "E140 bad-data" and "more than the" in err


def test_a_deeply_nested_mapping_is_e310(tmp_path: Path, capsys) -> None:
    model = saved(builders.conv_bn_relu(), tmp_path)
    mapping = tmp_path / "deep.json"
    mapping.write_text("[" * 100_000 + "]" * 100_000)
    code, err = run(cli.compile_main, [str(model), "--target", "diana", "--mapping", str(mapping)], tmp_path, capsys)
    assert code == "E310 bad-mapping" and "nested too deeply" in err


def test_a_huge_mapping_file_is_refused_unread(tmp_path: Path, capsys) -> None:
    model = saved(builders.conv_bn_relu(), tmp_path)
    mapping = tmp_path / "huge.json"
    with mapping.open("wb") as handle:  # sparse: 100 MB long, nothing on disk
        handle.truncate(100 << 20)
    code, err = run(cli.compile_main, [str(model), "--target", "diana", "--mapping", str(mapping)], tmp_path, capsys)
    assert code == "E310 bad-mapping" and "104,857,600 bytes" in err


def test_a_message_quotes_at_most_a_few_hundred_characters_of_user_data(tmp_path: Path, capsys) -> None:
    model = saved(builders.conv_bn_relu(), tmp_path)
    mapping = tmp_path / "long.json"
    mapping.write_text(json.dumps({"schema": "odimo.mapping/1", "target": "diana", "layers": {"n" * 1_000_000: 3}}))
    code, err = run(cli.compile_main, [str(model), "--target", "diana", "--mapping", str(mapping)], tmp_path, capsys)
    assert code == "E310 bad-mapping" and len(err) < 2_000 and "more characters)" in err


# --- honest data messages and a valid report -----------------------------------------------------


def npz(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


IMAGES = np.random.default_rng(0).random((8, 3, 8, 8), dtype=np.float32)
LABELS = np.arange(8) % 3


@pytest.mark.parametrize(
    ("arrays", "said", "array"),
    [
        (
            {"x": np.where(np.arange(IMAGES.size).reshape(IMAGES.shape) == 5, np.nan, IMAGES), "y": LABELS},
            "images hold 1 NaN and 0 Inf pixel values",
            "x",
        ),
        (
            {"x": IMAGES, "y": LABELS, "x_test": np.full_like(IMAGES, np.inf), "y_test": LABELS},
            "images hold 0 NaN and 1,536 Inf pixel values",
            "x_test",
        ),
        ({"x": IMAGES, "y": LABELS.astype(np.float32)}, "labels are float32, not integers", "y"),
        ({"x": IMAGES, "y": LABELS, "x_test": IMAGES, "y_test": LABELS + 0.5}, "labels are float64", "y_test"),
    ],
    ids=["nan-pixel", "inf-test-pixels", "float-labels", "float-test-labels"],
)
def test_bad_values_in_the_data_are_named_with_their_array(arrays: dict, said: str, array: str, tmp_path: Path) -> None:
    path = npz(tmp_path / "d.npz", **arrays)
    with pytest.raises(DataError) as caught:
        load_npz(path)
    assert said in caught.value.what and caught.value.where == f"{path} (array '{array}')"


def test_data_without_a_test_part_reports_no_test_accuracy(tmp_path: Path, capsys) -> None:
    model = saved(builders.conv_bn_relu(), tmp_path)
    data = npz(tmp_path / "train-only.npz", x=IMAGES, y=LABELS)
    argv = [str(model), "--target", "diana", "--mapping", "all-8bit", "--train", "--data", f"npz:{data}"]
    code = cli.compile_main([*argv, "--epochs", "0,0,1", "--limit-batches", "1", "--no-progress"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "accuracy: no test accuracy (the data has no test part)" in out

    def no_constants(name: str) -> float:
        raise AssertionError(f"{name} in report.json")

    report = json.loads((tmp_path / "model.diana.report.json").read_text(), parse_constant=no_constants)
    assert report["accuracy"]["float"] is None and report["accuracy"]["final"] is None
    assert "onnx" not in report["accuracy"] or report["accuracy"]["onnx"] is None
    assert math.isfinite(report["accuracy"]["val"])
