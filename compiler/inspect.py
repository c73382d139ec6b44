"""`odimo-inspect`: what odimo sees in a model, as JSON-ready data and as a plain-text table.

A model odimo wrote (QDQ or float) is shown as its partition, read from its `odimo.*` metadata
(compiled_view.py); any other model is imported and analysed as `odimo-compile` would see it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import onnx

from odimo.compiler.compiled_view import is_compiled, read_compiled
from odimo.compiler.importer import load_model, read_model
from odimo.ir.analysis import Analysis, analyse
from odimo.ir.errors import BadTargetError
from odimo.ir.graph import opset_version, value_shape
from odimo.ir.text import printable
from odimo.targets import get_target
from odimo.targets.baselines import baseline_costs
from odimo.targets.costing import CostTable
from odimo.targets.plan import TargetPlan, plan_for_target


def inspect_model(path: str | Path, target_name: str | None = None) -> dict[str, Any]:
    """Import and analyse `path`; with a target, add each layer's support and baseline costs.

    A model odimo compiled is not imported (it is quantized, or already split): its partition is read
    back instead, and `--target`, if given, must be the one it was compiled for (when it says).
    """
    model = read_model(path)
    if is_compiled(model):
        return _compiled_report(Path(path), model, target_name)
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


def _compiled_report(path: Path, model: onnx.ModelProto, target_name: str | None) -> dict[str, Any]:
    view = read_compiled(model, str(path))
    if target_name is not None and view.target is not None and target_name != view.target:
        raise BadTargetError(
            f"the model was compiled for '{view.target}', not '{target_name}'",
            str(path),
            "drop --target: a compiled model is shown for the target it was compiled for",
        )
    initializers = {i.name for i in model.graph.initializer}
    images = [i for i in model.graph.input if i.name not in initializers]
    return {
        "model": path.name,
        "compiled": True,
        # Which of the two files this is: odimo labels both with the run's mode (odimo.emit).
        "file": "qdq" if any(n.op_type == "DequantizeLinear" for n in model.graph.node) else "float",
        "opset": opset_version(model),
        "producer": {"name": model.producer_name, "version": model.producer_version},
        "input": {"name": images[0].name, "shape": list(value_shape(images[0]))} if images else None,
        **view.to_dict(),
    }


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
    if report.get("compiled"):
        return _render_compiled(report)
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


def _render_compiled(report: dict[str, Any]) -> str:
    """Per source layer its sub-layers (CU, channels, weight format, cycles), then totals per CU,
    the report's totals and the baselines, as `odimo-compile` printed them."""
    odimo, image = report["odimo"], report["input"]
    head = f"{report['model']}: odimo {odimo.get('version', '?')} output for {odimo.get('target', '?')}"
    head += f", {report['file']} file" + (f" (run's emit: {odimo['emit']})" if "emit" in odimo else "")
    head += f", input {image['name']} {'x'.join(map(str, image['shape']))}" if image else ""
    head += f", opset {report['opset']}, producer {report['producer']['name']} {report['producer']['version']}"
    lines = [printable(head.rstrip())] + ([printable(report["summary"])] if report["summary"] else [])
    header = [
        "layer",
        "class",
        "cycles",
        "sub-layer",
        "cu",
        "channels",
        "n",
        "weights",
        "stored",
        "cu cycles",
        "concat",
    ]
    rows = []
    for layer in report["layers"]:
        for k, sub in enumerate(layer["sublayers"]):
            first = k == 0
            rows.append(
                [
                    layer["name"] if first else "",
                    (layer["class"] or "") if first else "",
                    _cycles(layer["latency_cycles"]) if first else "",
                    sub["node"],
                    sub["cu"],
                    sub["channels"],
                    str(sub["count"]),
                    sub["weight_format"],
                    sub["stored"],
                    _cycles(sub["cycles"]),
                    sub["concat_range"] or "",
                ]
            )
    rows = [[printable(c, MAX_CELL) for c in row] for row in rows]  # names come from the model: escaped
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header, *rows]]
    lines += [
        f"  {cu}: {n} sub-layer{'s' * (n != 1)}, {t['channels']} channels, {_cycles(t['cycles'])} cycles"
        for cu, t in report["cus"].items()
        for n in [t["sublayers"]]
    ]
    totals = report["totals"]
    if totals:
        every, searchable = totals["all"], totals["searchable"]
        lines.append(
            f"  total: {every['cycles']:,.2f} cycles ({every['latency_ms']:.3f} ms), {every['energy_uj']:.3f} µJ; "
            f"searchable layers {searchable['cycles']:,.2f} cycles"
        )
        lines += [
            f"  {b['name']}: {b['cycles']:,.2f} cycles, {b['energy_uj']:.3f} µJ"
            + (f" ({b['cycles'] / every['cycles']:.2f}x this model's latency)" if every["cycles"] else "")
            for b in report["baselines"]
        ]
    return "\n".join(lines)
