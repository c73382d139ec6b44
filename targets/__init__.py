"""Targets: the SoCs odimo maps onto, their cost models, mappings and baselines.

Each target module defines one `Target` subclass and registers an instance; importing the
modules below fills `TARGETS`. A new SoC is one new module plus its name in that import.
"""

from odimo.ir.errors import BadTargetError
from odimo.targets import darkside, diana  # noqa: F401  (each registers its target)
from odimo.targets.base import CU, TARGETS, LayerSupport, Role, Target, smooth_max


def get_target(name: str) -> Target:
    """The registered target called `name` (E150 listing the known names otherwise)."""
    try:
        return TARGETS[name]
    except KeyError:
        raise BadTargetError(
            f"unknown target '{name}'",
            fix=f"use one of {', '.join(sorted(TARGETS))}",
        ) from None


__all__ = ["CU", "TARGETS", "LayerSupport", "Role", "Target", "get_target", "smooth_max"]
