"""split_layers: one sub-layer per CU joined by a Concat, names of onnx-io.md §3, same function."""

from __future__ import annotations

import builders
import numpy as np
from builders import GraphBuilder
from pass_helpers import (
    assert_same_outputs,
    canonical,
    check,
    darkside_chain,
    initializer,
    mapping_of,
    node,
    plan_of,
    prefix,
    tied_branches,
)

from odimo.ir.records import Substitute
from odimo.passes.mix_substitutes import diagonal_substitutes, mix_substitutes
from odimo.passes.order_channels import order_channels
from odimo.passes.reorder_channels import reorder_channels
from odimo.passes.split_layers import split_layers


def split(model, plan, layers, substitutes=None):
    """split_layers on `model` with the mapping `layers`, after checking the input stays untouched."""
    before = model.SerializeToString()
    result = split_layers(model, plan, layers, {} if substitutes is None else substitutes)
    assert model.SerializeToString() == before, "the input model was modified"
    check(result.model)
    return result


def attribute(n, name):
    return next(a for a in n.attribute if a.name == name)


def test_diana_prefix_split_names_sublayers_concat_and_initializers() -> None:
    model = canonical(builders.conv_bn_relu())
    plan = plan_of(model, "diana")
    mapping = mapping_of(
        plan,
        {"conv1": prefix({"analog": 8}), "conv2": prefix({"digital": 3, "analog": 5}), "fc": prefix({"digital": 4})},
    )
    result = split(model, plan, mapping.layers)
    assert_same_outputs(model, result.model)
    assert result.changed and result.report == {
        "layers_split": 1,
        "sublayers": 2,
        "layers_renamed": 2,
        "substituted": 0,
    }
    assert [n.name for n in result.model.graph.node] == [
        "conv1/analog",
        "relu1",
        "conv2/digital",
        "conv2/analog",
        "conv2/concat",
        "gap",
        "flatten",
        "fc/digital",
    ]
    concat = node(result.model, "conv2/concat")
    assert (
        concat.op_type == "Concat"
        and list(concat.input) == ["conv2/digital", "conv2/analog"]
        and list(concat.output) == ["conv2"]
    )
    assert attribute(concat, "axis").i == 1
    weight, bias = initializer(model, "conv2.weight"), initializer(model, "conv2.bias")
    np.testing.assert_array_equal(initializer(result.model, "conv2.weight/digital"), weight[:3])
    np.testing.assert_array_equal(initializer(result.model, "conv2.weight/analog"), weight[3:])
    np.testing.assert_array_equal(initializer(result.model, "conv2.bias/analog"), bias[3:])
    assert list(node(result.model, "conv2/analog").input) == ["relu1", "conv2.weight/analog", "conv2.bias/analog"]
    names = {i.name for i in result.model.graph.initializer}
    assert "conv2.weight" not in names and "conv1.weight" in names  # a renamed layer keeps its weights


def test_reorder_then_split_keeps_an_interleaved_assignment_exact() -> None:
    model = canonical(builders.per_channel_constants())
    plan = plan_of(model, "diana")
    interleaved = ("analog", "digital", "digital", "analog", "digital", "analog", "analog", "digital")
    mapping = mapping_of(plan, {"conv1": interleaved, "conv2": interleaved, "fc": prefix({"digital": 1, "analog": 3})})
    reordered = reorder_channels(model, plan.analysis.coupling, order_channels(plan, mapping.layers)).model
    result = split(reordered, plan, mapping.layers)
    assert_same_outputs(model, result.model)
    assert result.report == {"layers_split": 3, "sublayers": 6, "layers_renamed": 0, "substituted": 0}
    assert len(result.model.graph.node) == len(model.graph.node) + 2 * 3


def test_fixed_and_host_layers_are_renamed_whole() -> None:
    model = canonical(builders.depthwise_grouped())
    plan = plan_of(model, "diana")
    mapping = mapping_of(
        plan, {"pw1": prefix({"digital": 8}), "pw2": prefix({"analog": 8}), "fc": prefix({"digital": 4})}
    )
    result = split(model, plan, mapping.layers)
    assert_same_outputs(model, result.model)
    renamed = [n.name for n in result.model.graph.node if n.op_type in ("Conv", "Gemm")]
    assert renamed == ["pw1/digital", "dw/digital", "pw2/analog", "grouped/host", "fc/digital"]
    assert result.report == {"layers_split": 0, "sublayers": 0, "layers_renamed": 5, "substituted": 0}


def test_layer_without_bias_gets_zero_biases_per_sublayer() -> None:
    source = builders.conv_bn_relu()
    del node(source, "conv2").input[2]
    model = canonical(source)
    plan = plan_of(model, "diana")
    mapping = mapping_of(
        plan,
        {"conv1": prefix({"digital": 8}), "conv2": prefix({"digital": 2, "analog": 6}), "fc": prefix({"digital": 4})},
    )
    result = split(model, plan, mapping.layers)
    assert_same_outputs(model, result.model)
    np.testing.assert_array_equal(initializer(result.model, "conv2/bias/digital"), np.zeros(2, np.float32))
    assert list(node(result.model, "conv2/analog").input)[1:] == ["conv2.weight/analog", "conv2/bias/analog"]


def test_tied_layers_get_sublayer_initializers_of_their_own() -> None:
    """conv_a and conv_b share weight and bias; split differently, each needs its own W@node/<cu>."""
    model = canonical(tied_branches())
    plan = plan_of(model, "diana")
    layers = {p.name: prefix({"digital": p.layer.geometry.c_out}) for p in plan.searchable}
    mapping = mapping_of(
        plan, {**layers, "conv_a": prefix({"digital": 3, "analog": 5}), "conv_b": prefix({"digital": 6, "analog": 2})}
    )
    result = split(model, plan, mapping.layers)
    assert_same_outputs(model, result.model)
    assert list(node(result.model, "conv_b/analog").input) == [
        "x",
        "conv_a.weight@conv_b/analog",
        "conv_a.bias@conv_b/analog",
    ]
    weight = initializer(model, "conv_a.weight")
    np.testing.assert_array_equal(initializer(result.model, "conv_a.weight@conv_a/analog"), weight[3:])
    np.testing.assert_array_equal(initializer(result.model, "conv_a.weight@conv_b/analog"), weight[6:])


def test_darkside_split_slices_the_dwe_input_and_matches_the_mixed_reference() -> None:
    model = canonical(darkside_chain())
    plan = plan_of(model, "darkside")
    mapping = mapping_of(plan, {"c1": prefix({"cluster": 5, "dwe": 3}), "c2": prefix({"dwe": 8})})
    substitutes = diagonal_substitutes(model, ["c1", "c2"], "dwe")
    result = split(model, plan, mapping.layers, substitutes)
    assert_same_outputs(mix_substitutes(model, mapping.layers, substitutes).model, result.model)
    assert result.report == {"layers_split": 1, "sublayers": 3, "layers_renamed": 2, "substituted": 1}
    assert [n.name for n in result.model.graph.node] == [
        "stem/cluster",
        "stem_relu",
        "c1/cluster",
        "c1/dwe/slice",
        "c1/dwe",
        "c1/concat",
        "relu1",
        "c2/dwe",
        "relu2",
        "gap",
        "flatten",
        "fc/cluster",
    ]
    sliced = node(result.model, "c1/dwe/slice")
    assert [initializer(result.model, name).tolist() for name in sliced.input[1:]] == [[5], [8], [1]]
    dwe = node(result.model, "c1/dwe")
    assert dwe.input[0] == sliced.output[0] and attribute(dwe, "group").i == 3
    np.testing.assert_array_equal(initializer(result.model, "c1.weight/dwe"), substitutes["c1"].weight[5:])
    assert initializer(result.model, "c1.weight/cluster").shape == (5, 8, 3, 3)
    whole = node(result.model, "c2/dwe")  # all channels on the dwe: the substitute replaces the layer
    assert list(whole.output) == ["c2"] and attribute(whole, "group").i == 8
    assert [a.ints for a in whole.attribute if a.name == "strides"] == [[2, 2]]


def test_darkside_all_cluster_is_a_rename() -> None:
    model = canonical(darkside_chain())
    plan = plan_of(model, "darkside")
    mapping = mapping_of(plan, {"c1": prefix({"cluster": 8}), "c2": prefix({"cluster": 8})})
    result = split(model, plan, mapping.layers, substitutes={})
    assert_same_outputs(model, result.model)
    assert result.report == {"layers_split": 0, "sublayers": 0, "layers_renamed": 4, "substituted": 0}


def test_substitute_weights_are_the_ones_given() -> None:
    model = canonical(darkside_chain())
    plan = plan_of(model, "darkside")
    rng = np.random.default_rng(0)
    substitute = Substitute(
        "dwe", rng.normal(size=(8, 1, 3, 3)).astype(np.float32), rng.normal(size=8).astype(np.float32)
    )
    mapping = mapping_of(plan, {"c1": prefix({"cluster": 2, "dwe": 6}), "c2": prefix({"cluster": 8})})
    result = split(model, plan, mapping.layers, {"c1": substitute})
    assert_same_outputs(mix_substitutes(model, mapping.layers, {"c1": substitute}).model, result.model)
    np.testing.assert_array_equal(initializer(result.model, "c1.bias/dwe"), substitute.bias[2:])


def test_model_without_layers_declines() -> None:
    g = GraphBuilder()
    model = canonical(g.build(g.relu("x", "relu")))
    plan = plan_of(model, "diana")
    result = split(model, plan, {})
    assert not result.changed
    assert result.report == {"layers_split": 0, "sublayers": 0, "layers_renamed": 0, "substituted": 0}
