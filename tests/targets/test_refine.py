"""targets/refine.py: the argmax refined on the exact objective, on hand-computed staircases."""

from __future__ import annotations

import numpy as np

from odimo.targets.refine import candidate_counts, refine
from odimo.targets.settle import LayerChoice

# costs[n]: the layer's cost with n channels on the accurate CU. TILE is DIANA-like: the first
# channel costs a whole tile (2 -> 10), the next three 1 each, then a second tile. FREE holds two
# channels at no cost, then rises 3 per channel.
TILE = np.array([2.0, 10.0, 11.0, 12.0, 13.0, 21.0, 22.0, 23.0, 24.0])
FREE = np.array([5.0, 5.0, 5.0, 8.0, 11.0])


def choice(name: str, costs: np.ndarray, first: int) -> LayerChoice:
    channels = len(costs) - 1
    return LayerChoice(name, ("fast", "cheap"), np.linspace(1, -1, channels), costs, first)


def test_candidates_are_the_ends_none_the_free_count_the_argmax_and_the_tops_of_each_tile() -> None:
    # TILE: mean increment 22/8 = 2.75, jumps (> 5.5) at 0->1 and 4->5: tops 0 and 4
    assert candidate_counts(choice("t", TILE, 2)) == [0, 2, 4, 8]
    # FREE: no jump (mean 1.5, steps 0 0 3 3: 3 is not > 3), two channels free
    assert candidate_counts(choice("f", FREE, 0)) == [0, 2, 4]


def test_a_straggler_that_buys_nothing_goes_back_to_the_cheap_cu() -> None:
    # one channel on the accurate CU costs 8 of a cost budget normalised by 24; the loss says it
    # is worth 0.01, while λ = 1 prices it at 8/24: the layer returns to 0
    losses = {0: 0.51, 1: 0.50, 4: 0.45, 8: 0.40}
    result = refine([choice("t", TILE, 1)], lambda counts: losses[counts["t"]], 1.0, 24.0)
    assert result.counts == {"t": 0}
    assert result.moved == {"t": (1, 0)}
    assert (result.cost_before, result.cost_after) == (10.0, 2.0)
    assert (result.loss_before, result.loss_after) == (0.50, 0.51)


def test_a_full_tile_is_kept_where_its_loss_pays_for_it() -> None:
    # with λ = 0.1 the whole tile (4 channels, cost 11 more than none) is worth its 0.06 of loss
    losses = {0: 0.51, 1: 0.50, 4: 0.45, 8: 0.44}
    result = refine([choice("t", TILE, 1)], lambda counts: losses[counts["t"]], 0.1, 24.0)
    assert result.counts == {"t": 4}


def test_free_channels_are_taken_and_the_argmax_stays_when_nothing_beats_it() -> None:
    free = refine([choice("f", FREE, 0)], lambda counts: 0.5 - 0.01 * counts["f"], 1.0, 10.0)
    assert free.counts == {"f": 2}  # 2 is free and better; 4 costs 6 more for 0.02 of loss
    kept = refine([choice("t", TILE, 4)], lambda counts: 0.6 - 0.6 * (counts["t"] == 4), 1.0, 24.0)
    assert kept.counts == {"t": 4} and kept.moved == {}


def test_layers_are_refined_in_order_each_against_the_others_as_they_are_then() -> None:
    seen: list[dict[str, int]] = []

    def loss(counts: dict[str, int]) -> float:
        seen.append(dict(counts))
        return 1.0 - 0.001 * (counts["a"] + counts["b"])

    result = refine([choice("a", TILE, 1), choice("b", TILE, 1)], loss, 1.0, 24.0)
    assert result.counts == {"a": 0, "b": 0}
    # one evaluation of the argmax, three of a's other candidates (0, 4, 8), then b's with a at 0
    assert seen[:4] == [{"a": 1, "b": 1}, {"a": 0, "b": 1}, {"a": 4, "b": 1}, {"a": 8, "b": 1}]
    assert seen[4:] == [{"a": 0, "b": 0}, {"a": 0, "b": 4}, {"a": 0, "b": 8}]
