"""The mapping file (onnx-io.md §5): format, round trip, and one clear E310 per mistake."""

from __future__ import annotations

import json

import pytest

from odimo.ir.assignment import Assignment
from odimo.ir.errors import MappingError
from odimo.ir.geometry import LayerGeometry
from odimo.targets.darkside import DARKSIDE
from odimo.targets.diana import DIANA
from odimo.targets.mapping import load_mapping, save_mapping, validate_mapping

conv = LayerGeometry.conv
DIANA_LAYERS = [
    conv("conv1", 3, 4, 3, 8),
    conv("dw", 4, 4, 3, 8, groups=4),
    conv("grouped", 4, 4, 3, 8, groups=2),
    LayerGeometry.linear("fc", 4, 2),
]
DARKSIDE_LAYERS = [conv("layer3", 4, 4, 3, 8), conv("pw", 4, 8, 1, 8)]
GOOD = Assignment(
    "diana",
    {"fc": ("analog", "digital"), "conv1": ("digital", "analog", "analog", "digital")},
)


def test_json_format_is_sorted_one_layer_per_line() -> None:
    assert GOOD.to_json() == (
        "{\n"
        '  "schema": "odimo.mapping/1",\n'
        '  "target": "diana",\n'
        '  "layers": {\n'
        '    "conv1": ["digital", "analog", "analog", "digital"],\n'
        '    "fc": ["analog", "digital"]\n'
        "  }\n"
        "}\n"
    )
    assert json.loads(Assignment("diana", {}).to_json())["layers"] == {}


def test_round_trip_through_a_file(tmp_path) -> None:
    path = tmp_path / "out.mapping.json"
    save_mapping(GOOD, path)
    assert load_mapping(path) == GOOD
    assert Assignment.from_json(GOOD.to_json()) == GOOD


def test_validation_fills_in_fixed_layers() -> None:
    full = validate_mapping(GOOD, DIANA_LAYERS, DIANA)
    assert full.layers == {**GOOD.layers, "dw": ("digital",) * 4}
    assert list(full.layers) == ["conv1", "dw", "fc"]  # model order, host layer left out


@pytest.mark.parametrize(
    "text, message",
    [
        ("{not json", "not JSON"),
        ('{"schema": "odimo.mapping/2", "target": "diana", "layers": {}}', "schema is 'odimo.mapping/2'"),
        ("[1, 2]", "schema is 'list'"),
        ('{"schema": "odimo.mapping/1", "target": 3, "layers": {}}', '"target" must be'),
        ('{"schema": "odimo.mapping/1", "target": "diana", "layers": {"a": "digital"}}', "layer 'a' must map"),
    ],
)
def test_malformed_files(tmp_path, text, message) -> None:
    path = tmp_path / "m.json"
    path.write_text(text)
    with pytest.raises(MappingError, match=message) as err:
        load_mapping(path)
    assert err.value.code == "E310" and str(path) in str(err.value)


def test_missing_file() -> None:
    with pytest.raises(MappingError, match="cannot read"):
        load_mapping("/nonexistent/m.json")


def _fails(mapping: Assignment, message: str, layers=DIANA_LAYERS, target=DIANA, **kwargs) -> str:
    with pytest.raises(MappingError, match=message) as err:
        validate_mapping(mapping, layers, target, **kwargs)
    assert err.value.code == "E310"
    return str(err.value)


def _with(target: str = "diana", **layers: tuple[str, ...]) -> Assignment:
    return Assignment(target, {**GOOD.layers, **layers} if target == "diana" else layers)


def test_wrong_target() -> None:
    _fails(Assignment("darkside", GOOD.layers), "for target 'darkside', not 'diana'")


def test_unknown_layer() -> None:
    _fails(_with(conv9=("digital",)), "layer 'conv9' is not a costed layer")


def test_missing_searchable_layer() -> None:
    _fails(Assignment("diana", {"fc": GOOD.layers["fc"]}), "searchable layer 'conv1' is missing")


def test_host_layer_present() -> None:
    _fails(_with(grouped=("digital",) * 4), r"layer 'grouped' runs whole on the host \(digital: grouped")


def test_wrong_channel_count() -> None:
    _fails(_with(conv1=("digital",) * 3), "layer 'conv1' has 4 output channels, the mapping gives 3")


def test_unknown_cu() -> None:
    _fails(_with(fc=("digital", "gpu")), r"unknown CU 'gpu' \(target diana has digital, analog\)")


def test_cu_that_cannot_run_the_layer_names_those_that_can() -> None:
    message = _fails(_with(dw=("digital", "analog", "digital", "digital")), "CU 'analog' cannot run layer 'dw'")
    assert "CUs that can: digital" in message


def test_non_contiguous_darkside_split() -> None:
    mapping = Assignment("darkside", {"layer3": ("cluster", "dwe", "cluster", "dwe")})
    _fails(mapping, "layer 'layer3' has a non-contiguous split", DARKSIDE_LAYERS, DARKSIDE)
    ok = Assignment("darkside", {"layer3": ("cluster", "cluster", "dwe", "dwe")})
    assert validate_mapping(ok, DARKSIDE_LAYERS, DARKSIDE).layers["pw"] == ("cluster",) * 8


def test_split_breaking_a_contiguous_group_names_the_coupling_node() -> None:
    coupled = {"conv1": "it meets 'conv4' at node 'layer1.0/Add'"}
    _fails(
        GOOD,
        "layer 'conv1' must give each CU one range, in the order digital, analog, "
        "because it meets 'conv4' at node 'layer1.0/Add'",
        contiguous_layers=coupled,
    )
    prefix = _with(conv1=("digital", "digital", "analog", "analog"))
    assert validate_mapping(prefix, DIANA_LAYERS, DIANA, contiguous_layers=coupled).layers["conv1"] == (
        "digital",
        "digital",
        "analog",
        "analog",
    )


def test_every_problem_is_reported_at_once() -> None:
    mapping = Assignment("diana", {"conv9": ("digital",), "fc": ("digital",)})
    message = _fails(mapping, "conv9")
    assert "searchable layer 'conv1' is missing" in message
    assert "layer 'fc' has 2 output channels" in message
    assert "where: layers 'conv9', 'conv1', 'fc'" in message
