"""The target registry, and that a third target needs one class and nothing else.

`TwoSpeed` below is a whole target: CUs, cost formulas, baselines and, as data, how it is searched
(an existing kind, weight blend, with its own CU names, weight formats and optimizer groups). The
search test registers it and compiles a model with it: nothing else in odimo knows its name.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import onnx
import pytest
import torch
from builders import residual_add

from odimo.compiler.cli import compile_main
from odimo.compiler.importer import load_model
from odimo.ir.errors import TargetError
from odimo.ir.geometry import LayerGeometry
from odimo.retrain.mixed_layers import BlendLayer
from odimo.retrain.supernet import Supernet
from odimo.targets import CU, TARGETS, LayerSupport, Role, Target, get_target
from odimo.targets.arith import Arith, Number
from odimo.targets.base import ParamGroup, ParamSet, SearchKind, SearchSpec, register_target
from odimo.targets.baselines import AllOn, MinCost, Objective, baseline_costs
from odimo.targets.plan import plan_for_target
from odimo.targets.quantization import WeightFormat


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
    cu_table = (CU("fast", 10.0, "#9467bd"), CU("slow", 1.0, "#8c564b"))
    power_idle_mw = 0.5
    default_tau = 1.0
    contiguous = False
    weight_formats = {"fast": WeightFormat.INT8_CHANNEL, "slow": WeightFormat.TERNARY}
    default_emit = "qdq"
    default_lambda = 1e-3
    baselines = (AllOn("All-fast", "fast"), MinCost("Min-Cost", Objective.LATENCY))
    search_spec = SearchSpec(
        kind=SearchKind.WEIGHT_BLEND,
        quantized_weights=True,
        warmup=(ParamGroup(ParamSet.NETWORK, "adam", 1e-4),),
        search=(ParamGroup(ParamSet.NETWORK, "adam", 1e-4), ParamGroup(ParamSet.ARCHITECTURE, "adam", 1e-2)),
        final=(ParamGroup(ParamSet.NETWORK, "adam", 1e-4), ParamGroup(ParamSet.QUANTIZERS, "sgd", 1e-3)),
        graph_function="TwoSpeedMixed",
    )

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


@pytest.fixture
def two_speed() -> Iterator[Target]:
    target = register_target(TwoSpeed())
    yield target
    del TARGETS[target.name]


def test_a_third_target_in_one_file_builds_its_supernet(two_speed: Target, tmp_path: Path) -> None:
    source = tmp_path / "residual_add.onnx"
    onnx.save(residual_add(), str(source))
    model = load_model(source).model
    supernet = Supernet(model, plan_for_target(model, two_speed))
    assert supernet.searchable == ["fc"]  # the only 1x1 layer; the 3x3 convs are pinned to fast
    assert all(isinstance(m, BlendLayer) for m in supernet.mixed_layers())
    assert supernet.mixed("fc").expected_counts().keys() == {"fast", "slow"}
    assert {tuple(m.quantizers) for m in supernet.mixed_layers()} == {("fast",), ("fast", "slow")}


def test_a_third_target_in_one_file_compiles_a_search(two_speed: Target, tmp_path: Path) -> None:
    source = tmp_path / "residual_add.onnx"
    onnx.save(residual_add(), str(source))
    output = tmp_path / "out.onnx"
    smoke = ["--data", "synthetic", "--epochs", "0,1,1", "--limit-batches", "2", "--batch-size", "32"]
    argv = [
        str(source),
        "--target",
        "two-speed",
        "-o",
        str(output),
        *smoke,
        "--save-search-graph",
        str(tmp_path / "s.onnx"),
    ]
    assert compile_main([*argv, "--no-progress"]) == 0
    report = json.loads((tmp_path / "out.report.json").read_text())
    assert report["target"]["name"] == "two-speed" and report["mapping"] == "search"
    used = {cu for row in report["layers"] for cu in row["split"]}
    assert used <= {"fast", "slow", "host"} and "fast" in used
    emitted = onnx.load(str(output))
    cus = {p.value for n in emitted.graph.node for p in n.metadata_props if p.key == "odimo.cu"}
    assert cus <= {"fast", "slow", "host"}
    assert "DequantizeLinear" in {n.op_type for n in emitted.graph.node}
    functions = {f.name for f in onnx.load(str(tmp_path / "s.onnx")).functions}
    assert functions == {"TwoSpeedMixedGemmContiguous"}  # fc feeds the graph output
    assert abs(report["accuracy"]["onnx"] - report["accuracy"]["final"]) <= 0.005, report["accuracy"]
