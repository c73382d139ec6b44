"""order_channels: the per-space permutation of an assignment (method.md §7.1-7.2).

It returns no model, so the model checks run on `reorder_channels` of its result; the rest asserts
the permutations themselves and the contiguous-group precondition.
"""

from __future__ import annotations

import builders
import numpy as np
import pytest
from pass_helpers import (
    assert_same_outputs,
    canonical,
    check,
    darkside_chain,
    host_branch_add,
    mapping_of,
    plan_of,
    prefix,
)

from odimo.ir.errors import PassError
from odimo.passes.order_channels import order_channels
from odimo.passes.reorder_channels import reorder_channels

ALTERNATING = ("analog", "digital") * 4  # stable CU sort: digital 1,3,5,7 then analog 0,2,4,6
SORTED = np.array([1, 3, 5, 7, 0, 2, 4, 6])


def test_free_layer_gets_the_stable_cu_sort_of_its_channels() -> None:
    model = canonical(builders.conv_bn_relu())
    plan = plan_of(model, "diana")
    mapping = mapping_of(plan, {"conv1": ALTERNATING, "conv2": prefix({"digital": 8}), "fc": prefix({"analog": 4})})
    order = order_channels(plan, mapping.layers)
    assert list(order.perms) == ["conv1"]
    np.testing.assert_array_equal(order.perms["conv1"], SORTED)
    result = reorder_channels(model, plan.analysis.coupling, order)
    check(result.model)
    assert_same_outputs(model, result.model)


def test_permutation_covers_every_space_of_the_group() -> None:
    """conv_a and the host (dilated) conv meet at an Add: one free group, two spaces, one order."""
    model = canonical(host_branch_add())
    plan = plan_of(model, "diana")
    mapping = mapping_of(plan, {"conv_a": ALTERNATING, "fc": prefix({"digital": 4})})
    order = order_channels(plan, mapping.layers)
    assert plan.layer("conv_a").group.spaces == ("conv_a", "dilated")
    assert sorted(order.perms) == ["conv_a", "dilated"]
    np.testing.assert_array_equal(order.perms["dilated"], SORTED)
    result = reorder_channels(model, plan.analysis.coupling, order)
    check(result.model)
    assert_same_outputs(model, result.model)
    assert result.report == {"initializers_permuted": 5, "spaces_permuted": 2}  # both producers' W, B and fc


def test_cu_order_not_mapping_order_decides_the_sort() -> None:
    """Digital comes first on DIANA even where the mapping starts with analog channels."""
    model = canonical(builders.conv_bn_relu())
    plan = plan_of(model, "diana")
    conv1 = prefix({"analog": 3, "digital": 5})
    mapping = mapping_of(plan, {"conv1": conv1, "conv2": ALTERNATING, "fc": prefix({"digital": 4})})
    perms = order_channels(plan, mapping.layers).perms
    np.testing.assert_array_equal(perms["conv1"], [3, 4, 5, 6, 7, 0, 1, 2])
    np.testing.assert_array_equal(perms["conv2"], SORTED)


@pytest.mark.parametrize("target", ["diana", "darkside"])
def test_prefix_assignments_give_the_identity(target: str) -> None:
    model = canonical(builders.residual_add())
    plan = plan_of(model, target)
    first, second = plan.target.cus
    mapping = mapping_of(
        plan, {p.name: prefix({first: 3, second: p.layer.geometry.c_out - 3}) for p in plan.searchable}
    )
    order = order_channels(plan, mapping.layers)
    assert order.perms == {}
    result = reorder_channels(model, plan.analysis.coupling, order)
    assert not result.changed and result.model is model


def test_interleaved_split_of_a_residual_stream_is_refused() -> None:
    """stem shares group g1 with conv2 (the Add), so its channels must be a per-CU prefix."""
    model = canonical(builders.residual_add())
    plan = plan_of(model, "diana")
    layers = {p.name: prefix({"digital": p.layer.geometry.c_out}) for p in plan.searchable}
    layers["stem"] = ALTERNATING  # bypasses validate_mapping, as a buggy caller would
    with pytest.raises(PassError, match=r"layer 'stem' is in contiguous group g1 .* not a per-CU prefix") as err:
        order_channels(plan, layers)
    assert err.value.code == "E320" and "'conv2'" in err.value.where


def test_darkside_refuses_a_dwe_channel_before_a_cluster_channel() -> None:
    model = canonical(darkside_chain())
    plan = plan_of(model, "darkside")
    layers = {"c1": prefix({"cluster": 8}), "c2": ("dwe", "cluster") + ("cluster",) * 6}
    with pytest.raises(PassError, match=r"layer 'c2' .* not a per-CU prefix") as err:
        order_channels(plan, layers)
    assert "target 'darkside' splits every layer as a prefix" in err.value.where
