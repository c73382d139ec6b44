"""Hand-made mappings to compare a search result with (method.md §8).

A target lists its baselines as recipes (`Target.baselines`); the generic ones are here, a
structural one (Darkside DWS) lives with its target. Every recipe can be costed; the mapping ones
also build a `Assignment`, which can be emitted like a searched one. Layers a CU cannot run are
pinned to the CU that can, and the reason is kept in the notes.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from odimo.ir.assignment import Assignment
from odimo.ir.errors import BadTargetError
from odimo.ir.geometry import LayerGeometry
from odimo.targets.base import Role, Target
from odimo.targets.costing import CostTable, cost_table


class Objective(enum.Enum):
    LATENCY = "latency"  # Eq. 3
    ENERGY = "energy"  # Eq. 4


@dataclass(frozen=True)
class Baseline:
    name: str
    mapping: Assignment  # every costed layer, fixed ones included
    notes: tuple[str, ...]  # pinned and host layers, with the reason


@dataclass(frozen=True)
class BaselineCost:
    name: str
    table: CostTable
    notes: tuple[str, ...]


class BaselineRecipe(Protocol):
    name: str

    def cost(self, layers: Sequence[LayerGeometry], target: Target) -> BaselineCost: ...


Split = dict[str, int]


class MappingRecipe(abc.ABC):
    """A baseline that is a mapping: `build` it, and its cost is the cost of that mapping."""

    name: str

    @abc.abstractmethod
    def build(self, layers: Sequence[LayerGeometry], target: Target) -> Baseline:
        """The baseline's mapping of `layers`, fixed layers included."""

    def cost(self, layers: Sequence[LayerGeometry], target: Target) -> BaselineCost:
        baseline = self.build(layers, target)
        return BaselineCost(self.name, cost_table(layers, target, baseline.mapping), baseline.notes)


@dataclass(frozen=True)
class AllOn(MappingRecipe):
    """Every searchable layer wholly on `cu` (All-8bit, All-Ternary, All-conv, All-DW)."""

    name: str
    cu: str

    def build(self, layers: Sequence[LayerGeometry], target: Target) -> Baseline:
        return _assemble(self.name, layers, target, lambda layer: {self.cu: layer.c_out})


@dataclass(frozen=True)
class IoOn(MappingRecipe):
    """The first and last costed layers on `io_cu`, the other searchable ones on `rest_cu` (IO-8bit)."""

    name: str
    io_cu: str
    rest_cu: str

    def build(self, layers: Sequence[LayerGeometry], target: Target) -> Baseline:
        costed = [layer.name for layer in layers if target.support(layer).role is not Role.HOST]
        edges = {costed[0], costed[-1]} if costed else set()

        def choose(layer: LayerGeometry) -> Split:
            return {self.io_cu if layer.name in edges else self.rest_cu: layer.c_out}

        return _assemble(self.name, layers, target, choose)


@dataclass(frozen=True)
class MinCost(MappingRecipe):
    """Per layer, the split of two CUs that minimises the layer's cost (accuracy-blind).

    c* = argmin_c cost(first CU: c, second CU: C − c) over integer c, ties to the largest c; the
    first CU takes the first c* channels, so the split is valid in any coupling group.
    """

    name: str
    objective: Objective

    def build(self, layers: Sequence[LayerGeometry], target: Target) -> Baseline:
        return _assemble(self.name, layers, target, lambda layer: self._best(layer, target))

    def _best(self, layer: LayerGeometry, target: Target) -> Split:
        cus = target.support(layer).cus
        if len(cus) != 2:
            raise BadTargetError(
                f"the {self.name} baseline splits a layer between two CUs; target "
                f"'{target.name}' offers {len(cus)} for this layer",
                where=f"layer '{layer.name}'",
                fix=f"leave {self.name} out of {target.name}'s baselines",
            )
        score = target.layer_latency if self.objective is Objective.LATENCY else target.layer_energy
        first, second = cus
        c_best = min(
            range(layer.c_out, -1, -1),  # `min` keeps the first minimum: the largest c
            key=lambda c: score(layer, {first: c, second: layer.c_out - c}),
        )
        return {first: c_best, second: layer.c_out - c_best}


def _assemble(
    name: str,
    layers: Sequence[LayerGeometry],
    target: Target,
    choose: Callable[[LayerGeometry], Split],
) -> Baseline:
    """A baseline mapping: `choose` splits searchable layers, fixed ones go to their only CU."""
    assignment: dict[str, tuple[str, ...]] = {}
    notes = []
    for layer in layers:
        support = target.support(layer)
        if support.role is Role.HOST:
            notes.append(f"{layer.name}: runs whole on the host, not costed ({support.reason})")
            continue
        if support.role is Role.FIXED:
            split = {support.cus[0]: layer.c_out}
            notes.append(f"{layer.name}: pinned to {support.cus[0]} ({support.reason})")
        else:
            split = choose(layer)
        assignment[layer.name] = tuple(cu for cu in target.cus for _ in range(split.get(cu, 0)))
    return Baseline(name, Assignment(target.name, assignment), tuple(notes))


def fixed_mapping(layers: Sequence[LayerGeometry], target: Target) -> Assignment:
    """Every costed layer on its only CU: the whole mapping of a model no layer of which can be split."""

    def refuse(layer: LayerGeometry) -> Split:
        raise BadTargetError(
            f"layer '{layer.name}' can be split on {target.name}, so the model has no fixed mapping",
            fix="search a mapping or give one",
        )

    return _assemble("fixed", layers, target, refuse).mapping


def corner(layers: Sequence[LayerGeometry], target: Target) -> Baseline:
    """The accurate corner: every searchable layer on the first CU (All-8bit on DIANA, All-conv on
    Darkside), where a search starts and against which speed-ups and normalised costs are counted."""
    first = target.cus[0]
    recipe = next((b for b in target.baselines if isinstance(b, AllOn) and b.cu == first), AllOn(f"All-{first}", first))
    return recipe.build(layers, target)


def baselines_for(target: Target) -> tuple[str, ...]:
    """Names of the baselines that apply to `target`, in report order."""
    return tuple(recipe.name for recipe in target.baselines)


def build_baseline(name: str, layers: Sequence[LayerGeometry], target: Target) -> Baseline:
    """The mapping of baseline `name` (a structural baseline such as DWS has none)."""
    recipe = _recipe(name, target)
    if not isinstance(recipe, MappingRecipe):
        raise BadTargetError(
            f"baseline '{name}' changes the network's structure, so it has no mapping",
            where=f"target '{target.name}'",
            fix="use baseline_costs for its cost",
        )
    return recipe.build(layers, target)


def build_baselines(layers: Sequence[LayerGeometry], target: Target) -> tuple[Baseline, ...]:
    """Every mapping baseline of `target`."""
    return tuple(recipe.build(layers, target) for recipe in target.baselines if isinstance(recipe, MappingRecipe))


def baseline_costs(layers: Sequence[LayerGeometry], target: Target) -> tuple[BaselineCost, ...]:
    """Per-layer and total cost of every baseline of `target` (what odimo-inspect prints)."""
    return tuple(recipe.cost(layers, target) for recipe in target.baselines)


def _recipe(name: str, target: Target) -> BaselineRecipe:
    for recipe in target.baselines:
        if recipe.name == name:
            return recipe
    raise BadTargetError(
        f"target '{target.name}' has no baseline '{name}'",
        fix=f"use one of {', '.join(baselines_for(target))}",
    )
