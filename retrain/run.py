"""The search stage: data in, a trained supernet out, and everything the emission needs from it.

Keeps the pipeline free of torch details: the result carries the discrete mapping, the user's graph
with the trained (for DIANA fake-quantized) weights written back into the same nodes, the trained
DWE substitutes, each row's quantization step, the activation quantizers, and the accuracies.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from odimo.compiler.errors import BUG_FIX, VerificationError
from odimo.compiler.importer import ImportedModel
from odimo.compiler.plan import TargetPlan
from odimo.compiler.quantize import QuantizedLayers
from odimo.compiler.verify import ABS_TOL, REL_TOL, DYNAMIC_BATCH_PROBE, logits_view, probe_inputs, run, session
from odimo.passes.act_quant import ActQuant, insert_act_quant
from odimo.passes.search_graph import search_graph
from odimo.passes.set_weights import set_weights
from odimo.passes.split_layers import Substitute
from odimo.retrain.bridge import OnnxModule
from odimo.retrain.data import Dataset, fit_to_model, load_dataset, split_train_val
from odimo.retrain.search import DianaSearchLayer
from odimo.retrain.supernet import Supernet
from odimo.retrain.trainer import TrainConfig, evaluate, train
from odimo.targets.mapping import Mapping


@dataclass(frozen=True)
class SearchSettings:
    data: str = "fashion-mnist"
    epochs: tuple[int, int, int] = (0, 1, 1)
    lam: float = 0.0
    objective: str = "latency"
    seed: int = 0
    device: str = "cpu"
    batch_size: int = 128
    limit_batches: int | None = None
    checkpoint_dir: Path | None = None
    resume: bool = False
    progress: bool = True
    save_search_graph: bool = False


@dataclass(frozen=True)
class Trained:
    mapping: Mapping
    model: onnx.ModelProto  # the canonical graph with trained weights written back
    substitutes: dict[str, Substitute]
    quantized: QuantizedLayers | None
    act_quant: dict[str, ActQuant]
    accuracy: dict[str, float]
    phase_seconds: dict[str, float]
    history: list[dict[str, Any]]
    test_data: tuple[np.ndarray, np.ndarray]
    search_graph: onnx.ModelProto | None = None


def load_data(imported: ImportedModel, settings: SearchSettings) -> Dataset:
    """The dataset, fitted to the model's input and output (a clear E140 when it cannot be)."""
    dataset = load_dataset(settings.data, input_shape=imported.input_shape, num_classes=imported.num_outputs, seed=settings.seed)
    return fit_to_model(dataset, imported.input_shape, imported.num_outputs)


def search(imported: ImportedModel, plan: TargetPlan, settings: SearchSettings, fixed_mapping: Mapping | None = None) -> Trained:
    """Train (search + final, or final only for a `fixed_mapping`) and collect the results."""
    torch.manual_seed(settings.seed)
    dataset = load_data(imported, settings)
    split = split_train_val(dataset, seed=settings.seed)
    device = torch.device(settings.device)
    float_accuracy = evaluate(OnnxModule(imported.model).to(device), dataset.x_test, dataset.y_test, 256, device)
    supernet = Supernet(imported.model, plan)
    config = TrainConfig(
        epochs=settings.epochs, lam=settings.lam, objective=settings.objective, batch_size=settings.batch_size, seed=settings.seed,
        device=settings.device, limit_batches=settings.limit_batches, checkpoint_dir=settings.checkpoint_dir, resume=settings.resume,
        progress=settings.progress, fixed_mapping=fixed_mapping, ramp=plan.target.substitute_cu is not None,
    )
    result = train(supernet, split, config)
    final_accuracy = evaluate(supernet, dataset.x_test, dataset.y_test, 256, device)
    supernet.to("cpu").to(memory_format=torch.contiguous_format)
    model, substitutes, quantized = _write_back(imported.model, supernet, result.mapping)
    act_quant = _act_quantizers(supernet, plan)
    graph = _search_graph(model, supernet, act_quant, settings.seed) if settings.save_search_graph else None
    return Trained(
        mapping=result.mapping,
        model=model,
        substitutes=substitutes,
        quantized=quantized,
        act_quant=act_quant,
        accuracy={"float": float_accuracy, "final": final_accuracy, "val": result.val_accuracy},
        phase_seconds=result.phase_seconds,
        history=result.history,
        test_data=(dataset.x_test, dataset.y_test),
        search_graph=graph,
    )


def _write_back(model: onnx.ModelProto, supernet: Supernet, mapping: Mapping) -> tuple[onnx.ModelProto, dict[str, Substitute], QuantizedLayers | None]:
    """The user's graph with trained numbers in the same nodes: float layers, and for DIANA the
    fake-quantized weights and biases of every quantized layer (what the QDQ file will hold)."""
    weights, biases, substitutes = supernet.float_layers()
    quantized = supernet.quantized_layers(mapping) if supernet.plan.target.substitute_cu is None else None
    if quantized is not None:
        weights, biases = weights | quantized.weights, biases | quantized.biases
    return set_weights(model, weights, biases, supernet.trained_constants()).model, substitutes, quantized


def _search_graph(model: onnx.ModelProto, supernet: Supernet, act_quant: dict[str, ActQuant], seed: int) -> onnx.ModelProto:
    """The searched network as ONNX with one function call per searchable layer, checked against
    the torch supernet in eval mode (both without activation quantizers, onnx-io.md §4)."""
    graph = search_graph(model, supernet.search_nodes()).model
    probes = probe_inputs(model, seed)
    batches = [probes[k : k + DYNAMIC_BATCH_PROBE] for k in range(0, len(probes), DYNAMIC_BATCH_PROBE)]
    with supernet.unfixed(), _act_quant_disabled(supernet), torch.no_grad():
        supernet.eval()
        expected = np.concatenate([supernet(torch.from_numpy(batch)).numpy() for batch in batches])
    produced = run(session(logits_view(graph)), probes)[0]  # the supernet returns logits
    bound = ABS_TOL + REL_TOL * float(np.abs(expected).max())
    if float(np.abs(produced - expected).max()) > bound:
        raise VerificationError("E900", "verification-failed", f"the search graph differs from the torch supernet by {float(np.abs(produced - expected).max()):.3g}", fix=BUG_FIX)
    return insert_act_quant(graph, act_quant).model


@contextlib.contextmanager
def _act_quant_disabled(supernet: Supernet) -> Iterator[None]:
    modules = [m for m in supernet.net.layers.values() if isinstance(m, DianaSearchLayer)]
    try:
        for m in modules:
            m.act.enabled = False
        yield
    finally:
        for m in modules:
            m.act.enabled = True


def _act_quantizers(supernet: Supernet, plan: TargetPlan) -> dict[str, ActQuant]:
    result = {}
    for layer in plan.layers:
        module = supernet.net.layer(layer.name)
        if isinstance(module, DianaSearchLayer) and module.act.enabled:
            clip = module.act.effective_clip()
            result[layer.name] = ActQuant(layer.layer.input, -clip if module.act.signed else 0.0, clip, float(module.act.scale()))
    return result
