"""The search stage: data in, a trained supernet out, and the numbers the emission needs from it.

Keeps the pipeline free of torch details and retrain free of graph work: the result carries the
discrete mapping, the trained weights and biases by node (fake-quantized where the target trains
quantized), the trained constants, the substitutes, each row's quantization step, the activation
quantizers (of the layers' and the residual Adds' inputs) and the accuracies; for the search graph,
each searchable layer's state and the supernet's outputs on the probes it must reproduce. The
driver writes them into graphs (compiler/search_stage.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import torch

from odimo.ir.assignment import Assignment
from odimo.ir.records import ActQuant, AddInputQuant, ImportedModel, QuantizedLayers, Substitute, SupernetNode
from odimo.ir.verify import DYNAMIC_BATCH_PROBE, probe_inputs
from odimo.retrain.bridge import OnnxModule
from odimo.retrain.data import Dataset, fit_to_model, load_dataset, split_train_val
from odimo.retrain.quantizers import set_act_rounding
from odimo.retrain.settings import SearchSettings
from odimo.retrain.supernet import Supernet
from odimo.retrain.trainer import evaluate, train
from odimo.targets.plan import TargetPlan


@dataclass(frozen=True)
class SupernetGraphCheck:
    """What the search graph must compute: the supernet's logits (eval mode, soft choices, no
    activation quantizers) on seeded probe images."""

    nodes: dict[str, SupernetNode]
    probes: np.ndarray
    expected: np.ndarray


@dataclass(frozen=True)
class Trained:
    mapping: Assignment
    weights: dict[str, np.ndarray]  # by Conv/Gemm node, what the canonical graph's nodes get back
    biases: dict[str, np.ndarray]
    constants: dict[str, np.ndarray]  # other trained initializers (BN affine, PRelu slopes)
    substitutes: dict[str, Substitute]
    quantized: QuantizedLayers | None
    act_quant: dict[str, ActQuant]
    add_quant: tuple[AddInputQuant, ...]  # the quantized inputs of residual Adds
    accuracy: dict[str, float | None]
    phase_seconds: dict[str, float]
    history: list[dict[str, Any]]
    test_data: tuple[np.ndarray, np.ndarray]
    lam: float  # the λ the search ended with (adapted to a cost target, or the one given)
    supernet_graph: SupernetGraphCheck | None = None
    notes: tuple[str, ...] = ()  # what the discretization did (the trainer's notes)


def load_data(imported: ImportedModel, settings: SearchSettings) -> Dataset:
    """The dataset, fitted to the model's input and output (a clear E140 when it cannot be)."""
    dataset = load_dataset(
        settings.data, input_shape=imported.input_shape, num_classes=imported.num_outputs, seed=settings.seed
    )
    return fit_to_model(dataset, imported.input_shape, imported.num_outputs)


def search(
    imported: ImportedModel, plan: TargetPlan, settings: SearchSettings, fixed_mapping: Assignment | None = None
) -> Trained:
    """Train (search + final, or final only for a `fixed_mapping`) and collect the results."""
    torch.manual_seed(settings.seed)
    dataset = load_data(imported, settings)
    split = split_train_val(dataset, seed=settings.seed)
    device = torch.device(settings.device)
    reference = OnnxModule(imported.model).to(device)  # the float model: measured, then calibrates and teaches
    float_accuracy = evaluate(reference, dataset.x_test, dataset.y_test, 256, device)
    supernet = Supernet(imported.model, plan)
    set_act_rounding(supernet, settings.act_rounding)
    result = train(supernet, split, settings, fixed_mapping, reference)
    final_accuracy = evaluate(supernet, dataset.x_test, dataset.y_test, 256, device)
    supernet.to("cpu").to(memory_format=torch.contiguous_format)
    weights, biases, substitutes, quantized = _trained_layers(supernet, result.mapping)
    act_quant = supernet.act_quantizers()
    check = _supernet_graph_check(imported.model, supernet, settings.seed) if settings.save_supernet_graph else None
    return Trained(
        mapping=result.mapping,
        weights=weights,
        biases=biases,
        constants=supernet.trained_constants(),
        substitutes=substitutes,
        quantized=quantized,
        act_quant=act_quant,
        add_quant=supernet.add_input_quantizers(),
        accuracy={"float": float_accuracy, "final": final_accuracy, "val": result.val_accuracy},
        phase_seconds=result.phase_seconds,
        history=result.history,
        test_data=(dataset.x_test, dataset.y_test),
        lam=result.lam,
        supernet_graph=check,
        notes=result.notes,
    )


def _trained_layers(
    supernet: Supernet, mapping: Assignment
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, Substitute], QuantizedLayers | None]:
    """Trained numbers for the user's nodes: float layers, and where weights train quantized the
    fake-quantized weights and biases of every quantized layer (what the QDQ file will hold)."""
    weights, biases, substitutes = supernet.float_layers()
    quantized = supernet.quantized_layers(mapping) if supernet.spec.quantized_weights else None
    if quantized is not None:
        weights, biases = weights | quantized.weights, biases | quantized.biases
    return weights, biases, substitutes, quantized


def _supernet_graph_check(model: onnx.ModelProto, supernet: Supernet, seed: int) -> SupernetGraphCheck:
    """Each searchable layer's searched state, and the supernet's logits on the probes, in eval mode
    and without activation quantizers (onnx-io.md §4), batch by batch as onnxruntime will run them."""
    nodes = supernet.graph_nodes()  # before eval(): the state as the search left it
    probes = probe_inputs(model, seed)
    batches = [probes[k : k + DYNAMIC_BATCH_PROBE] for k in range(0, len(probes), DYNAMIC_BATCH_PROBE)]
    with supernet.unfixed(), supernet.act_quant_disabled(), torch.no_grad():
        supernet.eval()
        expected = np.concatenate([supernet(torch.from_numpy(batch)).numpy() for batch in batches])
    return SupernetGraphCheck(nodes, probes, expected)
