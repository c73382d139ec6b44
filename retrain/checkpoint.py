"""Checkpoint files: what `--resume` may load, and whether it belongs to this run.

A checkpoint is loaded with `torch.load(weights_only=True)`, so a planted pickle cannot run code:
it holds only tensors (the weights, the optimizers' states, both RNG states) and JSON-able values
(the training state as a JSON string). It records what it was made from (`identity`: the model
file's sha256, the target, the mapping source and every setting that shapes the training), and
resuming with any of them different is refused naming the difference: the weights of an older
model, or a report labelled with settings the model was not trained with, would be silent lies.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from odimo.ir.assignment import Assignment
from odimo.ir.errors import BadCheckpointError, ForeignCheckpointError, UnwritableOutputError
from odimo.retrain.settings import SearchSettings

FORMAT = 2  # 1: a full pickle (loaded with weights_only=False), refused
_DELETE = "delete the checkpoint folder to start over"


@dataclass(frozen=True)
class Checkpoint:
    """What a checkpoint file holds, checked for shape and origin, not yet applied."""

    model: dict[str, torch.Tensor]
    optimizers: dict[str, Any]
    state: dict[str, Any]  # TrainState's fields, except best_state
    best_state: dict[str, torch.Tensor] | None
    torch_rng: torch.Tensor


def identity(config: SearchSettings, target: str, fixed_mapping: Assignment | None) -> dict[str, Any]:
    """Everything a resumed run must share with the run that wrote the checkpoint."""
    mapping = "search" if fixed_mapping is None else hashlib.sha256(fixed_mapping.to_json().encode()).hexdigest()
    return {
        "model sha256": config.source_sha256,
        "target": target,
        "mapping": mapping,
        "lambda": config.lam,
        "cost target": config.target_ratio,
        "objective": config.objective,
        "epochs": list(config.epochs),
        "batch size": config.batch_size,
        "limit-batches": config.limit_batches,
        "seed": config.seed,
        "data": config.data,
        "distill": config.distill,
        "refine": config.refine,
        "calibration images": config.calibration_images,
        "activation rounding": config.act_rounding.value,
    }


def save(
    path: Path,
    made_by: dict[str, Any],
    model: dict[str, torch.Tensor],
    optimizers: dict[str, Any],
    state: dict[str, Any],
) -> None:
    """Write atomically (a temporary file renamed); a failed write is E130, the old checkpoint kept."""
    state = dict(state)
    best_state = state.pop("best_state")
    keys, pos, has_gauss, cached = np.random.get_state()[1:]
    payload = {
        "format": FORMAT,
        "identity": json.dumps(made_by, sort_keys=True),
        "model": model,
        "optimizers": optimizers,
        "state": json.dumps(state, default=_plain),
        "best_state": best_state,
        "torch_rng": torch.get_rng_state(),
        "numpy_rng_keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
        "numpy_rng": json.dumps([int(pos), int(has_gauss), float(cached)]),
    }
    staging = path.with_suffix(".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(payload, staging)
        os.replace(staging, path)
    except OSError as exc:
        staging.unlink(missing_ok=True)
        raise UnwritableOutputError(
            f"cannot write the checkpoint: {exc.strerror or exc}", str(path), "free some space or choose another -o"
        ) from None


def _plain(value: Any) -> Any:
    """numpy and torch numbers (and arrays) in the training history as JSON numbers (and lists)."""
    if isinstance(value, (np.generic, np.ndarray, torch.Tensor)):
        return value.tolist()
    raise TypeError(f"a checkpoint's training state holds a {type(value).__name__}, which is not JSON")


def load(path: Path, expected: dict[str, Any]) -> Checkpoint:
    """The checkpoint at `path`, if it is safe, well-formed and made by a run like this one; the
    numpy RNG is restored here (it needs no model)."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # torch's own text suggests weights_only=False: the opposite of safe
        raise BadCheckpointError(
            "cannot resume: the checkpoint holds Python objects besides tensors and plain values "
            "(a pickle that could run code); it was not loaded",
            str(path),
            _DELETE,
        ) from None
    except Exception as exc:  # a truncated file or a foreign format
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BadCheckpointError(
            f"cannot resume: the checkpoint cannot be read safely ({first})", str(path), _DELETE
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise BadCheckpointError(
            "cannot resume: the file is not a checkpoint of this odimo version", str(path), _DELETE
        )
    try:
        made_by = json.loads(payload["identity"])
        state = json.loads(payload["state"])
        pos, has_gauss, cached = json.loads(payload["numpy_rng"])
        keys = payload["numpy_rng_keys"].numpy().astype(np.uint32)
        checkpoint = Checkpoint(
            payload["model"], payload["optimizers"], state, payload["best_state"], payload["torch_rng"]
        )
        if not (isinstance(made_by, dict) and isinstance(state, dict) and isinstance(checkpoint.model, dict)):
            raise TypeError("unexpected structure")
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise BadCheckpointError(f"cannot resume: the checkpoint is malformed ({exc})", str(path), _DELETE) from None
    _require_same_origin(made_by, expected, path)
    np.random.set_state(("MT19937", keys, pos, has_gauss, cached))
    return checkpoint


def _require_same_origin(made_by: dict[str, Any], expected: dict[str, Any], path: Path) -> None:
    differences = [
        f"{key} {_shown(key, made_by.get(key))}, this run {_shown(key, expected.get(key))}"
        for key in expected
        if made_by.get(key) != expected.get(key)
    ]
    if differences:
        raise ForeignCheckpointError(
            "cannot resume: the checkpoint was made with " + "; ".join(differences),
            str(path),
            "rerun with the checkpoint's model and settings, or delete the checkpoint folder to start over",
        )


def _shown(key: str, value: Any) -> str:
    if key == "model sha256" and isinstance(value, str) and value:
        return f"{value[:12]}..."
    return json.dumps(value)
