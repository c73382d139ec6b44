"""The accuracy-cost front of a sweep: pareto.json, pareto.png (paper Fig. 5) and table.md."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from odimo.compiler.plots import plt, png_bytes
from odimo.compiler.sweep import PointResult

SCHEMA = "odimo.pareto/1"


def summarize(results: Sequence[PointResult], objective: str) -> dict[str, Any]:
    """One row per point (accuracy, cycles, energy), the front's names, and the failures."""
    rows = []
    for result in results:
        if result.report is None:
            continue
        report = result.report
        accuracy = report.get("accuracy") or {}
        rows.append(
            {
                "name": result.point.name,
                "kind": "search" if result.point.lam is not None else "baseline",
                "mapping": report["mapping"],
                "lambda": result.point.lam,
                "accuracy": accuracy.get("final"),
                "accuracy_onnx": accuracy.get("onnx"),
                "float_accuracy": accuracy.get("float"),
                "cycles": report["totals"]["all"]["cycles"],
                "energy_uj": report["totals"]["all"]["energy_uj"],
            }
        )
    key = "cycles" if objective == "latency" else "energy_uj"
    front = pareto_front(rows, key)
    for row in rows:
        row["pareto"] = row["name"] in front
    return {
        "schema": SCHEMA,
        "objective": objective,
        "points": rows,
        "front": front,
        "failed": [{"name": r.point.name, "error": r.error} for r in results if r.error is not None],
    }


def deployed_accuracy(row: dict[str, Any]) -> float | None:
    """The accuracy a point is judged by: onnxruntime's on the emitted model where it was measured
    (what users deploy; torch's fake-quantized number can differ by a few images), else torch's."""
    return row["accuracy_onnx"] if row.get("accuracy_onnx") is not None else row["accuracy"]


def pareto_front(rows: Sequence[dict[str, Any]], key: str) -> list[str]:
    """Names of the points no other point beats on both deployed accuracy (higher) and `key` (lower)."""
    scored = [(r, deployed_accuracy(r)) for r in rows if deployed_accuracy(r) is not None]
    front = []
    for row, accuracy in scored:
        dominated = any(
            other_accuracy >= accuracy
            and other[key] <= row[key]
            and (other_accuracy > accuracy or other[key] < row[key])
            for other, other_accuracy in scored
        )
        if not dominated:
            front.append(row["name"])
    return sorted(front, key=lambda name: next(r[key] for r, _ in scored if r["name"] == name))


def pareto_json(summary: dict[str, Any]) -> bytes:
    return (json.dumps(summary, indent=1, sort_keys=True) + "\n").encode()


def pareto_plot(summary: dict[str, Any]) -> bytes:
    """Accuracy against cost (log), a labelled point per λ, baselines marked, the front as steps."""
    key = "cycles" if summary["objective"] == "latency" else "energy_uj"
    rows = [r for r in summary["points"] if deployed_accuracy(r) is not None]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for row in rows:
        marker, color = ("o", "#1f77b4") if row["kind"] == "search" else ("s", "#d62728")
        ax.scatter(row[key], 100 * deployed_accuracy(row), marker=marker, color=color, zorder=3)
        label = f"λ={row['lambda']:g}" if row["kind"] == "search" else row["mapping"]
        ax.annotate(
            label,
            (row[key], 100 * deployed_accuracy(row)),
            textcoords="offset points",
            xytext=(4, 4),
            fontsize="x-small",
        )
    front = [next(r for r in rows if r["name"] == name) for name in summary["front"]]
    if front:
        ax.step(
            [r[key] for r in front],
            [100 * deployed_accuracy(r) for r in front],
            where="post",
            color="#1f77b4",
            alpha=0.5,
            label="Pareto front",
        )
    floats = [r["float_accuracy"] for r in rows if r.get("float_accuracy") is not None]
    if floats:
        ax.axhline(100 * floats[0], linestyle="--", color="gray", label="float model")
    ax.set_xscale("log")
    ax.set_xlabel("predicted cycles" if key == "cycles" else "predicted energy (µJ)")
    ax.set_ylabel("test accuracy (%, onnxruntime where measured)")
    ax.scatter([], [], marker="o", color="#1f77b4", label="odimo search")
    ax.scatter([], [], marker="s", color="#d62728", label="baseline (same budget)")
    ax.legend(fontsize="small")
    return png_bytes(fig)


def pareto_table(summary: dict[str, Any]) -> str:
    """Markdown: one row per point, front marked; failures listed below."""
    lines = [
        "| point | mapping | λ | accuracy (torch) | accuracy (onnxruntime) | cycles | energy (µJ) | front |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in sorted(summary["points"], key=lambda r: r["cycles"]):
        acc = "" if row["accuracy"] is None else f"{100 * row['accuracy']:.2f} %"
        onnx_acc = "" if row["accuracy_onnx"] is None else f"{100 * row['accuracy_onnx']:.2f} %"
        lam = "" if row["lambda"] is None else f"{row['lambda']:g}"
        lines.append(
            f"| {row['name']} | {row['mapping']} | {lam} | {acc} | {onnx_acc} | "
            f"{row['cycles']:,.1f} | {row['energy_uj']:.3f} | {'★' if row['pareto'] else ''} |"
        )
    lines += [f"\nFailed: `{f['name']}`: {f['error']}" for f in summary["failed"]]
    return "\n".join(lines) + "\n"
