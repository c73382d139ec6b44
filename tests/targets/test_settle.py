"""targets/settle.py: a discrete mapping settled at a cost budget, on hand-computed staircases."""

from __future__ import annotations

import numpy as np

from odimo.ir.geometry import LayerGeometry
from odimo.targets import get_target
from odimo.targets.settle import LayerChoice, layer_costs, settle

# costs[n]: the layer's cost with n channels on the accurate CU. A is a staircase (a free move from
# 0 to 1, a step of 2 per two channels, then 4); B rises 2 per channel.
A = np.array([2.0, 2.0, 4.0, 4.0, 8.0])
B = np.array([1.0, 3.0, 5.0])


def choices(first_a: int, first_b: int) -> list[LayerChoice]:
    return [
        LayerChoice("a", ("fast", "cheap"), np.array([0.4, -0.2, 0.9, 0.1]), A, first_a),
        LayerChoice("b", ("fast", "cheap"), np.array([0.3, -0.5]), B, first_b),
    ]


def test_over_budget_moves_the_most_saving_channels_first() -> None:
    # from (4, 2), total 13, budget 7: a 4->3 saves 4 (rate 4), then b 2->1 saves 2 (rate 2,
    # against a's best of 1 per channel for 3->1): total 4 + 3 = 7 fits, and no return does.
    assert settle(choices(4, 2), 7.0) == {"a": 3, "b": 1}


def test_under_budget_returns_the_cheapest_channels_while_the_budget_holds() -> None:
    # from (0, 0), total 3: a 0->1 is free, a 1->3 costs 1 per channel (b: 2), then b 0->1 costs 2
    # and fills the budget exactly; a 3->4 (4 more) no longer fits.
    assert settle(choices(0, 0), 7.0) == {"a": 3, "b": 1}


def test_a_budget_no_mapping_reaches_ends_at_the_cheapest() -> None:
    # the cheapest total is 3; a keeps its free channel (a 1 -> 0 saves nothing)
    assert settle(choices(4, 2), 1.0) == {"a": 1, "b": 0}


def test_a_mapping_within_budget_with_no_room_is_kept() -> None:
    assert settle(choices(3, 1), 7.0) == {"a": 3, "b": 1}


def test_channels_move_in_the_searchs_preference_order() -> None:
    a = choices(2, 1)[0]
    assert a.assignment(2) == ("fast", "cheap", "fast", "cheap")  # 0.9 and 0.4 are its firmest
    assert a.assignment(1) == ("cheap", "cheap", "fast", "cheap")
    prefix = LayerChoice("p", ("fast", "cheap"), 2.6 - (np.arange(4) + 0.5), A, 3)  # a split point at 2.6
    assert [prefix.assignment(n) for n in (3, 1)] == [("fast",) * 3 + ("cheap",), ("fast",) + ("cheap",) * 3]


def test_layer_costs_are_the_targets_layer_latency_per_count() -> None:
    diana = get_target("diana")
    conv = LayerGeometry.conv("conv", c_in=16, c_out=4, kernel=3, out_hw=8)
    costs = layer_costs(conv, ("digital", "analog"), diana.layer_latency)
    assert costs.shape == (5,)
    assert costs[4] == diana.layer_latency(conv, {"digital": 4, "analog": 0})
    assert costs[1] == diana.layer_latency(conv, {"digital": 1, "analog": 3})
