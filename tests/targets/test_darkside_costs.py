"""Darkside single-layer vectors of targets.md §5.3, exact to the cycle."""

from __future__ import annotations

import pytest

from odimo.ir.geometry import LayerGeometry
from odimo.targets import Role
from odimo.targets.darkside import DARKSIDE

conv = LayerGeometry.conv

# C, (H, W), k (cluster), LAT_cl, LAT_dwe, E_l (None where the table has none). DWE gets C − k.
TABLE_5_3 = [
    (128, (8, 8), 128, 527_232, 0, 89_270_922.24),
    (128, (8, 8), 96, 397_728, 674, 67_421_947.28),
    (128, (8, 8), 64, 268_224, 1_348, 45_572_972.32),
    (128, (8, 8), 8, 41_592, 2_696, 7_356_926.72),
    (128, (8, 8), 0, 0, 2_696, 321_686.72),
    (512, (2, 2), 512, 2_075_520, 0, 351_427_046.4),
    (512, (2, 2), 256, 1_042_368, 688, None),
    (512, (2, 2), 4, 25_359, 1_376, 4_454_337.56),
    (512, (2, 2), 0, 0, 1_376, 164_184.32),
    (1024, (1, 1), 1024, 8_279_808, 0, None),
    (1024, (1, 1), 16, 147_516, 1_386, None),
    (1024, (1, 1), 0, 0, 1_408, None),
    (128, (56, 56), 128, 25_834_368, 0, None),
    (128, (56, 56), 64, 13_142_976, 52_228, None),
    (128, (56, 56), 0, 0, 104_456, None),
    (64, (6, 10), 64, 201_888, 0, None),
    (64, (6, 10), 0, 0, 1_356, None),
]


@pytest.mark.parametrize("c, hw, k, lat_cl, lat_dwe, energy", TABLE_5_3)
def test_layer_costs_match_table_5_3(c, hw, k, lat_cl, lat_dwe, energy) -> None:
    layer = conv("L", c, c, 3, hw)
    split = {"cluster": k, "dwe": c - k}
    assert DARKSIDE.support(layer).role is Role.SEARCHABLE
    assert DARKSIDE.cu_cycles(layer, split) == {"cluster": lat_cl, "dwe": lat_dwe}
    assert DARKSIDE.layer_latency(layer, split) == max(lat_cl, lat_dwe)
    if energy is not None:
        assert DARKSIDE.layer_energy(layer, split) == pytest.approx(energy, rel=1e-9)


def test_empty_cluster_costs_nothing() -> None:
    """R6: the reference still charges im2col with 0 conv channels (9,216 cycles at C=128, 8x8)."""
    layer = conv("L", 128, 128, 3, 8)
    assert DARKSIDE.latency(layer, "cluster", 0) == 0


def test_pointwise_conv_uses_the_same_cluster_conv_model() -> None:
    pw = conv("pw", 128, 128, 1, 8)
    assert DARKSIDE.support(pw).cus == ("cluster",)
    assert DARKSIDE.latency(pw, "cluster", 128) == 60_288


def test_fixed_layer_models() -> None:
    """Depthwise non-3x3 and linear run on the cluster with the PLiNIO GAP8 models (§4)."""
    dw5 = conv("dw5", 32, 32, 5, (4, 6), groups=32)
    assert DARKSIDE.latency(dw5, "cluster", 32) == 4 * 8 * 6 * 4 * 5 * 5
    fc = LayerGeometry.linear("fc", 1024, 10)
    assert DARKSIDE.latency(fc, "cluster", 10) == 512 * 3


@pytest.mark.parametrize(
    "layer, role, cus",
    [
        (conv("dw", 64, 64, 3, 8, stride=2, groups=64), Role.FIXED, ("dwe",)),
        (conv("dw5", 64, 64, 5, 8, groups=64), Role.FIXED, ("cluster",)),
        (conv("s2", 64, 64, 3, 8, stride=2), Role.SEARCHABLE, ("cluster", "dwe")),
        (conv("s3", 64, 64, 3, 8, stride=3), Role.FIXED, ("cluster",)),
        (conv("wide", 64, 128, 3, 8), Role.FIXED, ("cluster",)),
        (conv("pw", 64, 64, 1, 8), Role.FIXED, ("cluster",)),
        (conv("dil", 64, 64, 3, 8, dilation=2), Role.FIXED, ("cluster",)),
        (conv("grp", 64, 64, 3, 8, groups=4), Role.FIXED, ("cluster",)),
        (LayerGeometry.linear("fc", 64, 10), Role.FIXED, ("cluster",)),
    ],
)
def test_support(layer, role, cus) -> None:
    support = DARKSIDE.support(layer)
    assert (support.role, support.cus) == (role, cus)
    if role is Role.FIXED:
        missing = ({"cluster", "dwe"} - set(cus)).pop()
        assert support.reason.startswith(f"{missing}: ")
