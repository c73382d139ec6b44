"""Every CNN family of the zoo imports, canonicalizes and analyses, from both torch exporters."""

from __future__ import annotations

import pytest
from zoo.export import DYNAMO_XFAIL
from zoo.families import FAMILIES

from odimo.compiler.importer import load_model
from odimo.targets import get_target
from odimo.targets.plan import Policy, plan_for_target

CASES = [
    (family, exporter)
    for family in FAMILIES
    for exporter in ("torchscript", "dynamo")
    if not (exporter == "dynamo" and family in DYNAMO_XFAIL)
]

# What each family's structure must look like to the coupling analysis.
RIGID_CAUSE = {"shufflenetv2": "channel shuffle", "resnext": "grouped", "regnet": "grouped"}


@pytest.mark.parametrize(("family", "exporter"), CASES)
def test_family_imports_and_analyses(zoo_model, family: str, exporter: str) -> None:
    imported = load_model(zoo_model(family, exporter))
    plan = plan_for_target(imported.model, get_target("diana"))
    assert plan.searchable, "every family has convs DIANA can split"
    assert all(not {"Shape", "Constant", "Identity"} & {n.op_type} for n in imported.model.graph.node)
    if family in RIGID_CAUSE:
        assert any(RIGID_CAUSE[family] in (g.rigid_because or "") for g in plan.analysis.coupling.groups)
    if family in ("squeezenet", "densenet", "mobilenetv2", "flatten_fc"):
        assert any(p.policy is Policy.FREE for p in plan.searchable)


@pytest.mark.parametrize("family", ["resnet", "mobilenetv2", "squeezenet", "flatten_fc"])
def test_family_analyses_for_darkside(zoo_model, family: str) -> None:
    imported = load_model(zoo_model(family, "torchscript"))
    plan = plan_for_target(imported.model, get_target("darkside"))
    assert all(p.policy is Policy.CONTIGUOUS for p in plan.searchable)
