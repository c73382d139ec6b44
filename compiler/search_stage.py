"""The search stage: one `SearchOutcome`, however the assignment was obtained.

A search, a given mapping (a baseline name or a mapping file) fine-tuned with `--train` or not, and
the one mapping of a model whose layers all have one CU are all values of the same type, so the
stages after this one never ask which it was. retrain returns arrays by node name; here they become
the user's graph with its trained weights and, on request, the search graph checked against the
supernet's own outputs. Keeping this graph work out of retrain lets passes and retrain stay
siblings that never import each other.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import onnx

from odimo.compiler.report import Training
from odimo.ir.assignment import Assignment
from odimo.ir.errors import DataError, ReferenceMismatchError
from odimo.ir.records import ActQuant, AddInputQuant, ImportedModel, QuantizedLayers, Substitute
from odimo.ir.verify import compare_outputs, logits_view, run, session
from odimo.passes.act_quant import insert_act_quant
from odimo.passes.mix_substitutes import diagonal_substitutes
from odimo.passes.set_weights import set_weights
from odimo.passes.supernet_graph import supernet_graph
from odimo.retrain.run import SupernetGraphCheck, Trained, search
from odimo.retrain.settings import SearchSettings
from odimo.targets.baselines import MappingRecipe, build_baseline, fixed_mapping
from odimo.targets.mapping import load_mapping, validate_mapping
from odimo.targets.plan import TargetPlan

SEARCH = "search"  # the --mapping value (and report label) of a learned mapping


@dataclass(frozen=True)
class SearchOutcome:
    """An assignment and everything the transform, verify and emit stages need with it."""

    assignment: Assignment  # hard; the discretise stage checks it and fills in the fixed layers
    label: str  # the report's "mapping": search, a baseline name, a mapping file name, or fixed
    model: onnx.ModelProto  # the canonical graph with the weights to partition (trained or imported)
    substitutes: dict[str, Substitute]
    quantized: QuantizedLayers | None  # trained quantizer results; None: quantize with initial scales
    act_quant: dict[str, ActQuant]
    accuracy: dict[str, float | None]
    lam: float | None  # the λ that produced the assignment; None for a given one
    training: Training | None = None
    test_data: tuple[np.ndarray, np.ndarray] | None = None  # for the onnxruntime accuracy
    supernet_graph: onnx.ModelProto | None = None
    notes: tuple[str, ...] = ()  # for the report: how the mapping's weights were obtained
    add_quant: tuple[AddInputQuant, ...] = ()  # the trained quantizers of residual Add inputs


def obtain_assignment(
    imported: ImportedModel,
    plan: TargetPlan,
    mapping: str,
    train: bool,
    settings: SearchSettings,
    checkpoints: Path,
    supernet_graph_asked: bool,
) -> SearchOutcome:
    """What `--mapping` asks for: a search (default), or a given mapping, trained with `--train`."""
    given = _given(mapping, plan)
    if given is not None and not train:
        return _untrained(imported, plan, settings, *given)
    settings = replace(
        settings,
        checkpoint_dir=checkpoints,
        save_supernet_graph=supernet_graph_asked,
        source_sha256=imported.source_sha256,
    )
    trained = search(imported, plan, settings, given[0] if given else None)
    outcome = _outcome(imported, trained, given[1] if given else SEARCH)
    return replace(
        outcome,
        lam=None if given else trained.lam,
        training=Training(trained.phase_seconds, trained.history, settings.epochs, settings.data),
        supernet_graph=checked_supernet_graph(outcome.model, trained),
        notes=trained.notes,
    )


def _outcome(imported: ImportedModel, trained: Trained, label: str) -> SearchOutcome:
    """What a trained or calibrated supernet gives the later stages: the user's graph with its
    weights, the quantizers, and the accuracies as the report states them."""
    model = set_weights(imported.model, trained.weights, trained.biases, trained.constants).model
    tested = len(trained.test_data[1]) > 0
    return SearchOutcome(
        trained.mapping,
        label,
        model,
        trained.substitutes,
        trained.quantized,
        trained.act_quant,
        _measured(trained.accuracy, tested),
        None,
        test_data=trained.test_data if tested else None,
        add_quant=trained.add_quant,
    )


def _untrained(
    imported: ImportedModel, plan: TargetPlan, settings: SearchSettings, assignment: Assignment, label: str
) -> SearchOutcome:
    """A given mapping as it is, its quantized layers calibrated to the float model on a few
    training images (no training step), so that an untrained baseline is already usable.

    Calibration is optional here, unlike for training: where the data cannot be fitted to the model
    (the default Fashion-MNIST for a 224x224 network, say), the mapping is emitted uncalibrated and
    the report says why and how to calibrate it. A model with no searchable layer has one mapping,
    which a search would not train either, so its data is never loaded.
    """
    if not plan.searchable:  # every layer has one CU: nothing was searched, so nothing is loaded
        notes: tuple[str, ...] = ()
    elif settings.calibration_images == 0:
        notes = ("not calibrated (--calibration-images 0)",)
    else:
        try:
            calibrated = search(imported, plan, replace(settings, epochs=(0, 0, 0), checkpoint_dir=None), assignment)
        except DataError as exc:
            notes = (f"not calibrated: {exc.what}; give --data that fits the model to calibrate the quantized layers",)
        else:
            note = f"calibrated on {settings.calibration_images} training images of {settings.data}, not trained"
            return replace(_outcome(imported, calibrated, label), notes=(note,))
    return SearchOutcome(
        assignment,
        label,
        imported.model,
        initial_substitutes(imported.model, plan, assignment),
        None,
        {},
        {"float": None, "final": None},
        None,
        notes=notes,
    )


def _measured(accuracy: dict[str, float | None], tested: bool) -> dict[str, float | None]:
    """Accuracies as the report states them: None (JSON null, "no test accuracy") where there was
    nothing to measure on (data without a test part, or no training step for "val"), never NaN,
    which is not JSON."""
    return {
        name: value if value is not None and math.isfinite(value) and (tested or name == "val") else None
        for name, value in accuracy.items()
    }


def initial_substitutes(model: onnx.ModelProto, plan: TargetPlan, assignment: Assignment) -> dict[str, Substitute]:
    """Substitute weights for an untrained assignment: the diagonal init of mix_substitutes."""
    cu = plan.target.substitute_cu
    if cu is None:
        return {}
    layers = [p.name for p in plan.searchable if cu in assignment.layers[p.name]]
    return diagonal_substitutes(model, layers, cu)


def _given(spec: str, plan: TargetPlan) -> tuple[Assignment, str] | None:
    """The assignment `--mapping` names, validated, with its report label; None for a search.

    A model with no searchable layer has one assignment, so a search of it is that one ("fixed").
    """
    target = plan.target
    if spec == SEARCH:
        return None if plan.searchable else (fixed_mapping(plan.analysis.geometries, target), "fixed")
    names = {b.name.lower(): b.name for b in target.baselines if isinstance(b, MappingRecipe)}
    if spec.lower() in names:
        assignment = build_baseline(names[spec.lower()], plan.analysis.geometries, target).mapping
        label = names[spec.lower()]
    else:
        assignment, label = load_mapping(spec), Path(spec).name
    return validate_mapping(assignment, plan.analysis.geometries, target, plan.contiguous_layers), label


def checked_supernet_graph(model: onnx.ModelProto, trained: Trained) -> onnx.ModelProto | None:
    """The searched network with one function call per searchable layer, or None when not asked.

    It must compute the torch supernet's logits on the probes (eval mode, soft choices, both
    without activation quantizers, onnx-io.md §4); the quantizer chains are inserted after.
    """
    check: SupernetGraphCheck | None = trained.supernet_graph
    if check is None:
        return None
    graph = supernet_graph(model, check.nodes).model
    produced = run(session(logits_view(graph)), check.probes)  # the supernet returns logits
    result = compare_outputs([check.expected], produced[:1])
    if not result.passed:
        raise ReferenceMismatchError(
            f"the search graph differs from the torch supernet by {result.max_abs_diff:.3g} > {result.bound:.3g}"
        )
    return insert_act_quant(graph, trained.act_quant, trained.add_quant).model
