"""Shared setup of the retraining tests: one torch thread, and models imported the way odimo does."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import onnx
import pytest
import torch

from odimo.compiler.importer import load_model
from odimo.ir.records import ImportedModel

Importer = Callable[[onnx.ModelProto, str], ImportedModel]


@pytest.fixture(autouse=True)
def single_torch_thread() -> Iterator[None]:
    """The models are tiny and the machine is shared: a second thread only adds OpenMP spin-waits."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def imported(tmp_path: Path) -> Importer:
    """`imported(model, name)`: save `model` and import it (the canonical graph the search sees)."""

    def run(model: onnx.ModelProto, name: str) -> ImportedModel:
        path = tmp_path / f"{name}.onnx"
        onnx.save(model, str(path))
        return load_model(path)

    return run
