"""What every target shares: its CUs, what each can run, and the network-level cost model.

A target module states its per-CU facts (`support`, `cu_latency`, powers) and, as data, how it is
searched (`SearchSpec`: the kind of supernet layer, which parameters train with which optimizer in
each phase, the λ schedule, whether weights train quantized). The layer and network arithmetic of
paper Eq. 3 (latency) and Eq. 4 (energy), hard for reports and smooth for the search, lives here
once, so a new SoC is one new module that calls `register_target`: retrain/ names no target.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import torch

from odimo.ir.errors import BadTargetError
from odimo.ir.geometry import LayerGeometry
from odimo.targets.arith import EXACT, TORCH, Arith, Number
from odimo.targets.quantization import WeightFormat

if TYPE_CHECKING:
    from odimo.targets.baselines import BaselineRecipe


class Role(enum.Enum):
    """How a costed layer takes part in the search (onnx-io.md §1.4)."""

    SEARCHABLE = "searchable"  # at least two CUs can run it: its channels are searched
    FIXED = "fixed"  # exactly one CU can run it: all channels there
    HOST = "host"  # no CU model covers it: kept whole, 0 cycles


@dataclass(frozen=True)
class CU:
    """A compute unit, its active power (P_act,i of paper Eq. 4) in mW, and its colour in plots."""

    name: str
    power_active_mw: float
    color: str = "#7f7f7f"


class SearchKind(enum.Enum):
    """What a searchable layer of the supernet computes (method.md §1-2)."""

    # Paper Eq. 5: one op on per-channel blended weights, each CU's share quantized in its format.
    WEIGHT_BLEND = "weight-blend"
    # Paper Eq. 2: the layer (first CU) and a 3x3 depthwise substitute (second CU) both run, and a
    # prefix mask over the output channels picks which one each channel takes.
    CONV_OR_SUBSTITUTE = "conv-or-substitute"


class ParamSet(enum.Enum):
    """The parameter sets of a supernet that optimizer groups name."""

    NETWORK = "network"  # the imported network's weights, biases and trained constants
    SUBSTITUTES = "substitutes"  # weights the search adds (depthwise substitutes), trained from scratch
    QUANTIZERS = "quantizers"  # weight scales and activation clips
    ARCHITECTURE = "architecture"  # θ / α, the channel-to-CU choice


@dataclass(frozen=True)
class ParamGroup:
    """One optimizer parameter group: which parameters, which optimizer, and its hyper-parameters.

    The groups of a phase that name the same optimizer share one instance; several optimizers in a
    phase step together.
    """

    params: ParamSet
    optimizer: str  # "sgd" or "adam"
    lr: float  # the rate, or with `travel` the least rate
    momentum: float = 0.0
    weight_decay: float = 0.0
    # Adam moves a parameter by at most about lr per step, so a fixed rate caps how far θ can go in a
    # short search. With `travel`, lr = travel / steps of the phase, within [lr, max_lr]: any choice
    # can cross its decision threshold within a fraction of the search, and a run of a few steps
    # does not turn the choices into noise.
    travel: float | None = None
    max_lr: float | None = None

    def rate(self, steps: int) -> float:
        if self.travel is None or steps <= 0:
            return self.lr
        return max(self.lr, min(self.travel / steps, self.max_lr or float("inf")))


@dataclass(frozen=True)
class LambdaRamp:
    """λ starts at `start`·λ and grows linearly to λ at `full_at` of the search epochs (method.md §3)."""

    start: float = 0.01
    full_at: float = 0.5


@dataclass(frozen=True)
class SearchSpec:
    """How a target is searched: everything retrain/ needs beyond the cost model, as data."""

    kind: SearchKind
    quantized_weights: bool  # weights train fake-quantized in each CU's weight format
    warmup: tuple[ParamGroup, ...]
    search: tuple[ParamGroup, ...]
    final: tuple[ParamGroup, ...]
    graph_function: str  # the search graph's function name (prefix) for this target's layers
    lambda_ramp: LambdaRamp | None = None  # None: the full λ from the first search epoch

    def groups(self, phase: str) -> tuple[ParamGroup, ...]:
        return {"warmup": self.warmup, "search": self.search, "final": self.final}[phase]


@dataclass(frozen=True)
class LayerSupport:
    """Which CUs can run a layer, and, for every CU that cannot, why (one `cu: why` per CU)."""

    role: Role
    cus: tuple[str, ...]
    reason: str = ""


def smooth_max(t: torch.Tensor, tau: float, dim: int = 0) -> torch.Tensor:
    """Σ_i softmax(t/τ)_i · t_i: the differentiable stand-in for the max of paper Eq. 3.

    It tends to the hard max as τ → 0 and to the mean as τ → ∞ (method.md §3, R5).
    """
    return (torch.softmax(t / tau, dim=dim) * t).sum(dim=dim)


class Target(abc.ABC):
    """An SoC: a fixed, ordered tuple of CUs that run disjoint output channels of a layer in parallel.

    Subclasses set the class attributes and implement `support` and `cu_latency`; instances are
    stateless, so one per target is registered in `TARGETS`.
    """

    name: ClassVar[str]
    cu_table: ClassVar[tuple[CU, ...]]  # in the fixed CU order of sub-layers and splits
    power_idle_mw: ClassVar[float]  # P_idle of paper Eq. 4
    frequency_hz: ClassVar[int] = 260_000_000
    default_tau: ClassVar[float]  # smooth-max temperature that keeps the reference λ ranges
    contiguous: ClassVar[bool]  # a searchable split must be a prefix per CU in CU order
    # The CU whose channels a substitute op with its own weights computes (Darkside: the dwe runs
    # a depthwise conv in place of the searched conv), or None if every CU runs the layer's op.
    substitute_cu: ClassVar[str | None] = None
    weight_formats: ClassVar[dict[str, WeightFormat]]  # how each CU stores weights in QDQ emission
    default_emit: ClassVar[str]  # "qdq" when the search trains quantized weights, else "float"
    default_lambda: ClassVar[float]  # λ for the short default run, the cost relative to the first CU's corner
    baselines: ClassVar[tuple[BaselineRecipe, ...]]
    search_spec: ClassVar[SearchSpec]

    @property
    def cus(self) -> tuple[str, ...]:
        return tuple(cu.name for cu in self.cu_table)

    @abc.abstractmethod
    def support(self, layer: LayerGeometry) -> LayerSupport:
        """Which CUs can run `layer` and whether its channels are searched."""

    @abc.abstractmethod
    def cu_latency(self, layer: LayerGeometry, cu: str, channels: Number, arith: Arith) -> Number:
        """Cycles for `channels` output channels of `layer` on `cu` (a CU that can run it).

        The one formula behind `latency` and `latency_torch`; zero channels must cost zero.
        """

    def latency(self, layer: LayerGeometry, cu: str, channels: float) -> float:
        """Exact cycles of `channels` output channels on `cu`; an expected count may be fractional."""
        self._check_cu(cu)
        if channels == 0:
            return 0.0
        self._check_runs(layer, cu)
        return float(self.cu_latency(layer, cu, channels, EXACT))

    def latency_torch(self, layer: LayerGeometry, cu: str, channels: torch.Tensor) -> torch.Tensor:
        """Differentiable cycles for a (real, expected) channel count tensor, elementwise."""
        self._check_cu(cu)
        self._check_runs(layer, cu)
        return self.cu_latency(layer, cu, channels, TORCH)

    def cu_cycles(self, layer: LayerGeometry, split: Mapping[str, float]) -> dict[str, float]:
        """Exact cycles per CU (every CU, in CU order) of `layer` split as `split` (CU -> channels)."""
        for cu in split:
            self._check_cu(cu)
        return {cu: self.latency(layer, cu, split.get(cu, 0)) for cu in self.cus}

    def energy(self, cycles: Mapping[str, float]) -> float:
        """Paper Eq. 4 of one layer, mW·cycles: Σ_i P_act,i · LAT_i + P_idle · max_i LAT_i."""
        active = sum(cu.power_active_mw * cycles.get(cu.name, 0.0) for cu in self.cu_table)
        return active + self.power_idle_mw * max(cycles.values(), default=0.0)

    def layer_latency(self, layer: LayerGeometry, split: Mapping[str, float]) -> float:
        """Paper Eq. 3 of one layer: the CUs run in parallel, so the slowest one sets the latency."""
        return max(self.cu_cycles(layer, split).values())

    def layer_energy(self, layer: LayerGeometry, split: Mapping[str, float]) -> float:
        return self.energy(self.cu_cycles(layer, split))

    def layer_latency_torch(
        self, layer: LayerGeometry, counts: Mapping[str, torch.Tensor], tau: float | None = None
    ) -> torch.Tensor:
        """Eq. 3 with the smooth max, for expected counts per CU (CUs not given have 0 channels)."""
        return smooth_max(self._stacked_cycles(layer, counts), self._tau(tau))

    def layer_energy_torch(
        self, layer: LayerGeometry, counts: Mapping[str, torch.Tensor], tau: float | None = None
    ) -> torch.Tensor:
        """Eq. 4 with the smooth max in the idle term (method.md §3)."""
        cycles = self._stacked_cycles(layer, counts)
        powers = [self.cu_power(cu) for cu in counts]
        active = sum(p * c for p, c in zip(powers, cycles.unbind(0)))
        return active + self.power_idle_mw * smooth_max(cycles, self._tau(tau))

    def cu_power(self, cu: str) -> float:
        """P_act of `cu` in mW."""
        self._check_cu(cu)
        return next(c.power_active_mw for c in self.cu_table if c.name == cu)

    def latency_ms(self, cycles: float) -> float:
        return cycles / self.frequency_hz * 1e3

    def energy_uj(self, mw_cycles: float) -> float:
        """mW·cycles to µJ: E = P · cycles / F."""
        return mw_cycles / self.frequency_hz * 1e3

    def _stacked_cycles(self, layer: LayerGeometry, counts: Mapping[str, torch.Tensor]) -> torch.Tensor:
        if not counts:
            raise BadTargetError(
                "no channel counts given",
                where=f"layer '{layer.name}'",
                fix=f"pass a count for at least one of {', '.join(self.cus)}",
            )
        cycles = [self.latency_torch(layer, cu, c) for cu, c in counts.items()]
        return torch.stack(torch.broadcast_tensors(*cycles))

    def _tau(self, tau: float | None) -> float:
        return self.default_tau if tau is None else tau

    def _check_cu(self, cu: str) -> None:
        if cu not in self.cus:
            raise BadTargetError(
                f"target '{self.name}' has no CU named '{cu}'",
                fix=f"use one of {', '.join(self.cus)}",
            )

    def _check_runs(self, layer: LayerGeometry, cu: str) -> None:
        support = self.support(layer)
        if cu not in support.cus:
            can = ", ".join(support.cus) or "none (a host layer)"
            raise BadTargetError(
                f"CU '{cu}' of target '{self.name}' cannot run this layer ({support.reason})",
                where=f"layer '{layer.name}'",
                fix=f"give its channels to a CU that can: {can}",
            )


TARGETS: dict[str, Target] = {}


def register_target(target: Target) -> Target:
    """Make `target` known to `get_target` under its name; a target module calls this once.

    Both search kinds choose between exactly two CUs, the first the one a channel starts on; a
    substitute target's second CU is its `substitute_cu`.
    """
    assert target.name not in TARGETS, f"target {target.name!r} registered twice"
    assert len(target.cus) == 2, f"target {target.name!r}: a search chooses between two CUs"
    substitutes = target.search_spec.kind is SearchKind.CONV_OR_SUBSTITUTE
    assert (target.substitute_cu == target.cus[1]) if substitutes else target.substitute_cu is None, target.name
    assert set(target.weight_formats) == set(target.cus), f"target {target.name!r}: one weight format per CU"
    TARGETS[target.name] = target
    return target
