"""`compile`: import, analyse, map, transform, verify, emit — the one function the CLI calls.

Each stage takes the previous stage's value and returns a new one; an unexpected exception inside a
stage is re-raised naming the stage (exit code 3: a bug in odimo, not in the user's input).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from odimo.compiler.annotations import layer_notes, model_doc
from odimo.compiler.emit import OutputFile, check_onnx_file, model_bytes, write_atomically
from odimo.compiler.errors import MappingError, NoSearchableLayerError, OdimoError, OutputPathError, VerificationError
from odimo.compiler.importer import ImportedModel, load_model
from odimo.compiler.plan import TargetPlan, plan_for_target
from odimo.compiler.report import RunFacts, build_report, embedded_json
from odimo.compiler.verify import Comparison, compare, probe_batch
from odimo.passes.annotate import NodeNote, annotate
from odimo.passes.mix_substitutes import diagonal_substitutes, mix_substitutes
from odimo.passes.order_channels import order_channels
from odimo.passes.reorder_channels import reorder_channels
from odimo.passes.split_layers import Substitute, split_layers
from odimo.targets import get_target
from odimo.targets.base import Role, Target
from odimo.targets.baselines import baseline_costs, baselines_for, build_baseline
from odimo.targets.costing import cost_table
from odimo.targets.mapping import Mapping, load_mapping, validate_mapping

VERSION = "0.1.0"
EMIT_MODES = ("float", "qdq")


@dataclass(frozen=True)
class CompileOptions:
    target: str
    mapping: str = "search"
    output: Path | None = None
    emit: str | None = None
    report: Path | None = None
    seed: int = 0
    objective: str = "latency"
    lam: float | None = None


@dataclass(frozen=True)
class OutputPaths:
    model: Path
    report: Path
    mapping: Path
    plot: Path

    @staticmethod
    def beside(output: Path, report: Path | None) -> "OutputPaths":
        stem = output.name[: -len(".onnx")] if output.name.endswith(".onnx") else output.name
        folder = output.parent
        return OutputPaths(output, report or folder / f"{stem}.report.json", folder / f"{stem}.mapping.json", folder / f"{stem}.split.png")


@dataclass(frozen=True)
class CompileResult:
    paths: OutputPaths
    report: dict[str, Any]
    mapping: Mapping
    verification: Comparison


@dataclass(frozen=True)
class Transformed:
    """The graphs of one mapping: the reference, the partitioned float model, and what was done."""

    reference: onnx.ModelProto
    partitioned: onnx.ModelProto
    reindexed: frozenset[str]
    substitutes: dict[str, str] = field(default_factory=dict)


@contextlib.contextmanager
def stage(name: str) -> Iterator[None]:
    try:
        yield
    except OdimoError:
        raise
    except Exception as exc:  # noqa: BLE001 - anything else is our bug; say where it happened
        raise VerificationError("E900", "internal-error", f"stage '{name}' failed: {type(exc).__name__}: {exc}", fix="this is a bug in odimo; please report it with the model (nothing was written)") from exc


def compile(model: str | Path, options: CompileOptions) -> CompileResult:  # noqa: A001 - the verb users expect
    source = Path(model)
    target = get_target(options.target)
    emit = options.emit or "float"
    paths = _output_paths(source, options)
    with stage("import"):
        imported = load_model(source, verify_seed=options.seed)
    with stage("analyse"):
        plan = plan_for_target(imported.model, target)
        _require_searchable(plan, source)
    with stage("search"):
        mapping, mapping_source = _resolve_mapping(options.mapping, plan, source)
    with stage("transform"):
        transformed = transform(imported.model, plan, mapping)
    with stage("verify"):
        costs = cost_table(plan.analysis.geometries, target, mapping)
        facts = RunFacts(mapping_source, options.objective, options.lam, options.seed, emit, {"float": None, "final": None})
        report = build_report(imported, plan, mapping, costs, baseline_costs(plan.analysis.geometries, target), facts)
        final = annotate_model(transformed, report, imported, options).model
        comparison = compare(transformed.reference, final, probe_batch(imported.model, options.seed))
        if not comparison.passed:
            raise VerificationError("E900", "verification-failed", f"the partitioned model differs from the reference: max |y - y_ref| = {comparison.max_abs_diff:.3g} > {comparison.bound:.3g}", fix="this is a bug in odimo; please report it with the model (nothing was written)")
    with stage("emit"):
        report["emission"] = {"files": {paths.model.name: _sha256(model_bytes(final))}, "max_abs_diff": comparison.max_abs_diff, "top1_agreement": comparison.top1_agreement}
        write_atomically(_output_files(paths, final, transformed.reference, report, mapping, imported.model, options.seed))
    return CompileResult(paths, report, mapping, comparison)


def transform(model: onnx.ModelProto, plan: TargetPlan, mapping: Mapping, trained_substitutes: dict[str, Substitute] | None = None) -> Transformed:
    """Order, reorder and split: the partitioned float graph and the reference it must equal."""
    substitute_cu = plan.target.substitute_cu
    substitutes: dict[str, Substitute] = {}
    if substitute_cu is not None:
        layers = [p.name for p in plan.searchable if substitute_cu in mapping.layers[p.name]]
        substitutes = {name: sub for name, sub in (trained_substitutes or diagonal_substitutes(model, layers, substitute_cu)).items() if name in layers}
    reference = mix_substitutes(model, mapping.layers, substitutes).model if substitutes else model
    order = order_channels(plan, mapping.layers)
    reordered = reorder_channels(model, plan.analysis.coupling, order)
    partitioned = split_layers(reordered.model, plan, mapping.layers, substitutes).model
    reindexed = _reindexed_nodes(plan, order.perms)
    return Transformed(reference, partitioned, frozenset(reindexed), {name: sub.cu for name, sub in substitutes.items()})


def annotate_model(transformed: Transformed, report: dict[str, Any], imported: ImportedModel, options: CompileOptions):
    notes = layer_notes(report, set(transformed.reindexed), transformed.substitutes)
    for node in transformed.partitioned.graph.node:
        if node.name not in notes:
            props = {"odimo.cu": "host"}
            if node.name in transformed.reindexed:
                props["odimo.reindexed"] = "true"
            notes[node.name] = NodeNote(props)
    props = {
        "odimo.version": VERSION,
        "odimo.target": report["target"]["name"],
        "odimo.objective": report["objective"],
        "odimo.lambda": "" if report["lambda"] is None else f"{report['lambda']:g}",
        "odimo.seed": str(report["seed"]),
        "odimo.emit": report["emit"],
        "odimo.mapping": report["mapping"],
        "odimo.source.sha256": imported.source_sha256,
        "odimo.report": embedded_json(report),
    }
    return annotate(transformed.partitioned, notes, props, model_doc(report))


def _reindexed_nodes(plan: TargetPlan, perms: dict[str, np.ndarray]) -> set[str]:
    coupling = plan.analysis.coupling
    touched = lambda view: any(seg.space in perms for seg in view)  # noqa: E731
    return {p.node for p in coupling.params if touched(p.view)} | {s.node for s in coupling.sinks if touched(s.view)}


def _output_paths(source: Path, options: CompileOptions) -> OutputPaths:
    output = options.output or source.with_name(f"{source.stem}.{options.target}.onnx")
    if output.resolve() == source.resolve():
        raise OutputPathError("E130", "output-path", "the output path is the input model; odimo never overwrites its input", str(output), "choose another -o path (the default is MODEL.<target>.onnx)")
    if output.is_dir():
        raise OutputPathError("E130", "output-path", "the output path is a directory", str(output), "give a file name, e.g. -o out/model.onnx")
    if not output.parent.is_dir():
        raise OutputPathError("E130", "output-path", "the output folder does not exist", str(output.parent), "create it first (odimo does not create folders)")
    return OutputPaths.beside(output, options.report)


def _require_searchable(plan: TargetPlan, source: Path) -> None:
    if plan.searchable:
        return
    kinds = sorted({f"{p.layer.geometry.kind.value} ({p.support.role.value})" for p in plan.layers}) or ["no Conv/Gemm at all"]
    raise NoSearchableLayerError("E120", "no-searchable-layer", f"no layer can be split on target '{plan.target.name}'", f"{source.name}: layers found: {', '.join(kinds)}", "choose the other target, or give a model with convs its CUs can share")


def _resolve_mapping(spec: str, plan: TargetPlan, source: Path) -> tuple[Mapping, str]:
    target = plan.target
    names = {name.lower(): name for name in baselines_for(target)}
    if spec.lower() in names:
        mapping = build_baseline(names[spec.lower()], plan.analysis.geometries, target).mapping
        label = names[spec.lower()]
    elif spec == "search":
        raise MappingError("E310", "not-available", "the mapping search is not available in this build", str(source), f"pass --mapping with one of {', '.join(n.lower() for n in names)} or a mapping file")
    else:
        mapping, label = load_mapping(spec), Path(spec).name
    return validate_mapping(mapping, plan.analysis.geometries, target, plan.contiguous_layers), label


def _output_files(paths: OutputPaths, final: onnx.ModelProto, reference: onnx.ModelProto, report: dict[str, Any], mapping: Mapping, canonical: onnx.ModelProto, seed: int) -> list[OutputFile]:
    from odimo.compiler.plots import split_plot

    probes = probe_batch(canonical, seed)

    def check_main(path: Path) -> None:
        check_onnx_file(path)
        result = compare(reference, onnx.load(str(path)), probes)
        if not result.passed:
            raise VerificationError("E900", "verification-failed", f"{path.name} read back from disk differs from the reference by {result.max_abs_diff:.3g}", fix="this is a bug in odimo; please report it")

    return [
        OutputFile(paths.model, model_bytes(final), check_main),
        OutputFile(paths.report, (json.dumps(report, indent=1, sort_keys=True) + "\n").encode()),
        OutputFile(paths.mapping, mapping.to_json().encode()),
        OutputFile(paths.plot, split_plot(report)),
    ]


def _sha256(payload: bytes) -> str:
    import hashlib

    return hashlib.sha256(payload).hexdigest()
