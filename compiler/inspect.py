"""`odimo-inspect`: what odimo sees in a model, as JSON-ready data and as a plain-text table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from odimo.compiler.importer import load_model
from odimo.ir.analysis import Analysis, analyse
from odimo.ir.text import printable
from odimo.targets import get_target
from odimo.targets.baselines import baseline_costs
from odimo.targets.costing import CostTable
from odimo.targets.plan import TargetPlan, plan_for_target


def inspect_model(path: str | Path, target_name: str | None = None) -> dict[str, Any]:
    """Import and analyse `path`; with a target, add each layer's support and baseline costs."""
    imported = load_model(path)
    plan = plan_for_target(imported.model, get_target(target_name)) if target_name else None
    analysis = plan.analysis if plan else analyse(imported.model)
    report: dict[str, Any] = {
        "model": Path(path).name,
        "opset": imported.opset,
        "input": {"name": imported.input_name, "shape": list(imported.input_shape)},
        "rewrites": list(imported.rewrites),
        "layers": _layer_rows(analysis),
        "groups": [
            {"group": g.id, "channels": g.channels, "producers": list(g.producers), "rigid_because": g.rigid_because}
            for g in analysis.coupling.groups
        ],
    }
    if plan is not None:
        _add_target_columns(report, plan)
    return report


def _add_target_columns(report: dict[str, Any], plan: TargetPlan) -> None:
    """Each layer's support and policy, and every baseline's cycles per layer and in total."""
    costs = baseline_costs(plan.analysis.geometries, plan.target)
    report["target"] = plan.target.name
    for row in report["layers"]:
        layer = plan.layer(row["name"])
        row["support"] = layer.support.role.value
        row["why"] = layer.support.reason
        row["policy"] = layer.policy.value
        row["cycles"] = {b.name: _layer_cycles(b.table, row["name"]) for b in costs}
    report["baselines"] = [
        {
            "name": b.name,
            "cycles": b.table.total.cycles,
            "searchable_cycles": b.table.searchable.cycles,
            "energy_uj": b.table.total.energy_uj,
            "notes": list(b.notes),
        }
        for b in costs
    ]


def _layer_cycles(table: CostTable, name: str) -> float | None:
    return next((row.latency for row in table.layers if row.name == name), None)


def _layer_rows(analysis: Analysis) -> list[dict[str, Any]]:
    rows = []
    for layer in analysis.layers:
        geo = layer.geometry
        group = analysis.coupling.group_of_value(layer.output)
        rows.append(
            {
                "name": layer.node,
                "op": layer.op_type,
                "kind": geo.kind.value,
                "c_in": geo.c_in,
                "c_out": geo.c_out,
                "kernel": list(geo.kernel),
                "stride": list(geo.stride),
                "groups": geo.groups,
                "out_hw": list(geo.out_hw),
                "group": group.id,
                "rigid": group.rigid,
                "producers_in_group": len(group.producers),
            }
        )
    return rows


MAX_CELL = 120  # characters of a name in the table; --json carries it whole


def render_table(report: dict[str, Any]) -> str:
    """A fixed-width table a human reads in a terminal; the JSON form carries the same data. Names
    come from the model, so each cell is escaped (a name with an escape code could clear the
    screen) and bounded."""
    header = ["layer", "op", "kind", "cin->cout", "k", "s", "g", "out", "group"]
    extra = [k for k in ("support", "policy") if any(k in row for row in report["layers"])]
    baselines = [b["name"] for b in report.get("baselines", [])]
    header += extra + baselines
    rows = []
    for row in report["layers"]:
        group = f"{row['group']}{' (rigid)' if row['rigid'] else ''}"
        cells = [
            row["name"],
            row["op"],
            row["kind"],
            f"{row['c_in']}->{row['c_out']}",
            "x".join(map(str, row["kernel"])),
            str(row["stride"][0]),
            str(row["groups"]),
            "x".join(map(str, row["out_hw"])),
            group,
        ]
        cycles = [_cycles(row.get("cycles", {}).get(name)) for name in baselines]
        rows.append([printable(c, MAX_CELL) for c in cells + [str(row.get(k, "")) for k in extra]] + cycles)
    if baselines:
        total = (
            ["total"] + [""] * (len(header) - len(baselines) - 1) + [_cycles(b["cycles"]) for b in report["baselines"]]
        )
        rows.append(total)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        f"{printable(report['model'])}: input {printable(report['input']['name'])} "
        f"{'x'.join(map(str, report['input']['shape']))}, opset {report['opset']}"
    ]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header, *rows]]
    lines += [
        f"  {b['name']}: {b['cycles']:,.2f} cycles, {b['energy_uj']:.3f} µJ"
        + (f" ({printable('; '.join(b['notes']))})" if b["notes"] else "")
        for b in report.get("baselines", [])
    ]
    return "\n".join(lines)


def _cycles(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"
