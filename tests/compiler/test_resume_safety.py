"""`--resume` through the CLI: a checkpoint of another model or other settings is refused, naming
the difference, and leaves the outputs of the run that wrote it untouched; an interrupted run says
that it kept a checkpoint instead of "nothing was written"."""

from __future__ import annotations

from pathlib import Path

import builders
import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from odimo.compiler import cli
from odimo.retrain import trainer
from odimo.targets import get_target

TRAIN = ["--target", "diana", "--data", "synthetic", "--epochs", "0,1,1", "--limit-batches", "1", "--no-progress"]


@pytest.fixture
def searched(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[Path, dict[str, bytes]]:
    """A model, a finished search into out.onnx (its checkpoint in out.ckpt/) and its outputs' bytes."""
    model = tmp_path / "model.onnx"
    onnx.save(builders.conv_bn_relu(), str(model))
    assert cli.compile_main([str(model), *TRAIN, "-o", str(tmp_path / "out.onnx")]) == 0, capsys.readouterr().err
    capsys.readouterr()
    assert (tmp_path / "out.ckpt" / "last.pt").is_file()
    return model, {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}


def resume_refused(model: Path, extra: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    code = cli.compile_main([str(model), *TRAIN, "-o", str(model.parent / "out.onnx"), "--resume", *extra])
    out, err = capsys.readouterr()
    assert (code, out) == (2, ""), err
    assert "error E330 foreign-checkpoint: cannot resume: the checkpoint was made with" in err
    assert len(err.strip().splitlines()) <= 5
    return err


def test_resume_after_the_model_was_retrained_is_refused(searched, capsys) -> None:
    model, before = searched
    retrained = onnx.load(str(model))
    weight = retrained.graph.initializer[0]
    weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) * np.float32(1.5), weight.name))
    onnx.save(retrained, str(model))
    before[model.name] = model.read_bytes()
    assert "model sha256" in resume_refused(model, [], capsys)
    assert {p.name: p.read_bytes() for p in model.parent.iterdir() if p.is_file()} == before


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        (["--seed", "5"], "seed 0, this run 5"),
        (["--lambda", "2"], f"lambda {get_target('diana').default_lambda}, this run 2.0"),
        (["--mapping", "all-8bit", "--train"], 'mapping "search", this run "'),
    ],
)
def test_resume_with_other_settings_is_refused_naming_them(searched, extra: list[str], named: str, capsys) -> None:
    model, before = searched
    assert named in resume_refused(model, extra, capsys)
    assert {p.name: p.read_bytes() for p in model.parent.iterdir() if p.is_file()} == before


def test_an_interrupted_run_says_it_kept_the_checkpoint(
    tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = tmp_path / "model.onnx"
    onnx.save(builders.conv_bn_relu(), str(model))
    run_epoch, calls = trainer._run_epoch, []

    def interrupted_in_the_second_epoch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return run_epoch(*args, **kwargs)

    monkeypatch.setattr(trainer, "_run_epoch", interrupted_in_the_second_epoch)
    code = cli.compile_main([str(model), *TRAIN, "-o", str(tmp_path / "out.onnx")])
    err = capsys.readouterr().err
    checkpoint = tmp_path / "out.ckpt" / "last.pt"
    assert code == 130 and checkpoint.is_file()
    assert err == f"odimo-compile: interrupted; kept: the checkpoint {checkpoint}; no other output was written\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx", "out.ckpt"]
