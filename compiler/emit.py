"""Emit: verify every file from disk in a staging folder, then move them in, main file last.

A failure or a signal at any point deletes the staging folder and leaves existing outputs untouched
(onnx-io.md §4). Bytes are deterministic: `SerializeToString(deterministic=True)` and sorted JSON.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import onnx
import onnxruntime as ort

from odimo.ir.errors import InvalidOutputError


@dataclass(frozen=True)
class OutputFile:
    """One file to write; `check` runs on the staged copy before anything is moved into place."""

    path: Path
    payload: bytes
    check: Callable[[Path], None] | None = None


def model_bytes(model: onnx.ModelProto) -> bytes:
    return model.SerializeToString(deterministic=True)


def check_onnx_file(path: Path) -> None:
    """The §4 gate that needs only the file: full checker, strict inference, an ORT load."""
    try:
        onnx.checker.check_model(str(path), full_check=True)
        onnx.shape_inference.infer_shapes_path(str(path), str(path) + ".inferred", strict_mode=True, check_type=True)
        ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # any failure here is odimo's bug, reported as such
        raise InvalidOutputError(
            f"the emitted file fails its own checks: {str(exc).splitlines()[0]}",
            where=path.name,
        ) from None
    finally:
        Path(str(path) + ".inferred").unlink(missing_ok=True)


def write_atomically(files: list[OutputFile]) -> None:
    """Stage, fsync and check every file, then `os.replace` each into place, the first one last."""
    stagings: dict[Path, Path] = {}
    try:
        with _signals_raise():
            staged = []
            for file in files:
                folder = file.path.parent.resolve()
                if folder not in stagings:
                    stagings[folder] = Path(tempfile.mkdtemp(prefix=".odimo-staging-", dir=folder))
                staged.append((file, _stage(stagings[folder], file)))
            for file, path in staged:
                if file.check is not None:
                    file.check(path)
            for file, path in [*staged[1:], staged[0]]:
                os.replace(path, file.path)
    finally:
        for staging in stagings.values():
            shutil.rmtree(staging, ignore_errors=True)


def _stage(staging: Path, file: OutputFile) -> Path:
    path = staging / file.path.name
    with open(path, "wb") as handle:
        handle.write(file.payload)
        handle.flush()
        os.fsync(handle.fileno())
    return path


@contextlib.contextmanager
def _signals_raise() -> Iterator[None]:
    """Turn SIGTERM into an exception so the staging folder is cleaned up on the way out."""

    def raise_interrupt(signum, frame):  # signal handler signature
        raise KeyboardInterrupt(f"signal {signum}")

    try:
        previous = signal.signal(signal.SIGTERM, raise_interrupt)
    except ValueError:  # not the main thread: signals cannot be caught here
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
