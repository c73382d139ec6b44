"""Every option checked before any work: before the data is loaded, before the model is imported.

A bad λ found after an hour of training, or a batch size of 0 found as a ZeroDivisionError, is
a wasted run and a "bug in odimo" message; here each is one E160 message naming the option. The
CLI only parses syntax (an int is an int); the values are judged here so that the Python API
(`pipeline.compile`) gets the same refusals.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

from odimo.ir.errors import BadOptionError
from odimo.retrain.data import check_data_spec
from odimo.retrain.settings import SearchSettings
from odimo.targets.mapping import load_mapping

# numpy's legacy seeding takes [0, 2**32); the trainer seeds torch with seed * 100_003 + epoch,
# which stays far below torch's 2**64 bound for any seed in this range.
MAX_SEED = 2**32 - 1
_DEVICE = re.compile(r"(cpu|cuda(:\d+)?)")


def check_settings(settings: SearchSettings) -> None:
    """The training record's values, whatever the mapping (a bad one is a bad command line)."""
    _require(math.isfinite(settings.lam) and settings.lam >= 0, "--lambda", settings.lam, "a finite number >= 0")
    if settings.target_ratio is not None:
        ok = math.isfinite(settings.target_ratio) and settings.target_ratio > 1
        _require(ok, "--speedup/--energy-saving", settings.target_ratio, "a finite number above 1")
    epochs = settings.epochs
    ok = len(epochs) == 3 and all(isinstance(e, int) and e >= 0 for e in epochs)
    _require(ok, "--epochs", ",".join(map(str, epochs)), "three integers >= 0, W,S,F")
    _require(settings.batch_size >= 1, "--batch-size", settings.batch_size, "an integer >= 1")
    limit = settings.limit_batches
    _require(limit is None or limit >= 1, "--limit-batches", limit, "an integer >= 1 (omit it for every batch)")
    _require(0 <= settings.seed <= MAX_SEED, "--seed", settings.seed, f"an integer in [0, {MAX_SEED}]")
    _require(settings.calibration_images >= 0, "--calibration-images", settings.calibration_images, "an integer >= 0")
    _require(settings.objective in ("latency", "energy"), "--objective", settings.objective, "latency or energy")


def check_training(settings: SearchSettings, data: bool) -> None:
    """What only a training uses: the device, and with `data` the data spec (its kind, that its
    path exists, the size an .npz declares). A search leaves the data to the search stage: a model
    none of whose layers can be split trains nothing and needs no data, which only the analysis
    knows; the loader checks the same things before it reads anything."""
    check_device(settings.device)
    if data:
        check_data_spec(settings.data)


def check_device(device: str) -> None:
    """cpu, or cuda[:N] when torch sees that CUDA device."""
    if not _DEVICE.fullmatch(device):
        raise BadOptionError(f"unknown device '{device}'", f"--device {device}", "use --device cpu or --device cuda")
    if device == "cpu":
        return
    import torch  # only for a CUDA request: the import costs seconds

    index = int(device.partition(":")[2] or 0)
    if not torch.cuda.is_available():
        raise BadOptionError(
            "CUDA was asked for, but this torch sees no CUDA device",
            f"--device {device}",
            "use --device cpu, or install a CUDA build of torch on a machine with an NVIDIA GPU",
        )
    if index >= torch.cuda.device_count():
        raise BadOptionError(
            f"there is no CUDA device {index} ({torch.cuda.device_count()} found)",
            f"--device {device}",
            "use --device cuda (the first device)",
        )


def check_mapping_file(spec: str) -> None:
    """A mapping file is read and parsed now (size, depth and format); its layers are checked
    against the model after the import."""
    load_mapping(Path(spec))


def _require(ok: bool, option: str, value: object, wanted: str) -> None:
    if not ok:
        raise BadOptionError(
            f"{option} must be {wanted}, not {value}", f"{option} {value}", f"pass {option} as {wanted}"
        )
