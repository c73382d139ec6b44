"""Where a compile writes: every output path, derived from `-o` and checked before any work.

Every path odimo may write (main model, float companion, report, mapping, plot, search graph,
checkpoint folder) is compared with the input model and its external data files, as files (device
and inode, so hard links and symlinks count) and as resolved paths, and with each other: a report
pointing at the model, or an input `net.float.onnx` compiled to `-o net.onnx` (whose float companion
is the input), is refused instead of overwritten. Each folder must exist and be writable, and hold
room for the model.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import onnx
from onnx.external_data_helper import ExternalDataInfo, uses_external_data

from odimo.ir.errors import (
    OutputCollisionError,
    UnknownEmitModeError,
    UnusableOutputPathError,
    UnwritableOutputError,
)
from odimo.ir.resources import human_bytes

EMIT_MODES = ("float", "qdq")
# Report, mapping and plot beside the models: a few hundred KB even for large networks.
SIDE_FILES_BYTES = 1 << 20


@dataclass(frozen=True)
class OutputPaths:
    model: Path
    float_model: Path
    checkpoints: Path
    report: Path
    mapping: Path
    plot: Path

    @staticmethod
    def beside(output: Path, report: Path | None) -> OutputPaths:
        stem = output.name[: -len(".onnx")] if output.name.endswith(".onnx") else output.name
        folder = output.parent
        return OutputPaths(
            output,
            folder / f"{stem}.float.onnx",
            folder / f"{stem}.ckpt",
            report or folder / f"{stem}.report.json",
            folder / f"{stem}.mapping.json",
            folder / f"{stem}.split.png",
        )


def output_paths(
    source: Path,
    target: str,
    output: Path | None,
    report: Path | None,
    emit: str,
    search_graph: Path | None = None,
    training: bool = False,
) -> OutputPaths:
    """The paths of one compile, checked (E130) before any work: none is the input or its data,
    no two are the same file, none is a directory, every folder exists and is writable, and the
    model's folder has room for what will be written."""
    if emit not in EMIT_MODES:
        raise UnknownEmitModeError(f"unknown emission mode '{emit}'", fix=f"use one of {', '.join(EMIT_MODES)}")
    output = output or source.with_name(f"{source.stem}.{target}.onnx")
    paths = OutputPaths.beside(output, report)
    named = _written(paths, emit, search_graph, training)
    inputs = input_files(source)
    for role, path in named.items():
        _refuse_input(role, path, inputs)
    _refuse_shared(named)
    for role, path in named.items():
        _require_writable(role, path, is_folder=path == paths.checkpoints)
    _require_space(paths.model.parent, sum(size for _, size in inputs) * (2 if emit == "qdq" else 1))
    return paths


def _written(paths: OutputPaths, emit: str, search_graph: Path | None, training: bool) -> dict[str, Path]:
    """Each path this compile may write, by the name a message gives it."""
    named = {"the output path": paths.model}
    if emit == "qdq":
        named["the float companion"] = paths.float_model
    named |= {"the report (--report)": paths.report, "the mapping": paths.mapping, "the plot": paths.plot}
    if search_graph is not None:
        named["the search graph (--save-search-graph)"] = search_graph
    if training:
        named["the checkpoint folder"] = paths.checkpoints
    return named


def input_files(source: Path) -> list[tuple[Path, int]]:
    """The input model and the external data files it names, with their sizes (what must never be
    written, and what the outputs will roughly weigh). An unreadable model gives only itself: the
    import stage reports what is wrong with it."""
    if not source.is_file():
        return [(source, 0)]
    files = [(source, source.stat().st_size)]
    try:
        model = onnx.load(str(source), load_external_data=False)
    except Exception:  # any parse failure is the importer's to report, with its own message
        return files
    locations = {
        ExternalDataInfo(t).location for t in onnx.external_data_helper._get_all_tensors(model) if uses_external_data(t)
    }
    for location in sorted(locations):
        data = source.parent / location
        files.append((data, data.stat().st_size if data.is_file() else 0))
    return files


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()  # follows symlinks: a link to the input is the input
    except OSError:
        return None
    return stat.st_dev, stat.st_ino


def _same_file(a: Path, b: Path) -> bool:
    ida, idb = _identity(a), _identity(b)
    return (ida is not None and ida == idb) or a.resolve() == b.resolve()


def _refuse_input(role: str, path: Path, inputs: list[tuple[Path, int]]) -> None:
    for file, _ in inputs:
        if _same_file(path, file):
            what = "is the input model" if file == inputs[0][0] else f"is the input's external data file '{file.name}'"
            raise OutputCollisionError(
                f"{role} {what}; odimo never overwrites its input",
                str(path),
                "choose another -o (or --report / --save-search-graph) path; the default is MODEL.<target>.onnx",
            )


def _refuse_shared(named: dict[str, Path]) -> None:
    items = list(named.items())
    for k, (role, path) in enumerate(items):
        for other_role, other in items[k + 1 :]:
            if _same_file(path, other):
                raise OutputCollisionError(
                    f"{role} and {other_role} are the same file",
                    str(path),
                    "give --report and --save-search-graph paths of their own (not OUT.onnx, OUT.float.onnx, ...)",
                )


def _require_writable(role: str, path: Path, is_folder: bool) -> None:
    if path.is_dir() and not is_folder:
        raise UnusableOutputPathError(f"{role} is a directory", str(path), "give a file name, e.g. -o out/model.onnx")
    if is_folder and path.exists() and not path.is_dir():
        raise UnusableOutputPathError(
            f"{role} is a file", str(path), "remove it, or choose another -o (checkpoints go to OUT.ckpt/)"
        )
    folder = path.parent
    if not folder.is_dir():
        raise UnusableOutputPathError(
            f"the folder of {role} does not exist", str(folder), "create it first (odimo does not create folders)"
        )
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UnwritableOutputError(
            f"the folder of {role} is not writable (read-only file system or no permission)",
            str(folder),
            "choose a writable folder with -o (or --report / --save-search-graph)",
        )


def _require_space(folder: Path, model_bytes: int) -> None:
    """Room for the models (about the input's size each) and the side files, checked up front so a
    full disk is a message now rather than a failed write after the training."""
    needed = model_bytes + SIDE_FILES_BYTES
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise UnwritableOutputError(
            f"the output folder has {human_bytes(free)} free, the outputs need about {human_bytes(needed)}",
            str(folder),
            "free some space or choose another -o folder",
        )
