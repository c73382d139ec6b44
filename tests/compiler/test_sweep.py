"""odimo-sweep on a tiny graph: valid files, resume skips finished points, a failed point is kept apart.

One sweep (2 λ, 1 baseline, 1 baseline that cannot exist) is run once for the module: each point is
a subprocess that imports torch, so every extra run costs seconds. The Ray test needs the `ray`
package (`./setup.sh --test` installs it): without it it skips, and fails in CI.
"""

from __future__ import annotations

import json
from pathlib import Path

import builders
import onnx
import pytest
from optional import require_module

from odimo.compiler.cli import sweep_main

pytestmark = [pytest.mark.xdist_group("sweep"), pytest.mark.slow]  # one worker runs the sweep, once

ARGS = [
    "--target",
    "diana",
    "--lambdas",
    "0,1e-6",
    "--baselines",
    "all-8bit,no-such-baseline",
    "--data",
    "synthetic",
    "--epochs",
    "0,1,1",
    "--limit-batches",
    "1",
    "--act-rounding",
    "floor",
]


def run_sweep(root: Path) -> int:
    model = builders.save(builders.residual_add(), root / "res.onnx")
    return sweep_main([model, *ARGS, "-o", str(root / "sweep")])


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    root = tmp_path_factory.mktemp("sweep")
    return root, run_sweep(root)


def test_tiny_sweep_writes_front_plot_and_table(swept: tuple[Path, int]) -> None:
    root, _ = swept
    summary = json.loads((root / "sweep" / "pareto.json").read_text())
    assert summary["schema"] == "odimo.pareto/1"
    assert {p["name"] for p in summary["points"]} == {"lambda-0", "lambda-1e-06", "baseline-all-8bit"}
    assert summary["front"] and set(summary["front"]) <= {p["name"] for p in summary["points"]}
    assert all(0.0 <= p["accuracy"] <= 1.0 and p["cycles"] > 0 for p in summary["points"])
    assert (root / "sweep" / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| baseline-all-8bit | All-8bit |" in (root / "sweep" / "table.md").read_text()


def test_every_point_compiles_with_the_sweep_s_activation_rounding(swept: tuple[Path, int]) -> None:
    root, _ = swept
    for point in ("lambda-0", "lambda-1e-06", "baseline-all-8bit"):
        ops = {n.op_type for n in onnx.load(str(root / "sweep" / point / "model.onnx")).graph.node}
        assert "Floor" in ops and "QuantizeLinear" not in ops, point  # the floor chain, not Q/DQ


def test_a_failed_point_is_reported_and_the_others_kept(swept: tuple[Path, int]) -> None:
    root, code = swept
    summary = json.loads((root / "sweep" / "pareto.json").read_text())
    assert code == 1
    assert [f["name"] for f in summary["failed"]] == ["baseline-no-such-baseline"]
    assert "E310" in summary["failed"][0]["error"]
    assert "Failed: `baseline-no-such-baseline`" in (root / "sweep" / "table.md").read_text()


def test_resume_skips_finished_points(swept: tuple[Path, int]) -> None:
    root, _ = swept
    finished = root / "sweep" / "lambda-0" / "model.onnx"
    stamp = finished.stat().st_mtime_ns
    assert run_sweep(root) == 1  # the impossible point fails again; the finished ones are not redone
    assert finished.stat().st_mtime_ns == stamp


def test_ray_runs_the_same_points_on_a_local_ray_instance(tmp_path: Path) -> None:
    ray = require_module("ray")
    model = builders.save(builders.residual_add(), tmp_path / "res.onnx")
    args = [
        "--target",
        "diana",
        "--lambdas",
        "1e-6",
        "--baselines",
        "all-8bit",
        "--data",
        "synthetic",
        "--epochs",
        "0,1,1",
        "--limit-batches",
        "1",
    ]
    try:
        assert sweep_main([model, *args, "-o", str(tmp_path / "sweep"), "--ray", "local"]) == 0
    finally:
        ray.shutdown()
    summary = json.loads((tmp_path / "sweep" / "pareto.json").read_text())
    assert {p["name"] for p in summary["points"]} == {"lambda-1e-06", "baseline-all-8bit"} and not summary["failed"]


def test_ray_without_the_package_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    import builtins

    real_import = builtins.__import__

    def no_ray(name: str, *args: object, **kwargs: object):
        if name == "ray":
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    model = builders.save(builders.residual_add(), tmp_path / "res.onnx")
    code = sweep_main(
        [
            model,
            "--target",
            "diana",
            "--lambdas",
            "1e-6",
            "--data",
            "synthetic",
            "-o",
            str(tmp_path / "sweep"),
            "--ray",
            "auto",
        ]
    )
    assert code == 2
    assert "pip install 'odimo[ray]'" in capsys.readouterr().err
