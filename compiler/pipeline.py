"""`compile`: the driver the CLI calls, a loop over named stages.

import -> analyse -> search -> discretise -> transform -> verify -> emit. Each stage is a function from one frozen
record to the next (each record extends the one before with what its stage produced), so a stage
reads everything earlier stages found and nothing later. The search stage always yields a
`SearchOutcome`, whether the assignment was learned, given or the only one, so later stages never
branch on how it was obtained. An unexpected exception inside a stage is re-raised as
InternalError naming the stage and those completed before it (exit 3: a bug in odimo).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import onnx

from odimo.compiler.annotations import annotate_model
from odimo.compiler.canonicalize import restore_signature
from odimo.compiler.emit import OutputFile, check_onnx_file, model_bytes, write_atomically
from odimo.compiler.importer import MAX_OPSET, load_model, require_model_file
from odimo.compiler.lock import output_lock
from odimo.compiler.outputs import OutputPaths, output_paths
from odimo.compiler.partition import Partition, partition
from odimo.compiler.plots import split_plot
from odimo.compiler.preflight import check_mapping_file, check_settings, check_training
from odimo.compiler.report import CostGoal, Emission, MappingSummary, Report, coupling_rows, mapping_summary
from odimo.compiler.search_stage import SEARCH, SearchOutcome, obtain_assignment
from odimo.ir.assignment import Assignment
from odimo.ir.errors import InternalError, NoSearchableLayerError, OdimoError, UnusableQdqOpsetError
from odimo.ir.records import ImportedModel
from odimo.ir.verify import Comparison, onnx_accuracy, probe_inputs, require_equivalent
from odimo.passes.act_quant import insert_act_quant
from odimo.passes.qdq_bias import qdq_bias
from odimo.passes.requant_outputs import requant_outputs
from odimo.retrain.settings import SearchSettings
from odimo.targets import Target, get_target
from odimo.targets.baselines import MappingRecipe, baseline_costs, corner
from odimo.targets.costing import CostTable, cost_table
from odimo.targets.mapping import validate_mapping
from odimo.targets.plan import TargetPlan, plan_for_target


@dataclass(frozen=True)
class CompileOptions:
    target: str
    mapping: str = SEARCH  # "search", a baseline name, or a mapping file
    output: Path | None = None
    emit: str | None = None  # None: the target's default
    qdq_opset: int | None = None  # None: the input's; >= 25 stores ternary weights as INT2
    report: Path | None = None
    train: bool = False  # fine-tune a given mapping (baseline or file) for the final-phase budget
    supernet_graph: Path | None = None  # where to write the search graph (onnx-io.md §2)
    search: SearchSettings = field(default_factory=SearchSettings)  # training, data, and the seed


# --- the records, one per stage boundary ----------------------------------------------------------


@dataclass(frozen=True)
class Request:
    source: Path
    options: CompileOptions
    target: Target
    emit: str
    paths: OutputPaths


@dataclass(frozen=True)
class Imported(Request):
    imported: ImportedModel


@dataclass(frozen=True)
class Analysed(Imported):
    plan: TargetPlan
    notes: tuple[str, ...]


@dataclass(frozen=True)
class Searched(Analysed):
    outcome: SearchOutcome


@dataclass(frozen=True)
class Discretised(Searched):
    assignment: Assignment  # checked against the model and target, fixed layers filled in
    summary: MappingSummary  # what it costs, beside the baselines
    goal: CostGoal | None  # a --speedup / --energy-saving target and how close the search came


@dataclass(frozen=True)
class Transformed(Discretised):
    partition: Partition


@dataclass(frozen=True)
class Verified(Transformed):
    comparison: Comparison
    probes: np.ndarray
    main_model: onnx.ModelProto  # annotated, with activation quantizers; the QDQ one for qdq emission
    float_model: onnx.ModelProto  # the same object as main_model for float emission
    accuracy: dict[str, float | None]


@dataclass(frozen=True)
class CompileResult:
    paths: OutputPaths
    report: Report
    mapping: Assignment  # what OUT.mapping.json holds
    verification: Comparison


Record = TypeVar("Record", bound=Request)


def advance(record: Request, kind: type[Record], **produced: Any) -> Record:
    """The next stage's record: everything `record` holds, plus what this stage produced."""
    return kind(**{f.name: getattr(record, f.name) for f in fields(record)}, **produced)


# --- the stages ------------------------------------------------------------------------------------


def import_stage(request: Request) -> Imported:
    imported = load_model(request.source, verify_seed=request.options.search.seed)
    _check_qdq_opset(request, imported.opset)
    return advance(request, Imported, imported=imported)


def _check_qdq_opset(request: Request, opset: int) -> None:
    """E130 for a --qdq-opset without QDQ output, below the input's opset or beyond MAX_OPSET."""
    asked = request.options.qdq_opset
    if asked is None:
        return
    if request.emit != "qdq":
        raise UnusableQdqOpsetError(
            f"--qdq-opset {asked} sets the opset of the QDQ output, but this compile emits {request.emit}",
            fix="drop --qdq-opset, or add --emit qdq",
        )
    if not opset <= asked <= MAX_OPSET:
        raise UnusableQdqOpsetError(
            f"--qdq-opset {asked} is outside {opset}-{MAX_OPSET} (the input's opset to the newest odimo supports)",
            str(request.source),
            f"give an opset from {opset} to {MAX_OPSET}, e.g. 25 for INT2 ternary weights",
        )


def analyse_stage(record: Imported) -> Analysed:
    plan = plan_for_target(record.imported.model, record.target)
    _require_layers(plan, record.source)
    one_cu = f"no layer of this model can be split on {record.target.name}: every layer has one CU"
    return advance(record, Analysed, plan=plan, notes=() if plan.searchable else (one_cu,))


def search_stage(record: Analysed) -> Searched:
    options = record.options
    outcome = obtain_assignment(
        record.imported,
        record.plan,
        options.mapping,
        options.train,
        options.search,
        record.paths.checkpoints,
        options.supernet_graph is not None,
    )
    return advance(record, Searched, outcome=outcome)


def discretise_stage(record: Searched) -> Discretised:
    """The hard assignment the rest compiles: checked as emittable, completed, and costed."""
    plan, outcome = record.plan, record.outcome
    geometries = plan.analysis.geometries
    assignment = validate_mapping(outcome.assignment, geometries, record.target, plan.contiguous_layers)
    costs = cost_table(geometries, record.target, assignment)
    baselines = baseline_costs(geometries, record.target)
    settings = record.options.search
    summary = mapping_summary(plan, assignment, costs, baselines, settings.objective, outcome.lam)
    ratio = settings.target_ratio
    goal = _goal(record, costs, ratio) if ratio is not None and outcome.label == SEARCH else None
    return advance(record, Discretised, assignment=assignment, summary=summary, goal=goal)


def _goal(record: Searched, costs: CostTable, asked: float) -> CostGoal:
    """How many times cheaper than the accurate corner (every searchable layer on the first CU)."""
    target, geometries = record.target, record.plan.analysis.geometries
    start = corner(geometries, target)
    objective = record.options.search.objective
    reached = cost_table(geometries, target, start.mapping).total.of(objective) / costs.total.of(objective)
    return CostGoal(objective, start.name, asked, reached)


def transform_stage(record: Discretised) -> Transformed:
    outcome = record.outcome
    graphs = partition(
        outcome.model,
        record.plan,
        record.assignment,
        record.emit,
        outcome.substitutes,
        outcome.quantized,
        record.options.qdq_opset,
    )
    return advance(record, Transformed, partition=graphs)


def verify_stage(record: Transformed) -> Verified:
    """Check every graph against its reference by execution, then label them."""
    outcome, graphs, summary = record.outcome, record.partition, record.summary
    probes = probe_inputs(record.imported.model, record.options.search.seed)
    comparison = require_equivalent(graphs.reference, graphs.partitioned, probes, "the partitioned float model")
    if graphs.qdq is not None:
        require_equivalent(graphs.partitioned, graphs.qdq, probes, "the QDQ model")

    def labelled(model: onnx.ModelProto, integer: bool) -> onnx.ModelProto:
        quantized = insert_act_quant(model, outcome.act_quant, outcome.add_quant).model
        if integer:  # integer biases and requantized outputs, so that runtimes form QLinearConv
            integerized = qdq_bias(requant_outputs(quantized).model).model
            # both passes are exact (the same float32 numbers reach every quantizer), so even with the
            # quantizers in place, where a last-bit difference would flip a code, the outputs agree
            require_equivalent(quantized, integerized, probes, "the integer biases and requantized outputs")
            quantized = integerized
        return annotate_model(
            quantized,
            summary,
            graphs.reindexed,
            graphs.substitutes,
            emit=record.emit,
            seed=record.options.search.seed,
            source_sha256=record.imported.source_sha256,
        ).model

    float_model = labelled(graphs.partitioned, integer=False)
    main_model = labelled(graphs.qdq, integer=True) if graphs.qdq is not None else float_model
    accuracy = dict(outcome.accuracy)
    if outcome.test_data is not None:
        accuracy["onnx"] = onnx_accuracy(main_model, *outcome.test_data)
    return advance(
        record,
        Verified,
        comparison=comparison,
        probes=probes,
        main_model=main_model,
        float_model=float_model,
        accuracy=accuracy,
    )


def emit_stage(record: Verified) -> CompileResult:
    """Restore the user's signature, build the report once, and write every file atomically."""
    paths, imported, outcome = record.paths, record.imported, record.outcome
    main_model = restore_signature(record.main_model, imported.original)
    separate = record.float_model is not record.main_model
    float_model = restore_signature(record.float_model, imported.original) if separate else main_model
    files = [OutputFile(paths.model, model_bytes(main_model), _disk_check(main_model, record.probes))]
    if float_model is not main_model:
        files.append(OutputFile(paths.float_model, model_bytes(float_model), _disk_check(float_model, record.probes)))
    report = Report(
        input_file=imported.path.name,
        opset=imported.opset,
        source_sha256=imported.source_sha256,
        mapping=outcome.label,
        seed=record.options.search.seed,
        emit=record.emit,
        accuracy=record.accuracy,
        summary=record.summary,
        coupling=coupling_rows(record.plan),
        emission=Emission(
            {f.path.name: hashlib.sha256(f.payload).hexdigest() for f in files},
            record.comparison.max_abs_diff,
            record.comparison.top1_agreement,
        ),
        training=outcome.training,
        notes=record.notes + outcome.notes,
        goal=record.goal,
    )
    if outcome.supernet_graph is not None:
        searched = model_bytes(restore_signature(outcome.supernet_graph, imported.original))
        files.append(OutputFile(record.options.supernet_graph, searched, check_onnx_file))
    files += [
        OutputFile(paths.report, report.to_json().encode()),
        OutputFile(paths.mapping, record.assignment.to_json().encode()),
        OutputFile(paths.plot, split_plot(report)),
    ]
    write_atomically(files)
    return CompileResult(paths, report, record.assignment, record.comparison)


STAGES: tuple[tuple[str, Callable[[Any], Any]], ...] = (
    ("import", import_stage),
    ("analyse", analyse_stage),
    ("search", search_stage),
    ("discretise", discretise_stage),
    ("transform", transform_stage),
    ("verify", verify_stage),
    ("emit", emit_stage),
)


def compile(model: str | Path, options: CompileOptions) -> CompileResult:  # noqa: A001 - the verb users expect
    """Run every stage on `model`; options and output paths are checked before the first one, and
    the output is locked for the whole run (compiler/lock.py)."""
    source = Path(model)
    require_model_file(source)
    target = get_target(options.target)
    emit = options.emit or target.default_emit
    training = options.mapping == SEARCH or options.train
    check_settings(options.search)
    if training:
        check_training(options.search, data=options.train)
    if options.mapping != SEARCH and options.mapping.lower() not in _baseline_names(target):
        check_mapping_file(options.mapping)
    paths = output_paths(source, options.target, options.output, options.report, emit, options.supernet_graph, training)
    record: Any = Request(source, options, target, emit, paths)
    completed: list[str] = []
    with output_lock(paths.model):
        try:
            for name, stage in STAGES:
                try:
                    record = stage(record)
                except OdimoError:
                    raise
                except Exception as exc:  # anything else is our bug; say where it happened
                    raise InternalError(name, tuple(completed), exc) from exc
                completed.append(name)
        except BaseException as exc:  # an error or an interrupt: say what was kept
            checkpoint = paths.checkpoints / "last.pt"
            if checkpoint.is_file():
                exc.add_note(f"kept: the checkpoint {checkpoint}; no other output was written")
            raise
    return record


def _baseline_names(target: Target) -> set[str]:
    return {b.name.lower() for b in target.baselines if isinstance(b, MappingRecipe)}


def _disk_check(written: onnx.ModelProto, probes: np.ndarray) -> Callable[[Path], None]:
    """The §4 gate on the staged file: checker, inference, an ORT load, and the same outputs as the
    in-memory model whose function was verified (without its act-quant chains) above."""

    def check(path: Path) -> None:
        check_onnx_file(path)
        require_equivalent(written, onnx.load(str(path)), probes, f"{path.name} read back from disk")

    return check


def _require_layers(plan: TargetPlan, source: Path) -> None:
    """E120 for a model with no Conv or Gemm at all; one whose layers all have one CU is still mapped."""
    if plan.layers:
        return
    raise NoSearchableLayerError(
        f"no layer can be split on target '{plan.target.name}'",
        f"{source.name}: layers found: no Conv/Gemm at all",
        "give odimo a CNN: it maps Conv and Gemm layers onto the target's CUs",
    )
