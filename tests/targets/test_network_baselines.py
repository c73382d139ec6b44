"""Network totals and baselines of targets.md §5.2 (DIANA ResNets) and §5.4 (Darkside MobileNetV1)."""

from __future__ import annotations

from collections import Counter

import pytest
from networks import mobilenetv1_supernet, resnet18, resnet20_cifar10

from odimo.ir.assignment import Assignment
from odimo.ir.errors import TargetError
from odimo.targets import Role
from odimo.targets.baselines import baseline_costs, baselines_for, build_baseline, build_baselines
from odimo.targets.costing import cost_table
from odimo.targets.darkside import DARKSIDE, dws_cost
from odimo.targets.diana import DIANA

NETWORKS = {
    "resnet20": resnet20_cifar10(),
    "resnet18-c100": resnet18("cifar100"),
    "resnet18-imagenet": resnet18("imagenet"),
}


def _totals(layers, target) -> dict:
    return {cost.name: cost.table for cost in baseline_costs(layers, target)}


def test_resnet20_has_22_costed_layers_and_their_table_costs() -> None:
    """Per layer kind: (LAT_dig all, LAT_ana all, how many), targets.md §5.2."""
    layers = NETWORKS["resnet20"]
    expected = {
        (3, 16, 3, 32): (4_160, 4_875.2, 1),
        (16, 16, 3, 32): (13_312, 5_811.2, 6),
        (16, 32, 3, 16): (6_144, 2_316.8, 1),
        (32, 32, 3, 16): (11_264, 3_468.8, 5),
        (16, 32, 1, 16): (2_048, 710.4, 1),
        (32, 64, 3, 8): (9_984, 2_595.2, 1),
        (64, 64, 3, 8): (19_456, 4_899.2, 5),
        (32, 64, 1, 8): (1_792, 401.6, 1),
        (64, 10, 1, 1): (73.25, 514.275, 1),
    }
    assert len(layers) == 22
    kinds = Counter((layer.c_in, layer.c_out, layer.kernel[0], layer.out_hw[0]) for layer in layers)
    assert kinds == {kind: n for kind, (_, _, n) in expected.items()}
    for layer in layers:
        lat_dig, lat_ana, _ = expected[(layer.c_in, layer.c_out, layer.kernel[0], layer.out_hw[0])]
        assert DIANA.latency(layer, "digital", layer.c_out) == pytest.approx(lat_dig, rel=1e-9)
        assert DIANA.latency(layer, "analog", layer.c_out) == pytest.approx(lat_ana, rel=1e-9)


@pytest.mark.parametrize(
    "network, all_8bit, all_ternary, io_8bit, min_cost",
    [
        ("resnet20", 257_673.25, 88_120.675, 86_964.45, 86_964.45),
        ("resnet18-c100", 4_409_036.5, 305_154.8, 315_295.7, 304_682.9),
        ("resnet18-imagenet", 10_401_181, 629_565.2, 994_339.8, 629_565.2),
    ],
)
def test_diana_baseline_cycles(network, all_8bit, all_ternary, io_8bit, min_cost) -> None:
    tables = _totals(NETWORKS[network], DIANA)
    expected = {"All-8bit": all_8bit, "All-Ternary": all_ternary, "IO-8bit": io_8bit, "Min-Cost": min_cost}
    for name, cycles in expected.items():
        assert tables[name].total.cycles == pytest.approx(cycles, rel=1e-9), name
        assert tables[name].searchable == tables[name].total  # every ResNet layer is mappable


def test_resnet20_baseline_energies() -> None:
    tables = _totals(NETWORKS["resnet20"], DIANA)
    expected = {
        "All-8bit": 6_431_524.32,
        "All-Ternary": 2_532_588.2,
        "IO-8bit": 2_483_356.608,
        "Min-Cost": 2_518_737.408,
    }
    for name, energy in expected.items():
        assert tables[name].total.energy_mw_cycles == pytest.approx(energy, rel=1e-9), name
    all_8bit = tables["All-8bit"].total
    assert round(all_8bit.latency_ms, 3) == 0.991
    assert round(all_8bit.energy_uj, 2) == 24.74


def test_resnet20_with_zero_padding_shortcuts() -> None:
    layers = resnet20_cifar10(shortcut="pad")
    assert len(layers) == 20
    table = cost_table(layers, DIANA, build_baseline("All-8bit", layers, DIANA).mapping)
    assert table.total.cycles == pytest.approx(253_833.25, rel=1e-9)


@pytest.mark.parametrize(
    "network, digital",
    [
        ("resnet20", {0: 16, 14: 4, 21: 10}),
        ("resnet18-c100", {0: 16, 10: 16, 11: 16, 13: 16, 14: 16, **dict.fromkeys(range(15, 20), 32), 20: 100}),
        ("resnet18-imagenet", {0: 16, **dict.fromkeys(range(15, 20), 16), 20: 128}),
    ],
)
def test_min_cost_configurations(network, digital) -> None:
    """Digital channels per layer index; the reference's hand-coded ones except R10 (ImageNet FC)."""
    layers = NETWORKS[network]
    mapping = build_baseline("Min-Cost", layers, DIANA).mapping
    found = {i: mapping.split(layer.name).get("digital", 0) for i, layer in enumerate(layers)}
    assert found == {i: digital.get(i, 0) for i in range(len(layers))}


def test_io_8bit_puts_first_and_last_layer_on_digital() -> None:
    layers = NETWORKS["resnet20"]
    mapping = build_baseline("IO-8bit", layers, DIANA).mapping
    on_digital = [layer.name for layer in layers if mapping.split(layer.name).get("digital")]
    assert on_digital == ["stem", "fc"]


def test_baselines_pin_layers_a_cu_cannot_run() -> None:
    layers = mobilenetv1_supernet("cifar10")
    all_dw = build_baseline("All-DW", layers, DARKSIDE)
    assert all_dw.mapping.split("pw1") == {"cluster": 64}
    assert any(note.startswith("pw1: pinned to cluster (dwe: ") for note in all_dw.notes)
    all_conv = build_baseline("All-conv", layers, DARKSIDE)
    assert all_conv.mapping.split("dw1") == {"dwe": 32}


def test_baseline_names_per_target() -> None:
    assert baselines_for(DIANA) == ("All-8bit", "All-Ternary", "IO-8bit", "Min-Cost", "Min-Cost-Energy")
    assert baselines_for(DARKSIDE) == ("All-conv", "All-DW", "Min-Cost", "DWS")
    layers = mobilenetv1_supernet("cifar10")
    assert [b.name for b in build_baselines(layers, DARKSIDE)] == ["All-conv", "All-DW", "Min-Cost"]
    with pytest.raises(TargetError, match="changes the network's structure"):
        build_baseline("DWS", layers, DARKSIDE)
    with pytest.raises(TargetError, match=r"(?s)no baseline 'All-4bit'.*All-8bit"):
        build_baseline("All-4bit", layers, DIANA)


def _half_split(layers) -> Assignment:
    """⌊C/2⌋ conv channels on every searchable layer (the reference's `half` initialisation)."""
    return Assignment(
        "darkside",
        {
            layer.name: ("cluster",) * (layer.c_out // 2) + ("dwe",) * (layer.c_out - layer.c_out // 2)
            for layer in layers
            if DARKSIDE.support(layer).role is Role.SEARCHABLE
        },
    )


@pytest.mark.parametrize(
    "dataset, all_conv, all_dw, dws, dws_pw, half",
    [
        ("cifar10", 20_227_968, 12_728, 2_275_640, 2_262_912, 10_155_456),
        ("cifar100", 33_230_592, 35_000, 3_758_008, 3_723_008, 16_698_240),
        ("imagenet", 233_453_184, 323_000, 26_526_776, 26_203_776, 117_440_832),
    ],
)
def test_darkside_searchable_sums(dataset, all_conv, all_dw, dws, dws_pw, half) -> None:
    layers = mobilenetv1_supernet(dataset)
    searchable = [layer for layer in layers if DARKSIDE.support(layer).role is Role.SEARCHABLE]
    assert len(searchable) == 8
    tables = _totals(layers, DARKSIDE)
    assert tables["All-conv"].searchable.cycles == all_conv
    assert tables["All-DW"].searchable.cycles == all_dw
    assert tables["DWS"].searchable.cycles == dws
    assert sum(row.latency for row in tables["DWS"].layers if row.name.endswith("/pw")) == dws_pw
    assert cost_table(layers, DARKSIDE, _half_split(layers)).searchable.cycles == half


def test_darkside_cifar10_energies_and_fixed_layers() -> None:
    layers = mobilenetv1_supernet("cifar10")
    tables = _totals(layers, DARKSIDE)
    expected = {"All-conv": 3_424_999_541.76, "All-DW": 1_518_704.96, "DWS": 384_674_964.8}
    for name, energy in expected.items():
        assert tables[name].searchable.energy_mw_cycles == pytest.approx(energy, rel=1e-9), name
    fixed = {row.name: row.latency for row in tables["All-conv"].layers if row.role is Role.FIXED}
    assert fixed.pop("out") == 1_536
    assert sum(fixed.values()) == 726_446
    for table in tables.values():  # fixed layers are the same in every baseline
        assert table.total.cycles - table.searchable.cycles == 726_446 + 1_536


def test_dws_cost_of_a_single_layer() -> None:
    layer = mobilenetv1_supernet("cifar10")[5]  # layer3: 128 channels on 8x8
    table = dws_cost([layer], DARKSIDE)
    assert [(row.name, row.latency) for row in table.layers] == [
        ("layer3/dw", 2_696),
        ("layer3/pw", 60_288),
    ]
    assert [row.cycles for row in table.layers] == [
        {"cluster": 0, "dwe": 2_696},
        {"cluster": 60_288, "dwe": 0},
    ]


def test_darkside_min_cost_is_the_best_contiguous_split() -> None:
    layers = mobilenetv1_supernet("cifar10")
    mapping = build_baseline("Min-Cost", layers, DARKSIDE).mapping
    for layer in layers:
        if DARKSIDE.support(layer).role is not Role.SEARCHABLE:
            continue
        k = mapping.split(layer.name).get("cluster", 0)
        best = min(
            DARKSIDE.layer_latency(layer, {"cluster": c, "dwe": layer.c_out - c}) for c in range(layer.c_out + 1)
        )
        assert DARKSIDE.layer_latency(layer, {"cluster": k, "dwe": layer.c_out - k}) == best
        assert mapping.layers[layer.name] == ("cluster",) * k + ("dwe",) * (layer.c_out - k)
