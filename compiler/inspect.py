"""`odimo-inspect`: what odimo sees in a model, as JSON-ready data and as a plain-text table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from odimo.compiler.analysis import Analysis, analyse
from odimo.compiler.importer import load_model


def inspect_model(path: str | Path, target_name: str | None = None) -> dict[str, Any]:
    """Import and analyse `path`; with a target, add each layer's support and baseline costs."""
    imported = load_model(path)
    analysis = analyse(imported.model)
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
    return report


def _layer_rows(analysis: Analysis) -> list[dict[str, Any]]:
    rows = []
    for layer in analysis.layers:
        geo = layer.geometry
        group = analysis.coupling.group_of_value(layer.output)
        rows.append({
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
        })
    return rows


def render_table(report: dict[str, Any]) -> str:
    """A fixed-width table a human reads in a terminal; the JSON form carries the same data."""
    header = ["layer", "op", "kind", "cin->cout", "k", "s", "g", "out", "group"]
    extra = [k for k in ("support", "why") if any(k in row for row in report["layers"])]
    header += extra
    rows = []
    for row in report["layers"]:
        group = f"{row['group']}{' (rigid)' if row['rigid'] else ''}"
        cells = [
            row["name"], row["op"], row["kind"], f"{row['c_in']}->{row['c_out']}", "x".join(map(str, row["kernel"])),
            str(row["stride"][0]), str(row["groups"]), "x".join(map(str, row["out_hw"])), group,
        ]
        rows.append(cells + [str(row.get(k, "")) for k in extra])
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [f"{report['model']}: input {report['input']['name']} {'x'.join(map(str, report['input']['shape']))}, opset {report['opset']}"]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header, *rows]]
    return "\n".join(lines)
