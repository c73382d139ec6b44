"""The compile report (onnx-io.md §5): per layer split and cost, totals, baselines, coupling.

Plain JSON-ready data built from frozen records; the same dict feeds OUT.report.json, the
`odimo.report` model metadata (a subset), the annotations and the split plot.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from odimo.ir.records import ImportedModel
from odimo.targets.plan import TargetPlan
from odimo.passes.base import cu_ranges
from odimo.targets.base import Role
from odimo.targets.baselines import BaselineCost
from odimo.targets.costing import CostTable, CostTotals
from odimo.ir.assignment import Assignment

SCHEMA = "odimo.report/1"
EMBEDDED_KEYS = ("target", "objective", "lambda", "totals", "layers", "baselines")


@dataclass(frozen=True)
class RunFacts:
    """How the mapping was obtained: echoed in the report and the model metadata."""

    mapping_source: str
    objective: str
    lam: float | None
    seed: int
    emit: str
    accuracy: dict[str, float | None]


def build_report(
    imported: ImportedModel,
    plan: TargetPlan,
    mapping: Assignment,
    costs: CostTable,
    baselines: tuple[BaselineCost, ...],
    facts: RunFacts,
) -> dict[str, Any]:
    target = plan.target
    return {
        "schema": SCHEMA,
        "input": {"file": imported.path.name, "opset": imported.opset, "sha256": imported.source_sha256},
        "target": {"name": target.name, "frequency_hz": target.frequency_hz, "cus": list(target.cus)},
        "mapping": facts.mapping_source,
        "objective": facts.objective,
        "lambda": facts.lam,
        "seed": facts.seed,
        "emit": facts.emit,
        "accuracy": facts.accuracy,
        "totals": {"all": _totals(costs.total), "searchable": _totals(costs.searchable)},
        "layers": [_layer_row(plan, mapping, costs, p.name) for p in plan.layers],
        "baselines": [
            {
                "name": b.name,
                "cycles": b.table.total.cycles,
                "energy_uj": b.table.total.energy_uj,
                "searchable_cycles": b.table.searchable.cycles,
                "accuracy": None,
                "notes": list(b.notes),
            }
            for b in baselines
        ],
        "coupling": [
            {"group": g.id, "producers": list(g.producers), "rigid_because": g.rigid_because}
            for g in plan.analysis.coupling.groups
        ],
    }


def embedded_json(report: dict[str, Any]) -> str:
    """The `odimo.report` model metadata: a sorted-key subset, so Netron shows what matters."""
    return json.dumps({k: report[k] for k in EMBEDDED_KEYS}, sort_keys=True, separators=(",", ":"))


def _totals(totals: CostTotals) -> dict[str, float]:
    return {"cycles": totals.cycles, "latency_ms": totals.latency_ms, "energy_uj": totals.energy_uj}


def sublayer_names(layer: str, cus: tuple[str, ...], cu_order: tuple[str, ...]) -> list[str]:
    """Names split_layers gives the nodes of `layer`, in CU order."""
    return [f"{layer}/{cu}" for cu in cu_ranges(cus, cu_order)]


def _layer_row(plan: TargetPlan, mapping: Assignment, costs: CostTable, name: str) -> dict[str, Any]:
    layer = plan.layer(name)
    c_out = layer.layer.geometry.c_out
    cus = mapping.layers.get(name, ("host",) * c_out)
    costed = layer.support.role is not Role.HOST
    row = costs.layer(name)
    order = (*plan.target.cus, "host")
    return {
        "name": name,
        "op": layer.layer.op_type,
        "class": layer.support.role.value,
        "reason": layer.support.reason or None,
        "group": layer.group.id,
        "policy": layer.policy.value,
        "split": {cu: sum(1 for c in cus if c == cu) for cu in order if cu in cus},
        "channels": {cu: [k for k, c in enumerate(cus) if c == cu] for cu in order if cu in cus},
        "cycles": dict(row.cycles) if costed else None,
        "latency_cycles": row.latency if costed else None,
        "energy_uj": row.energy_uj if costed else None,
        "sublayers": sublayer_names(name, cus, order),
    }
