"""reorder_channels: permute producers, transparent per-channel constants and sinks; same function."""

from __future__ import annotations

import builders
import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from pass_helpers import (
    assert_same_outputs,
    canonical,
    check,
    initializer,
    mapping_of,
    node,
    plan_of,
    prefix,
    tied_branches,
)

from odimo.passes.order_channels import ChannelOrder, order_channels
from odimo.passes.reorder_channels import reorder_channels

ALTERNATING = ("analog", "digital") * 4
P = np.array([1, 3, 5, 7, 0, 2, 4, 6])  # the stable CU sort of ALTERNATING


def reorder(model, free: dict[str, tuple[str, ...]]):
    """Canonical `model`, the DIANA plan, and reorder_channels for `free` (others all digital)."""
    plan = plan_of(model, "diana")
    layers = {p.name: prefix({"digital": p.layer.geometry.c_out}) for p in plan.searchable}
    order = order_channels(plan, mapping_of(plan, {**layers, **free}).layers)
    before = model.SerializeToString()
    result = reorder_channels(model, plan.analysis.coupling, order)
    assert model.SerializeToString() == before, "the input model was modified"
    check(result.model)
    assert_same_outputs(model, result.model)
    return result


def test_producer_rows_and_sink_columns_follow_the_permutation() -> None:
    model = canonical(builders.conv_bn_relu())
    result = reorder(model, {"conv1": ALTERNATING})
    assert result.changed and result.report == {"initializers_permuted": 3, "spaces_permuted": 1}
    np.testing.assert_array_equal(initializer(result.model, "conv1.weight"), initializer(model, "conv1.weight")[P])
    np.testing.assert_array_equal(initializer(result.model, "conv1.bias"), initializer(model, "conv1.bias")[P])
    np.testing.assert_array_equal(initializer(result.model, "conv2.weight"), initializer(model, "conv2.weight")[:, P])
    np.testing.assert_array_equal(initializer(result.model, "fc.weight"), initializer(model, "fc.weight"))
    assert [n.name for n in result.model.graph.node] == [n.name for n in model.graph.node]


def test_two_free_layers_permute_one_shared_weight_on_both_axes() -> None:
    model = canonical(builders.conv_bn_relu())
    result = reorder(model, {"conv1": ALTERNATING, "conv2": ALTERNATING})
    assert result.report == {"initializers_permuted": 5, "spaces_permuted": 2}
    expected = initializer(model, "conv2.weight")[P][:, P]
    np.testing.assert_array_equal(initializer(result.model, "conv2.weight"), expected)
    np.testing.assert_array_equal(initializer(result.model, "fc.weight"), initializer(model, "fc.weight")[:, P])


def test_flatten_expands_each_channel_into_its_feature_block() -> None:
    """conv1 -> maxpool (4x4) -> flatten: fc1 column p reads feature P[p // 16] * 16 + p % 16."""
    model = canonical(builders.flatten_gemm())
    result = reorder(model, {"conv1": ALTERNATING})
    columns = (P[:, None] * 16 + np.arange(16)).reshape(-1)
    np.testing.assert_array_equal(initializer(result.model, "fc1.weight"), initializer(model, "fc1.weight")[:, columns])


def test_concat_consumer_gets_a_block_diagonal_permutation() -> None:
    model = canonical(builders.concat_branches())
    e1 = ("analog", "digital", "analog", "digital", "digital", "analog")  # digital 1,3,4 then 0,2,5
    e3 = prefix({"analog": 2, "digital": 8})  # digital 2..9 then 0,1
    result = reorder(model, {"e1": e1, "e3": e3})
    columns = np.concatenate([[1, 3, 4, 0, 2, 5], 6 + np.array([2, 3, 4, 5, 6, 7, 8, 9, 0, 1])])
    np.testing.assert_array_equal(
        initializer(result.model, "head.weight"), initializer(model, "head.weight")[:, columns]
    )
    assert result.report["spaces_permuted"] == 2


def test_transparent_per_channel_constants_are_permuted() -> None:
    model = canonical(builders.per_channel_constants())
    result = reorder(model, {"conv1": ALTERNATING})
    for name in ("scale.value", "shift.value"):
        np.testing.assert_array_equal(initializer(result.model, name), initializer(model, name)[P])


def test_depthwise_weights_and_bias_follow_their_input() -> None:
    model = canonical(builders.depthwise_grouped())
    result = reorder(model, {"pw1": ALTERNATING})
    for name in ("dw.weight", "dw.bias"):
        np.testing.assert_array_equal(initializer(result.model, name), initializer(model, name)[P])
    assert result.report == {"initializers_permuted": 5, "spaces_permuted": 1}


def test_a_bias_given_after_the_analysis_follows_the_depthwise_input() -> None:
    """set_weights gives a quantized depthwise conv with no bias one (its calibrated shift); the
    coupling, analysed before, must still permute it (zoo MixNet: exit 3 when it did not)."""
    model = canonical(builders.depthwise_grouped())
    del node(model, "dw").input[2]
    plan = plan_of(model, "diana")
    layers = {p.name: prefix({"digital": p.layer.geometry.c_out}) for p in plan.searchable}
    order = order_channels(plan, mapping_of(plan, {**layers, "pw1": ALTERNATING}).layers)
    biased = onnx.ModelProto()
    biased.CopyFrom(model)
    shift = np.arange(8, dtype=np.float32)
    biased.graph.initializer.append(numpy_helper.from_array(shift, "dw.shift"))
    node(biased, "dw").input.append("dw.shift")
    result = reorder_channels(biased, plan.analysis.coupling, order)
    np.testing.assert_array_equal(initializer(result.model, node(result.model, "dw").input[2]), shift[P])
    assert_same_outputs(biased, result.model)
    assert reorder_channels(model, plan.analysis.coupling, order).model.graph.node  # no bias: nothing to permute


def test_shared_initializer_is_copied_for_the_permuted_node() -> None:
    """conv_b reads conv_a's weight and bias: permuting conv_a must not change conv_b."""
    model = canonical(tied_branches())
    result = reorder(model, {"conv_a": ALTERNATING})
    assert list(node(result.model, "conv_a").input) == ["x", "conv_a.weight@conv_a", "conv_a.bias@conv_a"]
    assert list(node(result.model, "conv_b").input) == ["x", "conv_a.weight", "conv_a.bias"]
    np.testing.assert_array_equal(
        initializer(result.model, "conv_a.weight@conv_a"), initializer(model, "conv_a.weight")[P]
    )
    np.testing.assert_array_equal(initializer(result.model, "conv_a.weight"), initializer(model, "conv_a.weight"))


@pytest.mark.parametrize("name", sorted(builders.SMALL_GRAPHS))
def test_empty_order_declines(name: str) -> None:
    model = canonical(builders.SMALL_GRAPHS[name]())
    plan = plan_of(model, "diana")
    result = reorder_channels(model, plan.analysis.coupling, ChannelOrder({}))
    assert not result.changed and result.model is model
    assert result.report == {"initializers_permuted": 0}
