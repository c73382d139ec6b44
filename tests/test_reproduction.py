"""docs/reproduction/REPRODUCTION.md says what the committed JSON reports say.

Every generated block of the document must equal what scripts/reproduce.py renders from
docs/reproduction/reports/ now, and every report a table cites must be there and consistent.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

from odimo.compiler.pareto import deployed_accuracy

ROOT = Path(__file__).resolve().parents[1]


def _reproduce() -> ModuleType:
    spec = importlib.util.spec_from_file_location("reproduce", ROOT / "scripts" / "reproduce.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


reproduce = _reproduce()
DOCUMENT = reproduce.DOCUMENT.read_text()
BLOCKS = {m.group("name"): m.group("body") for m in reproduce.BLOCK.finditer(DOCUMENT)}


def test_the_document_has_every_generated_block_once() -> None:
    names = [m.group("name") for m in reproduce.BLOCK.finditer(DOCUMENT)]
    assert sorted(names) == sorted(reproduce.BLOCKS)


@pytest.mark.parametrize("name", sorted(reproduce.BLOCKS))
def test_each_block_matches_the_committed_json(name: str) -> None:
    assert BLOCKS[name] == reproduce.render_block(name), (
        f"block '{name}' is stale: run python scripts/reproduce.py --render-only"
    )


@pytest.mark.parametrize("sweep", [s.name for s in reproduce.SWEEPS])
def test_every_point_of_every_sweep_has_its_report_and_agrees_with_it(sweep: str) -> None:
    data = reproduce.load_sweep(reproduce.OUT, sweep)
    assert data["points"], f"sweep {sweep} has no points"
    for point in data["points"]:
        report = point["report"]
        assert report["accuracy"]["onnx"] == point["accuracy_onnx"]
        assert report["totals"]["all"]["cycles"] == pytest.approx(point["cycles"])
        assert report["objective"] == data["objective"]


def test_the_table_iv_rows_are_the_front_s_extremes() -> None:
    data = reproduce.load_sweep(reproduce.OUT, "diana-latency")
    picked = reproduce.pick_points(data)
    searched = [p for p in data["points"] if p["kind"] == "search"]
    assert picked["fast"]["cycles"] == min(p["cycles"] for p in searched if p["pareto"])
    accurate = max(deployed_accuracy(p) for p in searched if p["pareto"])  # onnxruntime's, as the front
    assert deployed_accuracy(picked["accurate"]) == accurate


def test_the_overhead_json_has_both_targets_against_both_references() -> None:
    overhead = json.loads((reproduce.OUT / "reports" / "overhead.json").read_text())
    assert {(c["target"], c["reference"] == "float") for c in overhead["cases"]} == {
        ("diana", True),
        ("diana", False),
        ("darkside", True),
        ("darkside", False),
    }


def test_the_budget_knob_gives_more_batches_for_more_minutes_within_one_epoch() -> None:
    small, large, huge = (reproduce.limit_batches(m) for m in (30, 90, 10_000))
    assert 20 <= small < large <= huge == reproduce.FULL_EPOCH_BATCHES
