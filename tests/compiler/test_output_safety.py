"""Every path odimo writes is checked before any work, and emission is all or nothing.

Sibling of test_bad_inputs.py: each refusal is exit 2 with one message, the input unchanged and no
file or folder created. Faults during emission (a write that fails, a replace that fails half-way,
a run killed with its staging folder, a second compile on the same -o) leave the previous set of
outputs whole. The read-only and full-disk cases mount a small tmpfs in a user namespace
(`unshare -rm`) and are skipped where that is not allowed.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

import builders
import onnx
import pytest
from test_bad_inputs import listing, parse_message

from odimo.compiler import cli, emit
from odimo.compiler.lock import lock_path, output_lock

BASE = ["--target", "diana", "--mapping", "all-8bit"]
OUTPUTS = ("out.onnx", "out.float.onnx", "out.report.json", "out.mapping.json", "out.split.png")


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli.compile_main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def refused(argv: list[str], folder: Path, capsys: pytest.CaptureFixture[str]) -> tuple[str, str]:
    """Exit 2, no stdout, one message of at most 5 lines, `folder` unchanged; (slug, message)."""
    before = listing(folder)
    code, out, err = run(argv, capsys)
    assert (code, out) == (2, ""), err
    assert listing(folder) == before
    assert len(err.strip().splitlines()) <= 5, err
    message = parse_message(err, "odimo-compile") if err.count("\n") == 3 else None
    return (message.slug if message else ""), err


@pytest.fixture
def model(tmp_path: Path) -> Path:
    path = tmp_path / "model.onnx"
    onnx.save(builders.conv_bn_relu(), str(path))
    return path


# --- never touch the input ---------------------------------------------------------------------


def test_report_at_the_model_is_refused(model: Path, capsys) -> None:
    original = model.read_bytes()
    slug, err = refused([str(model), *BASE, "--report", str(model)], model.parent, capsys)
    assert slug == "output-collision" and "the report (--report) is the input model" in err
    assert model.read_bytes() == original


def test_float_companion_landing_on_the_input_is_refused(tmp_path: Path, capsys) -> None:
    """net.float.onnx compiled to -o net.onnx: the companion of net.onnx is net.float.onnx."""
    model = tmp_path / "net.float.onnx"
    onnx.save(builders.conv_bn_relu(), str(model))
    slug, err = refused([str(model), *BASE, "-o", str(tmp_path / "net.onnx")], tmp_path, capsys)
    assert slug == "output-collision" and "the float companion is the input model" in err


def test_search_graph_at_the_model_is_refused(model: Path, capsys) -> None:
    argv = [str(model), "--target", "diana", "--data", "synthetic", "--save-search-graph", str(model)]
    slug, err = refused(argv, model.parent, capsys)
    assert slug == "output-collision" and "the search graph (--save-search-graph) is the input model" in err


@pytest.mark.parametrize("kind", ["hardlink", "symlink"])
def test_output_that_is_a_link_to_the_input_is_refused(kind: str, model: Path, capsys) -> None:
    out = model.parent / "out.onnx"
    (os.link if kind == "hardlink" else os.symlink)(model, out)
    slug, err = refused([str(model), *BASE, "-o", str(out)], model.parent, capsys)
    assert slug == "output-collision" and "the output path is the input model" in err


def test_output_over_the_inputs_external_data_is_refused(tmp_path: Path, capsys) -> None:
    model = tmp_path / "model.onnx"
    onnx.save(builders.conv_bn_relu(), str(model), save_as_external_data=True, location="w.bin", size_threshold=0)
    data = (tmp_path / "w.bin").read_bytes()
    slug, err = refused([str(model), *BASE, "--report", str(tmp_path / "w.bin")], tmp_path, capsys)
    assert slug == "output-collision" and "external data file 'w.bin'" in err
    assert (tmp_path / "w.bin").read_bytes() == data


@pytest.mark.parametrize(
    ("flag", "name", "said"),
    [
        ("--report", "out.mapping.json", "the report (--report) and the mapping are the same file"),
        ("--report", "out.float.onnx", "the float companion and the report (--report) are the same file"),
        ("--save-search-graph", "out.onnx", "the output path and the search graph"),
    ],
)
def test_two_outputs_on_one_path_are_refused(flag: str, name: str, said: str, model: Path, capsys) -> None:
    folder = model.parent
    argv = [str(model), "--target", "diana", "--data", "synthetic", "-o", str(folder / "out.onnx")]
    slug, err = refused([*argv, flag, str(folder / name)], folder, capsys)
    assert slug == "output-collision" and said in err


@pytest.mark.parametrize(
    ("flag", "make", "said"),
    [
        ("--report", "missing/r.json", "the folder of the report (--report) does not exist"),
        ("--report", "adir", "the report (--report) is a directory"),
        ("--save-search-graph", "missing/g.onnx", "the folder of the search graph"),
        ("--save-search-graph", "adir", "the search graph (--save-search-graph) is a directory"),
    ],
)
def test_unusable_side_paths_are_refused_up_front(flag: str, make: str, said: str, model: Path, capsys) -> None:
    (model.parent / "adir").mkdir()
    argv = [str(model), "--target", "diana", "--data", "synthetic", flag, str(model.parent / make)]
    slug, err = refused(argv, model.parent, capsys)
    assert slug == "output-path" and said in err


def test_checkpoint_folder_that_is_a_file_is_refused(model: Path, capsys) -> None:
    (model.parent / "out.ckpt").write_text("not a folder")
    argv = [str(model), "--target", "diana", "--data", "synthetic", "-o", str(model.parent / "out.onnx")]
    slug, err = refused(argv, model.parent, capsys)
    assert slug == "output-path" and "the checkpoint folder is a file" in err


# --- emission: all or nothing -----------------------------------------------------------------


@pytest.fixture
def compiled(model: Path, capsys) -> dict[str, bytes]:
    """A first compile's outputs, by file name (the set a failed second compile must leave whole)."""
    code, _, err = run([str(model), *BASE, "-o", str(model.parent / "out.onnx")], capsys)
    assert code == 0, err
    return {name: (model.parent / name).read_bytes() for name in OUTPUTS}


def unchanged(folder: Path, before: dict[str, bytes]) -> bool:
    return {name: (folder / name).read_bytes() for name in OUTPUTS} == before


def test_disk_full_while_staging_is_e130_and_keeps_the_old_outputs(
    model: Path, compiled: dict[str, bytes], capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    stage, calls = emit._stage, []

    def full_on_the_third(staging: Path, file: emit.OutputFile) -> Path:
        calls.append(file.path.name)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return stage(staging, file)

    monkeypatch.setattr(emit, "_stage", full_on_the_third)
    before = listing(model.parent)
    code, out, err = run(
        [str(model), "--target", "diana", "--mapping", "io-8bit", "-o", str(model.parent / "out.onnx")], capsys
    )
    assert (code, out) == (2, "")
    message = parse_message(err, "odimo-compile")
    assert message.slug == "unwritable" and "the disk is full" in message.what
    assert message.where == str(model.parent / calls[-1])
    assert listing(model.parent) == before and unchanged(model.parent, compiled)


def test_a_replace_failing_half_way_rolls_the_set_back(
    model: Path, compiled: dict[str, bytes], capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    replace, calls = os.replace, []

    def fail_on_the_fourth(src, dst) -> None:
        calls.append(dst)
        if len(calls) == 4:
            raise OSError(errno.EIO, "Input/output error")
        replace(src, dst)

    monkeypatch.setattr(emit.os, "replace", fail_on_the_fourth)
    before = listing(model.parent)
    code, _, err = run(
        [str(model), "--target", "diana", "--mapping", "io-8bit", "-o", str(model.parent / "out.onnx")], capsys
    )
    monkeypatch.setattr(emit.os, "replace", replace)
    assert code == 2 and parse_message(err, "odimo-compile").slug == "unwritable"
    # three files were replaced before the failure, then each was put back, the last one first
    assert len(calls) == 7 and calls[4:] == calls[2::-1]
    assert listing(model.parent) == before and unchanged(model.parent, compiled)


def test_a_killed_runs_staging_folder_is_removed_by_the_next_run(model: Path, capsys) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = model.parent / f".odimo-staging-{dead.stdout.strip()}-abc123"
    legacy = model.parent / ".odimo-staging-k2j4l1"  # named before staging folders carried a pid
    for folder in (stale, legacy):
        folder.mkdir()
        (folder / "out.onnx").write_bytes(b"half a model")
    alive = model.parent / f".odimo-staging-{os.getpid()}-live"  # a running compile's: kept
    alive.mkdir()
    code, _, err = run([str(model), *BASE, "-o", str(model.parent / "out.onnx")], capsys)
    assert code == 0, err
    assert not stale.exists() and not legacy.exists() and alive.exists()
    leftovers = {p.name for p in model.parent.iterdir()} - {*OUTPUTS, "model.onnx", alive.name}
    assert leftovers == set()


def test_a_second_compile_on_the_same_output_is_refused(model: Path, capsys) -> None:
    out = model.parent / "out.onnx"
    with output_lock(out):
        slug, err = refused([str(model), *BASE, "-o", str(out)], model.parent, capsys)
    assert slug == "output-locked" and f"pid {os.getpid()}" in err and str(out) in err
    assert not lock_path(out).exists()  # the holder removed it on the way out
    code, _, err = run([str(model), *BASE, "-o", str(out)], capsys)
    assert code == 0, err


# --- read-only and full folders (a small tmpfs) --------------------------------------------------


def in_tmpfs(tmp_path: Path, mount_options: str, argv: list[str]) -> subprocess.CompletedProcess[str]:
    """Run odimo-compile with a tmpfs mounted at tmp_path/mnt in a private mount namespace; the
    listing of the mount after the run is written to tmp_path/after.txt."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare is not installed")
    mount = tmp_path / "mnt"
    mount.mkdir()
    script = Path(sys.executable).parent / "odimo-compile"
    shell = (
        f"mount -t tmpfs -o {mount_options} none {mount} || exit 97; "
        f"{script} {' '.join(argv)} --target diana --mapping all-8bit -o {mount}/out.onnx; code=$?; "
        f"ls -A {mount} > {tmp_path}/after.txt; exit $code"
    )
    done = subprocess.run(["unshare", "-rm", "sh", "-c", shell], capture_output=True, text=True, timeout=300)
    if done.returncode == 97 or "unshare failed" in done.stderr:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()[:200]}")
    return done


@pytest.mark.parametrize(
    ("options", "said"),
    [("ro,size=1m", "is not writable (read-only file system"), ("size=64k", "free, the outputs need about")],
    ids=["read-only", "full"],
)
def test_an_unwritable_output_folder_is_refused_before_any_work(
    options: str, said: str, model: Path, tmp_path: Path
) -> None:
    done = in_tmpfs(tmp_path, options, [str(model)])
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""
    assert parse_message(done.stderr, "odimo-compile").slug == "unwritable" and said in done.stderr
    assert (tmp_path / "after.txt").read_text() == ""


def test_a_missing_model_is_e101_not_the_missing_folder_of_its_output(tmp_path: Path, capsys) -> None:
    model = tmp_path / "nowhere" / "model.onnx"
    slug, err = refused([str(model), *BASE], tmp_path, capsys)
    assert slug == "missing-file" and "the model file does not exist" in err
