"""The target registry, and that a third target needs one class and nothing else."""

from __future__ import annotations

import pytest
import torch

from odimo.ir.errors import TargetError
from odimo.ir.geometry import LayerGeometry
from odimo.targets import CU, TARGETS, LayerSupport, Role, Target, get_target
from odimo.targets.arith import Arith, Number
from odimo.targets.baselines import AllOn, MinCost, Objective, baseline_costs


def test_known_targets_and_cu_order() -> None:
    assert get_target("diana").cus == ("digital", "analog")
    assert get_target("darkside").cus == ("cluster", "dwe")
    assert {t.frequency_hz for t in TARGETS.values()} == {260_000_000}
    assert (get_target("diana").contiguous, get_target("darkside").contiguous) == (False, True)
    assert (get_target("diana").substitute_cu, get_target("darkside").substitute_cu) == (None, "dwe")


def test_unknown_target_lists_the_known_ones() -> None:
    with pytest.raises(TargetError, match=r"(?s)E150.*unknown target 'gap9'.*darkside, diana") as err:
        get_target("gap9")
    assert err.value.code == "E150"


class TwoSpeed(Target):
    """A made-up SoC: a fast CU and a slow one that only runs 1x1 convs."""

    name = "two-speed"
    cu_table = (CU("fast", 10.0), CU("slow", 1.0))
    power_idle_mw = 0.5
    default_tau = 1.0
    contiguous = False
    baselines = (AllOn("All-fast", "fast"), MinCost("Min-Cost", Objective.LATENCY))

    def support(self, layer: LayerGeometry) -> LayerSupport:
        if layer.kernel == (1, 1):
            return LayerSupport(Role.SEARCHABLE, self.cus)
        return LayerSupport(Role.FIXED, ("fast",), "slow: runs only 1x1 convs")

    def cu_latency(self, layer: LayerGeometry, cu: str, channels: Number, arith: Arith) -> Number:
        per_group = 1 if cu == "fast" else 3
        return arith.ceil(channels, 4) * per_group * layer.c_in


def test_a_third_target_is_one_class(monkeypatch) -> None:
    monkeypatch.setitem(TARGETS, "two-speed", TwoSpeed())
    target = get_target("two-speed")
    layers = [LayerGeometry.conv("c3", 8, 8, 3, 4), LayerGeometry.conv("c1", 8, 8, 1, 4)]
    costs = {cost.name: cost for cost in baseline_costs(layers, target)}
    assert costs["All-fast"].table.total.cycles == 2 * 8 + 2 * 8
    # Min-Cost on c1: all 8 on fast (16 cycles) beats 4 ‖ 4 (max(8, 24)) and any other split.
    assert costs["Min-Cost"].table.layer("c1").split == {"fast": 8, "slow": 0}
    assert costs["Min-Cost"].notes == ("c3: pinned to fast (slow: runs only 1x1 convs)",)
    counts = {"fast": torch.tensor(6.0), "slow": torch.tensor(2.0)}
    assert target.layer_latency_torch(layers[1], counts, tau=1e-6).item() == 24
