"""DIANA single-layer vectors of targets.md §5.1, exact to the cycle."""

from __future__ import annotations

import math

import pytest

from odimo.ir.errors import TargetError
from odimo.ir.geometry import LayerGeometry
from odimo.targets import Role
from odimo.targets.baselines import build_baseline
from odimo.targets.diana import DIANA

conv = LayerGeometry.conv
LAYERS = {
    "A": conv("A", 16, 16, 3, 32),
    "B": conv("B", 64, 64, 3, 8),
    "C": conv("C", 32, 64, 1, 8),
    "D": conv("D", 3, 16, 3, 32),
    "E": LayerGeometry.linear("E", 64, 10),
    "F": conv("F", 256, 512, 3, 4),
    "G": conv("G", 32, 64, 3, 8),
}

# layer, c_dig, c_ana, LAT_dig, LAT_ana, u, LAT_l, E_l (mW·cycles; None where the table has none)
TABLE_5_1 = [
    ("A", 16, 0, 13_312, 0, None, 13_312, 332_267.52),
    ("A", 8, 8, 12_288, 5_811.2, 4, 12_288, 407_997.696),
    ("A", 4, 12, 11_776, 5_811.2, 4, 11_776, 395_218.176),
    ("A", 0, 16, 0, 5_811.2, 4, 5_811.2, 167_013.888),
    ("B", 64, 0, 19_456, 0, None, 19_456, 485_621.76),
    ("B", 32, 32, 9_984, 4_899.2, 4, 9_984, 334_593.696),
    ("B", 16, 48, 5_248, 4_899.2, 4, 5_248, 216_383.136),
    ("B", 0, 64, 0, 4_899.2, 4, 4_899.2, 140_803.008),
    ("C", 64, 0, 1_792, 0, None, 1_792, 44_728.32),
    ("C", 32, 32, 1_024, 401.6, 8, 1_024, 32_558.928),
    ("C", 0, 64, 0, 401.6, 8, 401.6, 11_541.984),
    ("D", 16, 0, 4_160, 0, None, 4_160, 103_833.6),
    ("D", 8, 8, 3_136, 4_875.2, None, 4_875.2, 182_919.648),
    ("D", 0, 16, 0, 4_875.2, None, 4_875.2, 140_113.248),
    ("E", 10, 0, 73.25, 0, None, 73.25, 1_828.32),
    # The two E energies are printed rounded to 3 decimals in targets.md (15,771.595, 14,780.263).
    ("E", 5, 5, 72.625, 514.275, 8, 514.275, 15_771.59475),
    ("E", 0, 10, 0, 514.275, 8, 514.275, 14_780.2635),
    ("F", 512, 0, 296_448, 0, None, 296_448, 7_399_342.08),
    ("F", 256, 256, 148_480, 19_014.4, 1, 148_480, 4_037_481.792),
    ("F", 32, 480, 19_008, 19_014.4, 1, 19_014.4, 805_933.056),
    ("F", 0, 512, 0, 19_014.4, 1, 19_014.4, 546_473.856),
    ("G", 4, 60, 2_592, 2_595.2, None, 2_595.2, None),
    ("G", 5, 59, 2_600, 2_595.2, None, 2_600, None),
]


def _implied_unroll(layer: LayerGeometry, c_ana: int, lat_ana: float) -> float:
    """u recovered from LAT_ana = 8·Cin·kx·ky + ceil512(C)·ceil128(Cin)·OX·OY/u · 18.2."""
    ox, oy = layer.out_hw
    kx, ky = layer.kernel
    steps = (lat_ana - 8 * layer.c_in * kx * ky) / 18.2
    return math.ceil(c_ana / 512) * math.ceil(layer.c_in / 128) * ox * oy / steps


@pytest.mark.parametrize("name, c_dig, c_ana, lat_dig, lat_ana, u, lat_l, energy", TABLE_5_1)
def test_layer_costs_match_table_5_1(name, c_dig, c_ana, lat_dig, lat_ana, u, lat_l, energy) -> None:
    layer = LAYERS[name]
    split = {"digital": c_dig, "analog": c_ana}
    assert DIANA.cu_cycles(layer, split) == pytest.approx({"digital": lat_dig, "analog": lat_ana}, rel=1e-9)
    assert DIANA.layer_latency(layer, split) == pytest.approx(lat_l, rel=1e-9)
    if u is not None:
        assert _implied_unroll(layer, c_ana, lat_ana) == pytest.approx(u, rel=1e-9)
    if energy is not None:
        assert DIANA.layer_energy(layer, split) == pytest.approx(energy, rel=1e-9)


def test_depthwise_is_fixed_digital_with_full_layer_cin() -> None:
    dw = conv("dw", 32, 32, 3, 16, groups=32)
    support = DIANA.support(dw)
    assert (support.role, support.cus) == (Role.FIXED, ("digital",))
    assert "analog" in support.reason
    assert DIANA.latency(dw, "digital", 32) == 6_656


@pytest.mark.parametrize("channels, lat_dig, lat_ana", [(7.5, 12_224, None), (0.5, 0, 0), (16.5, 13_376, None)])
def test_fractional_counts_floor_before_ceil(channels, lat_dig, lat_ana) -> None:
    """R1: ceilN(x) = ⌈⌊x⌋/N⌉ and the gate needs a whole channel (search-time values of §5.1)."""
    assert DIANA.latency(LAYERS["A"], "digital", channels) == lat_dig
    if lat_ana is not None:
        assert DIANA.latency(LAYERS["A"], "analog", channels) == lat_ana


def test_ox_is_the_height_axis() -> None:
    """R8: DIANA's OX is H, so only ceil16 of H pads; OX = W would give 2,944."""
    assert DIANA.latency(conv("tall", 16, 16, 3, (8, 20)), "digital", 16) == 3_520
    assert DIANA.latency(conv("wide", 16, 16, 3, (20, 8)), "digital", 16) == 2_944


@pytest.mark.parametrize(
    "name, c_star, c_star_energy",
    [("A", 0, 0), ("B", 0, 0), ("C", 0, 0), ("D", 16, None), ("E", 10, None), ("F", 32, 0), ("G", 4, None)],
)
def test_min_cost_split(name, c_star, c_star_energy) -> None:
    layer = LAYERS[name]
    latency_rule = build_baseline("Min-Cost", [layer], DIANA).mapping
    assert latency_rule.split(name).get("digital", 0) == c_star
    assert latency_rule.layers[name][:c_star] == ("digital",) * c_star  # digital is the prefix
    if c_star_energy is not None:
        energy_rule = build_baseline("Min-Cost-Energy", [layer], DIANA).mapping
        assert energy_rule.split(name).get("digital", 0) == c_star_energy


@pytest.mark.parametrize(
    "layer, role",
    [
        (conv("c", 8, 8, 3, 4), Role.SEARCHABLE),
        (LayerGeometry.linear("fc", 8, 2), Role.SEARCHABLE),
        (conv("g", 8, 8, 3, 4, groups=2), Role.HOST),
        (conv("d", 8, 8, 3, 4, dilation=2), Role.HOST),
    ],
)
def test_support_roles(layer, role) -> None:
    support = DIANA.support(layer)
    assert support.role is role
    assert (support.reason == "") == (role is Role.SEARCHABLE)


def test_analog_cannot_take_channels_of_a_depthwise_layer() -> None:
    dw = conv("dw", 32, 32, 3, 16, groups=32)
    assert DIANA.latency(dw, "analog", 0) == 0
    with pytest.raises(TargetError, match=r"(?s)E150.*analog.*'dw'.*fix: .*digital"):
        DIANA.latency(dw, "analog", 1)


def test_unknown_cu_names_the_known_ones() -> None:
    with pytest.raises(TargetError, match=r"(?s)no CU named 'ana'.*digital, analog"):
        DIANA.layer_latency(LAYERS["A"], {"ana": 16})
