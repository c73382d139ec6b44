"""`compile`: import, analyse, map, transform, verify, emit — the one function the CLI calls.

Each stage takes the previous stage's value and returns a new one; an unexpected exception inside a
stage is re-raised naming the stage (exit code 3: a bug in odimo, not in the user's input).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from odimo.compiler.annotations import layer_notes, model_doc
from odimo.compiler.emit import OutputFile, check_onnx_file, model_bytes, write_atomically
from odimo.compiler.canonicalize import restore_signature
from odimo.ir.errors import (
    InternalError,
    NoSearchableLayerError,
    OdimoError,
    ReferenceMismatchError,
    UnknownEmitModeError,
    UnusableOutputPathError,
)
from odimo.compiler.importer import load_model
from odimo.ir.records import ImportedModel
from odimo.targets.plan import TargetPlan, plan_for_target
from odimo.compiler.plots import split_plot
from odimo.targets.quantize import QuantizedLayers, quantize_layers
from odimo.compiler.trained_graphs import checked_search_graph, trained_model
from odimo.compiler.report import RunFacts, build_report, embedded_json
from odimo.ir.verify import Comparison, compare, onnx_accuracy, probe_inputs
from odimo.passes.act_quant import insert_act_quant
from odimo.passes.annotate import NodeNote, annotate
from odimo.passes.base import PassResult
from odimo.passes.mix_substitutes import diagonal_substitutes, mix_substitutes
from odimo.passes.order_channels import order_channels
from odimo.passes.qdq_weights import qdq_weights
from odimo.passes.reorder_channels import reorder_channels
from odimo.passes.set_weights import set_weights
from odimo.passes.split_layers import split_layers
from odimo.ir.records import Substitute
from odimo.retrain.run import SearchSettings, search
from odimo.targets import get_target
from odimo.targets.baselines import MappingRecipe, baseline_costs, build_baseline, fixed_mapping
from odimo.targets.costing import cost_table
from odimo.ir.assignment import Assignment
from odimo.targets.mapping import load_mapping, validate_mapping

VERSION = importlib.metadata.version("odimo")
EMIT_MODES = ("float", "qdq")


@dataclass(frozen=True)
class CompileOptions:
    target: str
    mapping: str = "search"
    output: Path | None = None
    emit: str | None = None
    report: Path | None = None
    seed: int = 0
    train: bool = False  # fine-tune a given mapping (baseline or file) for the final-phase budget
    search_graph: Path | None = None  # where to write the search graph (onnx-io.md §2)
    search: SearchSettings = field(default_factory=SearchSettings)


@dataclass(frozen=True)
class OutputPaths:
    model: Path
    float_model: Path
    checkpoints: Path
    report: Path
    mapping: Path
    plot: Path

    @staticmethod
    def beside(output: Path, report: Path | None) -> "OutputPaths":
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


@dataclass(frozen=True)
class CompileResult:
    paths: OutputPaths
    report: dict[str, Any]
    mapping: Assignment
    verification: Comparison


@dataclass(frozen=True)
class Transformed:
    """The graphs of one mapping: the reference, the partitioned float model, and what was done."""

    reference: onnx.ModelProto
    partitioned: onnx.ModelProto
    reindexed: frozenset[str]
    substitutes: dict[str, str] = field(default_factory=dict)


@contextlib.contextmanager
def stage(name: str, completed: list[str]) -> Iterator[None]:
    """Run one stage; on success add it to `completed`. An OdimoError passes through; anything else
    is our bug and becomes an InternalError naming this stage and those completed before it."""
    try:
        yield
    except OdimoError:
        raise
    except Exception as exc:  # anything else is our bug; say where it happened
        raise InternalError(name, tuple(completed), exc) from exc
    completed.append(name)


def compile(model: str | Path, options: CompileOptions) -> CompileResult:  # noqa: A001 - the verb users expect
    source = Path(model)
    completed: list[str] = []
    target = get_target(options.target)
    emit = options.emit or target.default_emit
    paths = _output_paths(source, options, emit)
    with stage("import", completed):
        imported = load_model(source, verify_seed=options.seed)
    with stage("analyse", completed):
        plan = plan_for_target(imported.model, target)
        _require_layers(plan, source)
        notes = (
            [] if plan.searchable else [f"no layer of this model can be split on {target.name}: every layer has one CU"]
        )
    with stage("search", completed):
        if options.mapping == "search" and not plan.searchable:
            given = (fixed_mapping(plan.analysis.geometries, target), "fixed")
        else:
            given = None if options.mapping == "search" else _resolve_mapping(options.mapping, plan)
        trained = None
        if given is None or options.train:
            settings = replace(
                options.search,
                seed=options.seed,
                checkpoint_dir=paths.checkpoints,
                save_search_graph=options.search_graph is not None,
            )
            trained = search(imported, plan, settings, given[0] if given else None)
            trained_graph = trained_model(imported.model, trained)
            searched_graph = checked_search_graph(trained_graph, trained)
        mapping = (
            validate_mapping(trained.mapping, plan.analysis.geometries, target, plan.contiguous_layers)
            if trained
            else given[0]
        )
        mapping_source = given[1] if given else "search"
    with stage("transform", completed):
        if trained is not None:
            emitted = emit_graphs(trained_graph, plan, mapping, emit, trained.substitutes, trained.quantized)
        else:
            emitted = emit_graphs(
                imported.model, plan, mapping, emit, initial_substitutes(imported.model, plan, mapping)
            )
    with stage("verify", completed):
        costs = cost_table(plan.analysis.geometries, target, mapping)
        accuracy = dict(trained.accuracy) if trained else {"float": None, "final": None}
        lam = options.search.lam if trained and given is None else None
        facts = RunFacts(mapping_source, options.search.objective, lam, options.seed, emit, accuracy)
        report = build_report(imported, plan, mapping, costs, baseline_costs(plan.analysis.geometries, target), facts)
        if notes:
            report["notes"] = notes
        if trained is not None:
            report["training"] = {
                "phase_seconds": trained.phase_seconds,
                "history": trained.history,
                "epochs": list(options.search.epochs),
                "data": options.search.data,
            }
        probes = probe_inputs(imported.model, options.seed)
        comparison = _require_match(
            emitted.transformed.reference, emitted.transformed.partitioned, probes, "the partitioned float model"
        )
        if emitted.main is not None:
            _require_match(emitted.transformed.partitioned, emitted.main, probes, "the QDQ model")
        act_quant = trained.act_quant if trained else {}
        float_model = annotate_model(
            emitted.transformed, insert_act_quant(emitted.transformed.partitioned, act_quant).model, report, imported
        ).model
        main_model = (
            annotate_model(emitted.transformed, insert_act_quant(emitted.main, act_quant).model, report, imported).model
            if emitted.main is not None
            else float_model
        )
        if trained is not None:
            report["accuracy"]["onnx"] = onnx_accuracy(main_model, *trained.test_data)
    with stage("emit", completed):
        main_model, float_model = _with_user_signature(main_model, float_model, imported)
        files = [OutputFile(paths.model, model_bytes(main_model), _disk_check(main_model, probes))]
        if main_model is not float_model:
            files.append(OutputFile(paths.float_model, model_bytes(float_model), _disk_check(float_model, probes)))
        report["emission"] = {
            "files": {f.path.name: _sha256(f.payload) for f in files},
            "max_abs_diff": comparison.max_abs_diff,
            "top1_agreement": comparison.top1_agreement,
        }
        if trained is not None and searched_graph is not None:
            files.append(
                OutputFile(
                    options.search_graph,
                    model_bytes(restore_signature(searched_graph, imported.original)),
                    check_onnx_file,
                )
            )
        files += [
            OutputFile(paths.report, (json.dumps(report, indent=1, sort_keys=True) + "\n").encode()),
            OutputFile(paths.mapping, mapping.to_json().encode()),
            OutputFile(paths.plot, split_plot(report)),
        ]
        write_atomically(files)
    return CompileResult(paths, report, mapping, comparison)


@dataclass(frozen=True)
class EmittedGraphs:
    transformed: Transformed
    main: onnx.ModelProto | None  # the QDQ model, when that is the main output


def emit_graphs(
    model: onnx.ModelProto,
    plan: TargetPlan,
    mapping: Assignment,
    emit: str,
    substitutes: dict[str, Substitute],
    quantized: QuantizedLayers | None = None,
) -> EmittedGraphs:
    """The float partition of `model` (fake-quantized first for QDQ) and, for QDQ, its integer form.

    `quantized` carries trained quantizer results; without it the weights are quantized here with
    the formats' initial scales (an untrained baseline mapping).
    """
    if emit == "float":
        return EmittedGraphs(transform(model, plan, mapping, substitutes), None)
    quantized = quantized or quantize_layers(model, plan, mapping, substitutes)
    with_weights = set_weights(model, quantized.weights, quantized.biases).model
    transformed = transform(with_weights, plan, mapping, quantized.substitutes or substitutes)
    return EmittedGraphs(transformed, qdq_weights(transformed.partitioned, quantized.sublayer_steps(mapping)).model)


def initial_substitutes(model: onnx.ModelProto, plan: TargetPlan, mapping: Assignment) -> dict[str, Substitute]:
    """Substitute weights for an untrained mapping: the diagonal init of mix_substitutes."""
    cu = plan.target.substitute_cu
    if cu is None:
        return {}
    layers = [p.name for p in plan.searchable if cu in mapping.layers[p.name]]
    return diagonal_substitutes(model, layers, cu)


def transform(
    model: onnx.ModelProto, plan: TargetPlan, mapping: Assignment, substitutes: dict[str, Substitute]
) -> Transformed:
    """Order, reorder and split: the partitioned float graph and the reference it must equal."""
    reference = mix_substitutes(model, mapping.layers, substitutes).model if substitutes else model
    order = order_channels(plan, mapping.layers)
    reordered = reorder_channels(model, plan.analysis.coupling, order)
    partitioned = split_layers(reordered.model, plan, mapping.layers, substitutes).model
    reindexed = _reindexed_nodes(plan, order.perms)
    return Transformed(
        reference, partitioned, frozenset(reindexed), {name: sub.cu for name, sub in substitutes.items()}
    )


def _require_match(reference: onnx.ModelProto, candidate: onnx.ModelProto, probes: np.ndarray, what: str) -> Comparison:
    result = compare(reference, candidate, probes)
    if not result.passed:
        raise ReferenceMismatchError(
            f"{what} differs from its reference: max |y - y_ref| = {result.max_abs_diff:.3g} > {result.bound:.3g}",
        )
    return result


def _disk_check(written: onnx.ModelProto, probes: np.ndarray):
    """The §4 gate on the staged file: checker, inference, an ORT load, and the same outputs as the
    in-memory model whose function was verified (without its act-quant chains) above."""

    def check(path: Path) -> None:
        check_onnx_file(path)
        _require_match(written, onnx.load(str(path)), probes, f"{path.name} read back from disk")

    return check


def annotate_model(
    transformed: Transformed, model: onnx.ModelProto, report: dict[str, Any], imported: ImportedModel
) -> PassResult:
    """Label `model` (the float or QDQ partition of `transformed`) from the report rows."""
    target = get_target(report["target"]["name"])
    formats = {cu: fmt.value for cu, fmt in target.weight_formats.items()} if report["emit"] == "qdq" else {}
    notes = layer_notes(report, set(transformed.reindexed), transformed.substitutes, formats)
    for node in model.graph.node:
        if node.name not in notes:
            props = {"odimo.cu": "host"}
            if node.op_type in ("Clip", "Mul", "Add", "Floor", "Div") and "/act/" in node.name:
                props["odimo.role"] = "act-quant"
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
        "odimo.source.sha256": imported.source_sha256,
        "odimo.report": embedded_json(report),
    }
    return annotate(model, notes, props, model_doc(report))


def _reindexed_nodes(plan: TargetPlan, perms: dict[str, np.ndarray]) -> set[str]:
    coupling = plan.analysis.coupling
    touched = lambda view: any(seg.space in perms for seg in view)  # noqa: E731
    return {p.node for p in coupling.params if touched(p.view)} | {s.node for s in coupling.sinks if touched(s.view)}


def _output_paths(source: Path, options: CompileOptions, emit: str) -> OutputPaths:
    output = options.output or source.with_name(f"{source.stem}.{options.target}.onnx")
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
    return OutputPaths.beside(output, options.report)


def _require_layers(plan: TargetPlan, source: Path) -> None:
    """E120 for a model with no Conv or Gemm at all; one whose layers all have one CU is still mapped."""
    if plan.layers:
        return
    raise NoSearchableLayerError(
        f"no layer can be split on target '{plan.target.name}'",
        f"{source.name}: layers found: no Conv/Gemm at all",
        "give odimo a CNN: it maps Conv and Gemm layers onto the target's CUs",
    )


def _with_user_signature(
    main: onnx.ModelProto, float_model: onnx.ModelProto, imported: ImportedModel
) -> tuple[onnx.ModelProto, onnx.ModelProto]:
    """Both outputs with the user's input and output types (a fixed batch stays fixed)."""
    restored_main = restore_signature(main, imported.original)
    return restored_main, (restored_main if float_model is main else restore_signature(float_model, imported.original))


def _resolve_mapping(spec: str, plan: TargetPlan) -> tuple[Assignment, str]:
    """A baseline name (any case) or a mapping file, validated; with the label the report shows."""
    target = plan.target
    names = {b.name.lower(): b.name for b in target.baselines if isinstance(b, MappingRecipe)}
    if spec.lower() in names:
        mapping = build_baseline(names[spec.lower()], plan.analysis.geometries, target).mapping
        label = names[spec.lower()]
    else:
        mapping, label = load_mapping(spec), Path(spec).name
    return validate_mapping(mapping, plan.analysis.geometries, target, plan.contiguous_layers), label


def _sha256(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()
