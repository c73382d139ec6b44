"""Properties of the cost models on random layers (hypothesis, derandomized)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from odimo.ir.geometry import LayerGeometry
from odimo.targets import Role
from odimo.targets.baselines import build_baseline
from odimo.targets.darkside import DARKSIDE
from odimo.targets.diana import DIANA

FAST = settings(max_examples=40, deadline=None, derandomize=True)


@st.composite
def convs(draw, square_c: bool = False, kernels: tuple[int, ...] = (1, 3, 5, 7)) -> LayerGeometry:
    c_in = draw(st.integers(1, 300))
    c_out = c_in if square_c else draw(st.integers(1, 300))
    kernel = draw(st.sampled_from(kernels))
    hw = (draw(st.integers(1, 40)), draw(st.integers(1, 40)))
    return LayerGeometry.conv("L", c_in, c_out, kernel, hw)


linears = st.builds(LayerGeometry.linear, st.just("fc"), st.integers(1, 600), st.integers(1, 600))
depthwise = st.builds(
    lambda c, k, hw: LayerGeometry.conv("dw", c, c, k, hw, groups=c),
    st.integers(1, 300),
    st.sampled_from([3, 5]),
    st.integers(1, 40),
)


@FAST
@given(st.one_of(convs(), convs(square_c=True), linears, depthwise))
def test_latency_is_monotone_in_the_channel_count(layer) -> None:
    for target in (DIANA, DARKSIDE):
        for cu in target.support(layer).cus:
            cycles = [target.latency(layer, cu, c) for c in range(layer.c_out + 1)]
            assert cycles[0] == 0
            assert all(a <= b for a, b in zip(cycles, cycles[1:])), (target.name, cu)


def _layer_cost(name: str, layer: LayerGeometry, target, energy: bool = False) -> float:
    split = build_baseline(name, [layer], target).mapping.split(layer.name)
    return target.layer_energy(layer, split) if energy else target.layer_latency(layer, split)


@FAST
@given(st.one_of(convs(), linears))
def test_diana_min_cost_never_worse_than_a_single_cu(layer) -> None:
    for name, energy in (("Min-Cost", False), ("Min-Cost-Energy", True)):
        best = _layer_cost(name, layer, DIANA, energy)
        for single in ("All-8bit", "All-Ternary"):
            assert best <= _layer_cost(single, layer, DIANA, energy)


@FAST
@given(convs(square_c=True, kernels=(3,)))
def test_darkside_min_cost_never_worse_than_a_single_cu(layer) -> None:
    assert DARKSIDE.support(layer).role is Role.SEARCHABLE
    best = _layer_cost("Min-Cost", layer, DARKSIDE)
    for single in ("All-conv", "All-DW"):
        assert best <= _layer_cost(single, layer, DARKSIDE)
