"""Every option is checked before any work (sibling of test_bad_inputs.py).

A value argparse can parse but odimo cannot use (λ = NaN, a batch size of 0, a seed numpy refuses,
a CUDA device on a machine without one) is one E160 message; a value argparse cannot parse is its
usage error, a short usage line. Either way exit 2, nothing written, and no model imported: the
model file here is not even ONNX, so any refusal that came after the import would name it instead.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from test_bad_inputs import listing

from odimo.compiler import cli

ONE_MESSAGE = re.compile(r"odimo-(compile|sweep): error (E\d{3}) ([a-z-]+): (.+)\n  where: (.+)\n  fix: (.+)\n")


@pytest.fixture
def not_onnx(tmp_path: Path) -> Path:
    path = tmp_path / "model.onnx"
    path.write_text("not a model: importing it is an E103")
    return path


def refused(main, argv: list[str], folder: Path, capsys: pytest.CaptureFixture[str]) -> str:
    """Run a CLI entry point; exit 2 (returned or as argparse's SystemExit), nothing written."""
    before = listing(folder)
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = exit_.code
    out, err = capsys.readouterr()
    assert (code, out) == (2, ""), err
    assert listing(folder) == before
    assert len(err.strip().splitlines()) <= 5 and "Traceback" not in err
    return err


@pytest.mark.parametrize(
    ("extra", "said"),
    [
        (["--limit-batches", "0"], "--limit-batches must be an integer >= 1"),
        (["--limit-batches", "-1"], "--limit-batches must be an integer >= 1"),
        (["--batch-size", "0"], "--batch-size must be an integer >= 1"),
        (["--batch-size", "-4"], "--batch-size must be an integer >= 1"),
        (["--lambda=-1"], "--lambda must be a finite number >= 0, not -1"),
        (["--lambda", "nan"], "--lambda must be a finite number >= 0, not nan"),
        (["--lambda", "inf"], "--lambda must be a finite number >= 0, not inf"),
        (["--seed=-1"], "--seed must be an integer in [0, 4294967295]"),
        (["--seed", str(2**64)], "--seed must be an integer in [0, 4294967295]"),
        (["--device", "tpu"], "unknown device 'tpu'"),
        (["--mapping", "all-8bit", "--train", "--data", "bogus"], "unknown dataset spec 'bogus'"),
        (["--mapping", "all-8bit", "--train", "--data", "npz:/nonexistent/d.npz"], ".npz file not found"),
        (["--mapping", "all-8bit", "--train", "--data", "npz:"], "'npz:' names no path"),
        (["--mapping", "io-8bit", "--train", "--data", "cifar10:/nonexistent"], "CIFAR-10 folder not found"),
        (["--mapping", "min-cost", "--train", "--data", "synthetic:9"], "unknown dataset spec 'synthetic:9'"),
    ],
)
def test_bad_option_values_are_refused_before_the_import(extra: list[str], said: str, not_onnx: Path, capsys) -> None:
    err = refused(cli.compile_main, [str(not_onnx), "--target", "diana", *extra], not_onnx.parent, capsys)
    match = ONE_MESSAGE.fullmatch(err)
    assert match and match[2] in ("E160", "E140"), err
    assert said in match[4], err


def test_cuda_without_cuda_is_refused_clearly(not_onnx: Path, capsys) -> None:
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    err = refused(cli.compile_main, [str(not_onnx), "--target", "diana", "--device", "cuda"], not_onnx.parent, capsys)
    assert "CUDA was asked for, but this torch sees no CUDA device" in err and "--device cpu" in err


def test_options_of_a_given_mapping_without_training_are_still_checked(not_onnx: Path, capsys) -> None:
    argv = [str(not_onnx), "--target", "diana", "--mapping", "all-8bit", "--batch-size", "0"]
    assert "--batch-size must be" in refused(cli.compile_main, argv, not_onnx.parent, capsys)


@pytest.mark.parametrize(
    ("extra", "said"),
    [
        (["--epochs", "1,2"], "--epochs: takes three non-negative integers W,S,F, not '1,2'"),
        (["--epochs", "a,b,c"], "not 'a,b,c'"),
        (["--epochs", "0,-1,1"], "not '0,-1,1'"),
        (["--calibration-images", "-3"], "--calibration-images"),
        (["--speedup", "0.5"], "--speedup takes a number above 1"),
        (["--speedup", "nan"], "--speedup takes a number above 1"),
        (["--seed", "x"], "--seed: invalid int value"),
    ],
)
def test_unparsable_options_are_usage_errors_with_a_short_usage(
    extra: list[str], said: str, not_onnx: Path, capsys
) -> None:
    err = refused(cli.compile_main, [str(not_onnx), "--target", "diana", *extra], not_onnx.parent, capsys)
    assert err.splitlines()[0].startswith("usage: odimo-compile MODEL.onnx --target") and len(err.splitlines()) == 2
    assert said in err


@pytest.mark.parametrize(
    ("extra", "said"),
    [
        (["--lambdas", "nan"], "is not a comma-separated list of finite non-negative numbers"),
        (["--lambdas", "0,inf"], "finite non-negative"),
        (["--lambdas", "0.5,-1"], "finite non-negative"),
        (["--lambdas", "0.5", "--limit-batches", "0"], "--limit-batches must be an integer >= 1"),
        (["--lambdas", "0.5", "--seed=-2"], "--seed must be an integer"),
        (["--lambdas", "0.5", "--data", "npz:/nonexistent.npz"], ".npz file not found"),
    ],
)
def test_sweep_options_are_checked_before_any_point_runs(extra: list[str], said: str, not_onnx: Path, capsys) -> None:
    argv = [str(not_onnx), "--target", "diana", "-o", str(not_onnx.parent / "sweep"), *extra]
    err = refused(cli.sweep_main, argv, not_onnx.parent, capsys)
    assert ONE_MESSAGE.fullmatch(err) and said in err


def test_sweep_output_at_an_existing_file_is_refused(not_onnx: Path, capsys) -> None:
    argv = [str(not_onnx), "--target", "diana", "--lambdas", "0.5", "-o", str(not_onnx)]
    err = refused(cli.sweep_main, argv, not_onnx.parent, capsys)
    assert ONE_MESSAGE.fullmatch(err) and "the sweep's -o is a file" in err


def test_sweep_workers_below_one_is_a_usage_error(not_onnx: Path, capsys) -> None:
    argv = [str(not_onnx), "--target", "diana", "--lambdas", "0.5", "--workers", "0"]
    assert "--workers takes an integer >= 1" in refused(cli.sweep_main, argv, not_onnx.parent, capsys)
