"""Checkpoint files (retrain/checkpoint.py): nothing in one can run code, and one made by another
run (another model file, target, mapping or setting) is refused naming the difference."""

from __future__ import annotations

import dataclasses
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from odimo.ir.assignment import Assignment
from odimo.ir.errors import BadCheckpointError, ForeignCheckpointError
from odimo.retrain import checkpoint
from odimo.retrain.settings import SearchSettings

SETTINGS = SearchSettings(source_sha256="ab" * 32, epochs=(0, 1, 1), lam=0.5, limit_batches=1)
MADE_BY = checkpoint.identity(SETTINGS, "diana", None)


class Planted:
    """Unpickles into `os.system(command)`: what a hostile checkpoint would hold."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def saved(path: Path) -> Path:
    model = {"conv.weight": torch.randn(4, 3, 3, 3), "conv.alpha": torch.zeros(2, 4)}
    history = [{"val_acc": np.float32(0.5), "loss": torch.tensor(1.25)}]  # numbers of any library
    state = {"global_epoch": 1, "mapping": {"conv": ("digital",) * 4}, "best_state": dict(model), "history": history}
    checkpoint.save(path, MADE_BY, model, {"search": {"parts": [{"state": {}, "param_groups": []}]}}, state)
    return path


def test_a_saved_checkpoint_loads_back_with_the_numpy_rng(tmp_path: Path) -> None:
    np.random.seed(7)
    path = saved(tmp_path / "last.pt")
    expected = np.random.random(3)
    np.random.seed(99)
    loaded = checkpoint.load(path, MADE_BY)
    assert np.array_equal(np.random.random(3), expected)
    assert loaded.state["global_epoch"] == 1 and loaded.state["mapping"] == {"conv": ["digital"] * 4}
    assert loaded.state["history"] == [{"val_acc": 0.5, "loss": 1.25}]
    assert torch.equal(loaded.best_state["conv.weight"], loaded.model["conv.weight"])


@pytest.mark.parametrize("form", ["torch.save", "raw pickle"])
def test_a_planted_pickle_is_refused_without_running_it(form: str, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    path = tmp_path / "last.pt"
    payload = {"format": checkpoint.FORMAT, "identity": Planted(f"touch {marker}")}
    if form == "torch.save":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(BadCheckpointError, match="a pickle that could run code") as caught:
        checkpoint.load(path, MADE_BY)
    assert not marker.exists() and "weights_only" not in caught.value.what
    assert caught.value.exit_code == 2 and caught.value.where == str(path)


def test_a_truncated_checkpoint_is_e330(tmp_path: Path) -> None:
    path = saved(tmp_path / "last.pt")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(BadCheckpointError, match="cannot be read safely"):
        checkpoint.load(path, MADE_BY)


def test_a_checkpoint_of_the_old_pickled_format_is_refused(tmp_path: Path) -> None:
    """Format 1 held numpy's RNG tuple, which only a full unpickler reads."""
    path = tmp_path / "last.pt"
    torch.save({"model": {}, "state": {}, "numpy_rng": np.random.get_state()}, path)
    with pytest.raises(BadCheckpointError, match="a pickle that could run code"):
        checkpoint.load(path, MADE_BY)


@pytest.mark.parametrize(
    "payload",
    [{"model": {}}, {"format": checkpoint.FORMAT}, {"format": checkpoint.FORMAT, "identity": "{", "state": "{}"}],
    ids=["no-format", "no-fields", "bad-json"],
)
def test_a_malformed_checkpoint_is_e330(payload: dict, tmp_path: Path) -> None:
    path = tmp_path / "last.pt"
    torch.save(payload, path)
    with pytest.raises(BadCheckpointError, match="cannot resume"):
        checkpoint.load(path, MADE_BY)


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"source_sha256": "cd" * 32}, "model sha256 abababababab..., this run cdcdcdcdcdcd..."),
        ({"seed": 3}, "seed 0, this run 3"),
        ({"lam": 1.0}, "lambda 0.5, this run 1.0"),
        ({"objective": "energy"}, 'objective "latency", this run "energy"'),
        ({"epochs": (0, 2, 1)}, "epochs [0, 1, 1], this run [0, 2, 1]"),
        ({"batch_size": 64}, "batch size 128, this run 64"),
        ({"limit_batches": None}, "limit-batches 1, this run null"),
        ({"target_ratio": 2.0}, "cost target null, this run 2.0"),
        ({"data": "npz:/d.npz"}, 'data "fashion-mnist", this run "npz:/d.npz"'),
    ],
)
def test_a_checkpoint_of_other_settings_is_refused_naming_the_difference(
    change: dict, named: str, tmp_path: Path
) -> None:
    path = saved(tmp_path / "last.pt")
    expected = checkpoint.identity(dataclasses.replace(SETTINGS, **change), "diana", None)
    with pytest.raises(ForeignCheckpointError) as caught:
        checkpoint.load(path, expected)
    assert named in caught.value.what and caught.value.exit_code == 2


def test_a_checkpoint_of_another_target_or_mapping_is_refused(tmp_path: Path) -> None:
    path = saved(tmp_path / "last.pt")
    with pytest.raises(ForeignCheckpointError, match='target "diana", this run "darkside"'):
        checkpoint.load(path, checkpoint.identity(SETTINGS, "darkside", None))
    given = Assignment("diana", {"conv": ("digital",) * 4})
    with pytest.raises(ForeignCheckpointError, match='mapping "search", this run "[0-9a-f]{64}"'):
        checkpoint.load(path, checkpoint.identity(SETTINGS, "diana", given))


def test_the_device_is_not_part_of_the_identity() -> None:
    """A run may resume on another device: the training it continues is the same."""
    assert checkpoint.identity(dataclasses.replace(SETTINGS, device="cuda"), "diana", None) == MADE_BY
