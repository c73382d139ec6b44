"""Coupling groups asserted exactly on the small graphs of builders.py."""

from __future__ import annotations

import builders
import numpy as np
import pytest

from odimo.compiler.canonicalize import canonicalize
from odimo.ir.analysis import analyse
from odimo.ir.coupling import Segment, view_positions


def coupling_of(model, merge_io=()):
    canonical, _ = canonicalize(model)
    import onnx

    canonical = onnx.shape_inference.infer_shapes(canonical, strict_mode=True)
    return analyse(canonical, merge_io).coupling


def groups_by_spaces(coupling) -> dict[tuple[str, ...], str | None]:
    return {g.spaces: g.rigid_because for g in coupling.groups}


def test_conv_chain_gives_one_free_group_per_conv() -> None:
    groups = groups_by_spaces(coupling_of(builders.conv_bn_relu()))
    assert groups == {("input:x",): "graph input 'x'", ("conv1",): None, ("conv2",): None, ("fc",): "graph output 'fc'"}


def test_residual_add_merges_stem_and_block_output() -> None:
    coupling = coupling_of(builders.residual_add())
    groups = groups_by_spaces(coupling)
    assert groups[("stem", "conv2")] is None
    assert groups[("conv1",)] is None
    assert coupling.group_of_layer("stem").producers == ("stem", "conv2")
    sinks = {s.node for s in coupling.dependents("stem").sinks}
    assert sinks == {"conv1", "fc"}


def test_concat_keeps_parts_independent_and_offsets_the_sink_view() -> None:
    coupling = coupling_of(builders.concat_branches())
    assert groups_by_spaces(coupling)[("e1",)] is None
    assert groups_by_spaces(coupling)[("e3",)] is None
    head = next(s for s in coupling.sinks if s.node == "head")
    assert head.view == (Segment("e1", 0, 6), Segment("e3", 0, 10))


def test_split_on_a_space_boundary_keeps_spaces_free() -> None:
    coupling = coupling_of(builders.split_branches(cut=8))
    groups = groups_by_spaces(coupling)
    assert groups[("conv_a",)] is None and groups[("conv_b",)] is None
    assert groups[("conv_l", "conv_r")] is None


def test_split_inside_a_space_makes_it_rigid() -> None:
    groups = groups_by_spaces(coupling_of(builders.split_branches(cut=5)))
    assert "cutting inside 'conv_a'" in groups[("conv_a",)]
    assert "cutting inside 'conv_b'" not in (groups[("conv_b",)] or "")


def test_se_gate_merges_with_the_gated_tensor() -> None:
    coupling = coupling_of(builders.se_block())
    assert groups_by_spaces(coupling)[("conv1", "se_expand")] is None
    reduce_sink = next(s for s in coupling.sinks if s.node == "se_reduce")
    assert reduce_sink.view == (Segment("conv1", 0, 8),)


def test_channel_shuffle_is_rigid_in_and_out() -> None:
    groups = groups_by_spaces(coupling_of(builders.channel_shuffle()))
    assert "shuffle/reshape1" in groups[("conv1",)]
    assert groups[("conv2",)] is None


def test_depthwise_is_transparent_and_grouped_conv_is_rigid() -> None:
    coupling = coupling_of(builders.depthwise_grouped())
    groups = groups_by_spaces(coupling)
    assert groups[("pw1",)] is None
    assert "grouped" in groups[("pw2",)]
    dw_params = {(p.input_index, p.axis) for p in coupling.params if p.node == "dw"}
    assert dw_params == {(1, 0), (2, 0)}
    assert coupling.dependents("pw1").exact and not coupling.dependents("pw2").exact


def test_flatten_spreads_each_channel_over_its_feature_block() -> None:
    coupling = coupling_of(builders.flatten_gemm())
    fc1 = next(s for s in coupling.sinks if s.node == "fc1")
    assert fc1.view == (Segment("conv1", 0, 8, inner=16),)
    assert groups_by_spaces(coupling)[("conv1",)] is None


def test_per_channel_constants_are_listed_with_their_axis() -> None:
    coupling = coupling_of(builders.per_channel_constants())
    params = {(p.node, p.input_index, p.axis) for p in coupling.dependents("conv1").params}
    assert params == {("scale", 1, 0), ("shift", 1, 0)}


def test_merge_io_couples_a_layer_input_to_its_output() -> None:
    coupling = coupling_of(builders.conv_bn_relu(), merge_io=("conv2",))
    assert ("conv1", "conv2") in groups_by_spaces(coupling)


@pytest.mark.parametrize(
    ("view", "perms", "expected"),
    [
        ((Segment("a", 0, 3),), {"a": np.array([2, 0, 1])}, [2, 0, 1]),
        ((Segment("a", 0, 2, inner=2),), {"a": np.array([1, 0])}, [2, 3, 0, 1]),
        ((Segment("a", 0, 2), Segment("b", 0, 2)), {"b": np.array([1, 0])}, [0, 1, 3, 2]),
    ],
)
def test_view_positions_expand_permutations(view, perms, expected) -> None:
    assert view_positions(view, perms).tolist() == expected
