"""The `zoo_model` fixture: each (family, exporter) exported once per test session.

Use from any test module (tests/conftest.py puts `tests/` on sys.path, so `zoo` imports):

    from zoo.fixtures import zoo_model  # noqa: F401  (importing registers the fixture)

    def test_import_keeps_resnet_outputs(zoo_model) -> None:
        path = zoo_model("resnet", "dynamo")

The cache lives at module level, keyed by the session's base temp dir, so it holds however many
modules import the fixture (pytest makes one FixtureDef, hence one session value, per importing
module). The files land in `<basetemp>/zoo/<family>-<exporter>-opset<N>.onnx`; each xdist worker has its
own basetemp, so workers never share a file.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from zoo.export import DEFAULT_OPSET, Exporter, export

ZooModel = Callable[[str, Exporter], Path]

_EXPORTED: dict[tuple[Path, str, str], Path] = {}


@pytest.fixture(scope="session")
def zoo_model(tmp_path_factory: pytest.TempPathFactory) -> ZooModel:
    """Return `get(family, exporter) -> Path` of the family exported at the exporter's default opset."""
    root = tmp_path_factory.getbasetemp() / "zoo"
    root.mkdir(exist_ok=True)

    def get(family: str, exporter: Exporter) -> Path:
        key = (root, family, exporter)
        if key not in _EXPORTED:
            path = root / f"{family}-{exporter}-opset{DEFAULT_OPSET[exporter]}.onnx"
            _EXPORTED[key] = export(family, path, exporter)
        return _EXPORTED[key]

    return get
