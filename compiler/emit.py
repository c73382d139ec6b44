"""Emit: verify every file from disk in a staging folder, then move them in, main file last.

A failure or a signal at any point deletes the staging folder and leaves existing outputs untouched
(onnx-io.md §4): files already moved in are put back (the old version, kept as a hard link in the
staging folder, or nothing where there was none), so the set is replaced whole or not at all. A
write that fails (read-only folder, full disk) is E130 naming the path and the reason. Staging
folders carry their process id, so one left by a killed run is removed by the next. Bytes are
deterministic: `SerializeToString(deterministic=True)` and sorted JSON.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import onnx
import onnxruntime as ort

from odimo.ir.errors import InvalidOutputError, UnwritableOutputError

STAGING_PREFIX = ".odimo-staging-"
Result = TypeVar("Result")


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
    """Stage, fsync and check every file, then `os.replace` each into place, the first one last;
    on any failure the files moved so far are rolled back."""
    stagings: dict[Path, Path] = {}
    try:
        with _signals_raise():
            staged = []
            for file in files:
                folder = file.path.parent.resolve()
                if folder not in stagings:
                    remove_stale_staging(folder)
                    stagings[folder] = _writing(file.path, lambda: _make_staging(folder))
                staged.append((file, _writing(file.path, lambda: _stage(stagings[folder], file))))
            for file, path in staged:
                if file.check is not None:
                    file.check(path)
            _move_in([*staged[1:], staged[0]], stagings)
    finally:
        for staging in stagings.values():
            shutil.rmtree(staging, ignore_errors=True)


def _move_in(order: list[tuple[OutputFile, Path]], stagings: dict[Path, Path]) -> None:
    """Replace every target; if one fails (or a signal arrives), restore those already replaced."""
    done: list[tuple[Path, Path | None]] = []  # (target, backup of its old version or None)
    try:
        for file, path in order:
            backup = _backup(file.path, stagings[file.path.parent.resolve()])
            _writing(file.path, lambda: os.replace(path, file.path))
            done.append((file.path, backup))
    except BaseException:
        for target, backup in reversed(done):
            with contextlib.suppress(OSError):
                if backup is None:
                    target.unlink()
                else:
                    os.replace(backup, target)
        raise


def _backup(target: Path, staging: Path) -> Path | None:
    """A second name for the old version of `target` in the staging folder (None if there is none)."""
    if not target.is_file():
        return None
    backup = staging / f"{target.name}.old"
    try:
        os.link(target, backup)
    except OSError:  # a file system without hard links
        _writing(target, lambda: shutil.copy2(target, backup))
    return backup


def remove_stale_staging(folder: Path) -> None:
    """Delete staging folders of runs that are gone: a SIGKILL cannot clean up after itself."""
    for staging in folder.glob(f"{STAGING_PREFIX}*"):
        if staging.is_dir() and not _alive(staging.name[len(STAGING_PREFIX) :].partition("-")[0]):
            shutil.rmtree(staging, ignore_errors=True)


def _alive(pid: str) -> bool:
    """Whether the process that made a staging folder still runs (a name without a pid is stale:
    odimo names every staging folder by its pid)."""
    if not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _make_staging(folder: Path) -> Path:
    return Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}-", dir=folder))


def _writing(target: Path, action: Callable[[], Result]) -> Result:
    """Run a file-system write for `target`; an OSError is the user's environment, not odimo's bug."""
    try:
        return action()
    except OSError as exc:
        raise UnwritableOutputError(f"cannot write {target.name}: {_reason(exc)}", str(target), _fix(exc)) from None


def _reason(exc: OSError) -> str:
    named = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded"}
    named |= {errno.EROFS: "read-only file system", errno.EACCES: "permission denied"}
    return named.get(exc.errno or 0, exc.strerror or str(exc))


def _fix(exc: OSError) -> str:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "free some space, or choose another -o folder; no output was changed"
    return "choose a writable folder with -o; no output was changed"


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
