"""Per-layer and network cost tables of a mapping: the numbers reports and `odimo-inspect` print.

Exact (hard max, integer counts) paper Eq. 3 and Eq. 4, summed twice (targets.md §2): `total` over
every costed layer and `searchable` over the searched ones (the sum the paper reports for Darkside).
"""

from __future__ import annotations

import collections.abc as cabc
from dataclasses import dataclass

from odimo.ir.assignment import Assignment
from odimo.ir.geometry import LayerGeometry
from odimo.targets.base import Role, Target
from odimo.targets.mapping import validate_mapping


@dataclass(frozen=True)
class LayerCost:
    """One layer under one mapping; `split` and `cycles` list every CU in CU order."""

    name: str
    role: Role  # of the analysed layer (a DWS substitute takes the role of the layer it replaces)
    split: dict[str, int]
    cycles: dict[str, float]
    latency: float  # Eq. 3: the slowest CU
    energy_mw_cycles: float  # Eq. 4
    energy_uj: float


@dataclass(frozen=True)
class CostTotals:
    cycles: float
    latency_ms: float
    energy_mw_cycles: float
    energy_uj: float

    def of(self, objective: str) -> float:
        """The total the search's objective counts: cycles (latency) or mW·cycles (energy)."""
        return self.cycles if objective == "latency" else self.energy_mw_cycles


@dataclass(frozen=True)
class CostTable:
    target: str
    layers: tuple[LayerCost, ...]
    total: CostTotals  # every costed layer
    searchable: CostTotals  # searchable layers only

    def layer(self, name: str) -> LayerCost:
        return next(row for row in self.layers if row.name == name)


def layer_cost(target: Target, layer: LayerGeometry, split: cabc.Mapping[str, int], role: Role) -> LayerCost:
    """Cost `layer` with `split` (CU -> channels); a host layer gets an empty split, 0 cycles."""
    cycles = target.cu_cycles(layer, split)
    energy = target.energy(cycles)
    return LayerCost(
        name=layer.name,
        role=role,
        split={cu: split.get(cu, 0) for cu in target.cus},
        cycles=cycles,
        latency=max(cycles.values()),
        energy_mw_cycles=energy,
        energy_uj=target.energy_uj(energy),
    )


def tabulate(target: Target, rows: cabc.Sequence[LayerCost]) -> CostTable:
    """Sum `rows` into a table (Eq. 3 and Eq. 4 summed over layers run one after the other)."""
    return CostTable(
        target=target.name,
        layers=tuple(rows),
        total=_totals(target, rows),
        searchable=_totals(target, [row for row in rows if row.role is Role.SEARCHABLE]),
    )


def cost_table(layers: cabc.Sequence[LayerGeometry], target: Target, mapping: Assignment) -> CostTable:
    """The cost of `mapping` on `layers` (validated first; fixed layers may be omitted)."""
    full = validate_mapping(mapping, layers, target)
    rows = []
    for layer in layers:
        split = full.split(layer.name) if layer.name in full.layers else {}
        rows.append(layer_cost(target, layer, split, target.support(layer).role))
    return tabulate(target, rows)


def _totals(target: Target, rows: cabc.Sequence[LayerCost]) -> CostTotals:
    cycles = sum(row.latency for row in rows)
    energy = sum(row.energy_mw_cycles for row in rows)
    return CostTotals(
        cycles=cycles,
        latency_ms=target.latency_ms(cycles),
        energy_mw_cycles=energy,
        energy_uj=target.energy_uj(energy),
    )
