"""The `zoo_model` fixture: each (family, exporter) exported once per test session.

tests/conftest.py registers this module as a plugin (`pytest_plugins`, after putting `tests/` on
sys.path), so any test module just names the fixture as a parameter, without importing it:

    def test_import_keeps_resnet_outputs(zoo_model) -> None:
        path = zoo_model("resnet", "dynamo")

The cache lives at module level, keyed by the session's base temp dir, so it would hold even if
modules imported the fixture themselves (pytest makes one FixtureDef, hence one session value, per
importing module). The files land in `<basetemp>/zoo/<family>-<exporter>-opset<N>.onnx`; each xdist
worker has its own basetemp, so workers never share a file.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from zoo.export import DEFAULT_OPSET, Exporter, export

ZooModel = Callable[..., Path]  # (family, exporter, batch: int | None = None) -> Path

_EXPORTED: dict[tuple[Path, str, str, int | None], Path] = {}


@pytest.fixture(scope="session")
def zoo_model(tmp_path_factory: pytest.TempPathFactory) -> ZooModel:
    """Return `get(family, exporter, batch=None) -> Path` of the family exported at the exporter's
    default opset, with a dynamic batch (None) or the fixed `batch`."""
    root = tmp_path_factory.getbasetemp() / "zoo"
    root.mkdir(exist_ok=True)

    def get(family: str, exporter: Exporter, batch: int | None = None) -> Path:
        key = (root, family, exporter, batch)
        if key not in _EXPORTED:
            form = "dynamic" if batch is None else f"batch{batch}"
            path = root / f"{family}-{exporter}-opset{DEFAULT_OPSET[exporter]}-{form}.onnx"
            _EXPORTED[key] = export(family, path, exporter, batch=batch)
        return _EXPORTED[key]

    return get
