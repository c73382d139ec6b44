"""`odimo-sweep`: one compile per λ and per baseline, then the accuracy-cost Pareto front.

Each point is an `odimo-compile` run in its own process, writing into DIR/<point>/, so a crash or a
bad λ loses only that point. A point whose report exists is finished and is not recomputed, so a
sweep resumes where it stopped. Points run in a local process pool, or as Ray tasks with --ray.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from odimo.ir.errors import BadLambdasError, NoRayError, UnusableOutputPathError, UnwritableOutputError


@dataclass(frozen=True)
class SweepPoint:
    """One compile of the sweep: a searched λ or a baseline fine-tuned with the same budget."""

    name: str
    mapping: str
    lam: float | None

    def folder(self, root: Path) -> Path:
        return root / self.name

    def output(self, root: Path) -> Path:
        return self.folder(root) / "model.onnx"

    def report(self, root: Path) -> Path:
        return self.folder(root) / "model.report.json"


@dataclass(frozen=True)
class PointResult:
    point: SweepPoint
    report: dict[str, Any] | None
    error: str | None


def plan_points(lambdas: Sequence[float], baselines: Sequence[str]) -> list[SweepPoint]:
    points = [SweepPoint(f"lambda-{lam:g}", "search", lam) for lam in lambdas]
    return points + [SweepPoint(f"baseline-{name.lower()}", name.lower(), None) for name in baselines]


def point_command(model: Path, target: str, point: SweepPoint, root: Path, extra: Sequence[str]) -> list[str]:
    """The odimo-compile invocation of one point (fine-tuning baselines for the final budget)."""
    command = [
        sys.executable,
        "-m",
        "odimo.compiler.cli",
        str(model),
        "--target",
        target,
        "--mapping",
        point.mapping,
        "-o",
        str(point.output(root)),
        "--no-progress",
        *extra,
    ]
    if point.lam is not None:
        command += ["--lambda", repr(point.lam)]
    else:
        command += ["--train"]
    return command


def run_point(command: list[str], report: Path) -> tuple[dict[str, Any] | None, str | None]:
    """Run one compile; the point's report, or the last line it printed on stderr."""
    report.parent.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
        return None, f"exit {done.returncode}: {lines[0] if lines else 'no message'}"
    return json.loads(report.read_text()), None


def run_sweep(
    model: Path,
    target: str,
    points: Sequence[SweepPoint],
    root: Path,
    extra: Sequence[str],
    workers: int = 1,
    ray_address: str | None = None,
) -> list[PointResult]:
    """Run every unfinished point; finished ones are read back, failed ones reported, none lost."""
    root.mkdir(parents=True, exist_ok=True)
    results: dict[str, PointResult] = {}
    pending = []
    for point in points:
        if point.report(root).exists() and point.output(root).exists():
            results[point.name] = PointResult(point, json.loads(point.report(root).read_text()), None)
        else:
            pending.append(point)
    runner = _ray_runner(ray_address) if ray_address else _local_runner(workers)
    outcomes = runner([(point_command(model, target, p, root, extra), p.report(root)) for p in pending])
    for point, (report, error) in zip(pending, outcomes):
        results[point.name] = PointResult(point, report, error)
    return [results[p.name] for p in points]


Runner = Callable[[list[tuple[list[str], Path]]], list[tuple[dict[str, Any] | None, str | None]]]


def _local_runner(workers: int) -> Runner:
    def run(jobs: list[tuple[list[str], Path]]) -> list[tuple[dict[str, Any] | None, str | None]]:
        # Threads only wait on subprocesses: each compile is its own process.
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            return list(pool.map(lambda job: run_point(*job), jobs))

    return run


def _ray_runner(address: str) -> Runner:
    try:
        import ray
    except ImportError:
        raise NoRayError(
            "--ray needs the 'ray' package",
            f"--ray {address}",
            "pip install 'odimo[ray]' or run without --ray (local processes)",
        ) from None

    def run(jobs: list[tuple[list[str], Path]]) -> list[tuple[dict[str, Any] | None, str | None]]:
        ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
        remote = ray.remote(run_point)
        return ray.get([remote.remote(command, report) for command, report in jobs])

    return run


def check_lambdas(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or any(not math.isfinite(v) or v < 0 for v in values):
        raise BadLambdasError(
            f"--lambdas '{text}' is not a comma-separated list of finite non-negative numbers",
            f"--lambdas {text}",
            "e.g. --lambdas 0,0.25,0.5,1",
        )
    return values


def check_sweep_folder(root: Path) -> None:
    """`-o` is a folder (made if missing) in a writable parent, not a file."""
    if root.exists() and not root.is_dir():
        raise UnusableOutputPathError(
            "the sweep's -o is a file; it must be a folder", str(root), "choose a folder name, e.g. -o sweep"
        )
    existing = root if root.is_dir() else root.parent
    if not existing.is_dir():
        raise UnusableOutputPathError(
            "the folder above the sweep's -o does not exist", str(existing), "create it first"
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UnwritableOutputError("the sweep folder is not writable", str(existing), "choose a writable -o")
