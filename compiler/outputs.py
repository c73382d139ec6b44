"""Where a compile writes: every output path, derived from `-o` and checked before any work."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from odimo.ir.errors import UnknownEmitModeError, UnusableOutputPathError

EMIT_MODES = ("float", "qdq")


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


def output_paths(source: Path, target: str, output: Path | None, report: Path | None, emit: str) -> OutputPaths:
    """The paths of one compile (E130 when they cannot be written or would overwrite the input)."""
    output = output or source.with_name(f"{source.stem}.{target}.onnx")
    if output.resolve() == source.resolve():
        raise UnusableOutputPathError(
            "the output path is the input model; odimo never overwrites its input",
            str(output),
            "choose another -o path (the default is MODEL.<target>.onnx)",
        )
    if output.is_dir():
        raise UnusableOutputPathError(
            "the output path is a directory",
            str(output),
            "give a file name, e.g. -o out/model.onnx",
        )
    if not output.parent.is_dir():
        raise UnusableOutputPathError(
            "the output folder does not exist",
            str(output.parent),
            "create it first (odimo does not create folders)",
        )
    if emit not in EMIT_MODES:
        raise UnknownEmitModeError(f"unknown emission mode '{emit}'", fix=f"use one of {', '.join(EMIT_MODES)}")
    return OutputPaths.beside(output, report)
