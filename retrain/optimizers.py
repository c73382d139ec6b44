"""Each phase's optimizer, built from the target's `SearchSpec` groups (method.md §4).

A target states its groups as data (which parameter set, which optimizer, which hyper-parameters);
the groups of a phase that name the same optimizer share one instance, and the instances of a phase
step together as one `Joint`, so the training loop sees a single optimizer per phase.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch

from odimo.retrain.supernet import Supernet
from odimo.targets.base import ParamGroup

PHASES = ("warmup", "search", "final")


class Stepper(Protocol):
    """What the loop needs of an optimizer: a torch optimizer is one, so is `Joint`."""

    param_groups: list[dict[str, Any]]

    def zero_grad(self, set_to_none: bool = True) -> None: ...
    def step(self) -> Any: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class Joint:
    """Several optimizers stepped together (SGD on weights and quantizers, Adam on α, say), each
    with its own hyper-parameters and state. With no part it is a no-op (nothing to train)."""

    def __init__(self, *parts: torch.optim.Optimizer) -> None:
        self.parts = parts

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        """Every part's groups (the same dicts, so a schedule editing `lr` reaches the parts)."""
        return [group for part in self.parts for group in part.param_groups]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for part in self.parts:
            part.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        for part in self.parts:
            part.step()

    def state_dict(self) -> dict[str, Any]:
        return {"parts": [p.state_dict() for p in self.parts]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for part, saved in zip(self.parts, state["parts"], strict=True):
            part.load_state_dict(saved)


def build_optimizers(supernet: Supernet, steps: dict[str, int]) -> dict[str, Joint]:
    """One optimizer per phase over fresh parameter groups (each optimizer owns its group dicts);
    `steps` per phase sizes the groups that state how far their parameters must be able to travel."""
    spec = supernet.spec
    return {phase: _phase_optimizer(supernet, spec.groups(phase), steps.get(phase, 0)) for phase in PHASES}


def _phase_optimizer(supernet: Supernet, groups: tuple[ParamGroup, ...], steps: int) -> Joint:
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for group in groups:
        params = supernet.parameter_set(group.params)
        if params:  # a set this model does not have (no substitutes, no searchable layer)
            by_kind.setdefault(group.optimizer, []).append(_torch_group(group, params, steps))
    return Joint(*(_OPTIMIZERS[kind](torch_groups) for kind, torch_groups in by_kind.items()))


def _torch_group(group: ParamGroup, params: list[torch.nn.Parameter], steps: int) -> dict[str, Any]:
    torch_group: dict[str, Any] = {"params": params, "lr": group.rate(steps), "weight_decay": group.weight_decay}
    if group.optimizer == "sgd":
        torch_group["momentum"] = group.momentum
    return torch_group


_OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam}
