"""The compile report (onnx-io.md §5): per layer split and cost, totals, baselines, coupling.

Two typed records. `MappingSummary` is what the mapping costs: the verify stage builds it, the
annotations and the `odimo.report` model metadata read it. `Report` is the whole run: built once by
the emit stage from the summary and the stage results, serialised once (`to_json`) into
OUT.report.json; the split plot and the CLI summary read it. Sweeps read the JSON files back.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from odimo.ir import names
from odimo.ir.assignment import Assignment
from odimo.passes.base import cu_ranges
from odimo.targets.base import Role
from odimo.targets.baselines import BaselineCost
from odimo.targets.costing import CostTable, CostTotals
from odimo.targets.plan import TargetPlan

SCHEMA = "odimo.report/1"


@dataclass(frozen=True)
class Totals:
    cycles: float
    latency_ms: float
    energy_uj: float

    @staticmethod
    def of(totals: CostTotals) -> Totals:
        return Totals(totals.cycles, totals.latency_ms, totals.energy_uj)

    def to_dict(self) -> dict[str, float]:
        return {"cycles": self.cycles, "latency_ms": self.latency_ms, "energy_uj": self.energy_uj}


@dataclass(frozen=True)
class LayerRow:
    """One costed layer: its split (channels per CU, original indices) and the cost of that split."""

    name: str
    op: str
    role: str  # "class" in the JSON: searchable, fixed or host
    reason: str | None
    group: int
    policy: str
    channels: dict[str, list[int]]  # CU -> original output channel indices, in CU order
    cycles: dict[str, float] | None
    latency_cycles: float | None
    energy_uj: float | None
    sublayers: tuple[str, ...]

    @property
    def split(self) -> dict[str, int]:
        return {cu: len(indices) for cu, indices in self.channels.items()}

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "op": self.op,
            "class": self.role,
            "reason": self.reason,
            "group": self.group,
            "policy": self.policy,
            "split": self.split,
            "channels": self.channels,
            "cycles": self.cycles,
            "latency_cycles": self.latency_cycles,
            "energy_uj": self.energy_uj,
            "sublayers": list(self.sublayers),
        }


@dataclass(frozen=True)
class BaselineRow:
    name: str
    cycles: float
    energy_uj: float
    searchable_cycles: float
    notes: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "cycles": self.cycles,
            "energy_uj": self.energy_uj,
            "searchable_cycles": self.searchable_cycles,
            "accuracy": None,
            "notes": list(self.notes),
        }


@dataclass(frozen=True)
class MappingSummary:
    """What a mapping costs on its target, beside the baselines: the part the model file embeds."""

    target: str
    frequency_hz: int
    cus: tuple[str, ...]
    objective: str
    lam: float | None  # None for a given mapping
    total: Totals
    searchable: Totals
    layers: tuple[LayerRow, ...]
    baselines: tuple[BaselineRow, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": {"name": self.target, "frequency_hz": self.frequency_hz, "cus": list(self.cus)},
            "objective": self.objective,
            "lambda": self.lam,
            "totals": {"all": self.total.to_dict(), "searchable": self.searchable.to_dict()},
            "layers": [row.to_dict() for row in self.layers],
            "baselines": [row.to_dict() for row in self.baselines],
        }

    def embedded_json(self) -> str:
        """The `odimo.report` model metadata: sorted keys, no spaces, so Netron shows what matters."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class Training:
    phase_seconds: dict[str, float]
    history: list[dict[str, Any]]
    epochs: tuple[int, int, int]
    data: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "phase_seconds": self.phase_seconds,
            "history": self.history,
            "epochs": list(self.epochs),
            "data": self.data,
        }


@dataclass(frozen=True)
class Emission:
    files: dict[str, str]  # file name -> sha256 of the bytes written
    max_abs_diff: float
    top1_agreement: float

    def to_dict(self) -> dict[str, Any]:
        return {"files": self.files, "max_abs_diff": self.max_abs_diff, "top1_agreement": self.top1_agreement}


@dataclass(frozen=True)
class CostGoal:
    """`--speedup X` / `--energy-saving X`: what was asked against the accurate corner, and reached."""

    objective: str
    against: str  # the corner's baseline name (All-8bit, All-conv)
    asked: float
    reached: float

    def to_dict(self) -> dict[str, Any]:
        return {"objective": self.objective, "against": self.against, "asked": self.asked, "reached": self.reached}

    def line(self) -> str:
        what = "faster" if self.objective == "latency" else "less energy"
        return f"asked {self.asked:.2f}x {what} than {self.against}: reached {self.reached:.2f}x"


@dataclass(frozen=True)
class Report:
    """One compile: where the model came from, how the mapping was obtained, what it costs and
    scores, and what was written."""

    input_file: str
    opset: int
    source_sha256: str
    mapping: str  # "search", a baseline name, a mapping file name, or "fixed"
    seed: int
    emit: str
    accuracy: dict[str, float | None]
    summary: MappingSummary
    coupling: tuple[dict[str, Any], ...]
    emission: Emission
    training: Training | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)
    goal: CostGoal | None = None

    def to_dict(self) -> dict[str, Any]:
        data = {
            "schema": SCHEMA,
            "input": {"file": self.input_file, "opset": self.opset, "sha256": self.source_sha256},
            "mapping": self.mapping,
            "seed": self.seed,
            "emit": self.emit,
            "accuracy": self.accuracy,
            **self.summary.to_dict(),
            "coupling": list(self.coupling),
            "emission": self.emission.to_dict(),
        }
        if self.notes:
            data["notes"] = list(self.notes)
        if self.training is not None:
            data["training"] = self.training.to_dict()
        if self.goal is not None:
            data["goal"] = self.goal.to_dict()
        return data

    def to_json(self) -> str:
        # allow_nan=False: NaN is not JSON; a number odimo could not measure is None (null)
        return json.dumps(self.to_dict(), indent=1, sort_keys=True, allow_nan=False) + "\n"


def mapping_summary(
    plan: TargetPlan,
    assignment: Assignment,
    costs: CostTable,
    baselines: tuple[BaselineCost, ...],
    objective: str,
    lam: float | None,
) -> MappingSummary:
    target = plan.target
    return MappingSummary(
        target=target.name,
        frequency_hz=target.frequency_hz,
        cus=target.cus,
        objective=objective,
        lam=lam,
        total=Totals.of(costs.total),
        searchable=Totals.of(costs.searchable),
        layers=tuple(_layer_row(plan, assignment, costs, p.name) for p in plan.layers),
        baselines=tuple(
            BaselineRow(b.name, b.table.total.cycles, b.table.total.energy_uj, b.table.searchable.cycles, b.notes)
            for b in baselines
        ),
    )


def coupling_rows(plan: TargetPlan) -> tuple[dict[str, Any], ...]:
    return tuple(
        {"group": g.id, "producers": list(g.producers), "rigid_because": g.rigid_because}
        for g in plan.analysis.coupling.groups
    )


def sublayer_names(layer: str, cus: tuple[str, ...], cu_order: tuple[str, ...]) -> list[str]:
    """Names split_layers gives the nodes of `layer`, in CU order."""
    return [names.sublayer(layer, cu) for cu in cu_ranges(cus, cu_order)]


def _layer_row(plan: TargetPlan, assignment: Assignment, costs: CostTable, name: str) -> LayerRow:
    layer = plan.layer(name)
    c_out = layer.layer.geometry.c_out
    cus = assignment.layers.get(name, ("host",) * c_out)
    costed = layer.support.role is not Role.HOST
    row = costs.layer(name)
    order = (*plan.target.cus, "host")
    return LayerRow(
        name=name,
        op=layer.layer.op_type,
        role=layer.support.role.value,
        reason=layer.support.reason or None,
        group=layer.group.id,
        policy=layer.policy.value,
        channels={cu: [k for k, c in enumerate(cus) if c == cu] for cu in order if cu in cus},
        cycles=dict(row.cycles) if costed else None,
        latency_cycles=row.latency if costed else None,
        energy_uj=row.energy_uj if costed else None,
        sublayers=tuple(sublayer_names(name, cus, order)),
    )
