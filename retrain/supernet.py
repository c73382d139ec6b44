"""The searchable network: the bridged ONNX module with one mixed layer per costed layer.

It owns the three things training needs beyond the task loss: the differentiable cost of the
current θ (target cost models, paper Eq. 3/4 with a smooth max), the discrete mapping (argmax or
prefix), and the trained numbers the emission writes back (fake-quantized weights and their steps).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, replace

import numpy as np
import onnx
import torch
from torch import nn

from odimo.ir import names
from odimo.ir.assignment import Assignment
from odimo.ir.graph import GraphIndex, clip_bounds
from odimo.ir.records import ActQuant, AddInputQuant, QuantizedLayers, Substitute, SupernetNode
from odimo.retrain.bridge import LayerModule, OnnxModule, module_key
from odimo.retrain.mixed_layers import BlendLayer, MixedLayer, SubstituteLayer
from odimo.retrain.quantizers import PactActivation
from odimo.targets.base import ParamSet, Role, SearchKind
from odimo.targets.baselines import corner
from odimo.targets.costing import cost_table
from odimo.targets.plan import LayerPlan, Policy, TargetPlan

INPUT_CLIP = 1.0  # [0, 1] images at the network input (method.md §6)
HIDDEN_CLIP = 6.0
_NONNEGATIVE_OPS = {"Relu", "Sigmoid", "HardSigmoid", "Softmax", "Abs", "Exp", "Sqrt", "Softplus"}
_PRESERVING_OPS = {
    "MaxPool",
    "AveragePool",
    "GlobalAveragePool",
    "GlobalMaxPool",
    "Flatten",
    "Reshape",
    "Concat",
    "Split",
    "Slice",
    "Resize",
    "Pad",
    "Add",
    "Mul",
    "Max",
    "Transpose",
}


@dataclass(frozen=True)
class ResidualInput:
    """Input `index` of residual Add `node` reads `value` quantized: by the input quantizer of layer
    `shares` (the identity path), or by its own in `Supernet.residual_quantizers`."""

    node: str
    index: int
    value: str
    shares: str | None


class Supernet(nn.Module):
    """`constrained=False` searches every layer per channel, ignoring contiguous groups: only for
    measuring what the constraint costs (its mappings cannot all be emitted without Gathers).

    On a target that trains quantized (a blend kind), both inputs of every residual Add are 7-bit
    quantized too (method.md §6), as DIANA adds two requantized tensors: so the output of a layer
    that meets an Add is quantized where the hardware has it, and the emission can requantize it.
    """

    def __init__(self, model: onnx.ModelProto, plan: TargetPlan, constrained: bool = True) -> None:
        super().__init__()
        self.plan = plan
        self.spec = plan.target.search_spec
        self.net = OnnxModule(model)
        self.searchable: list[str] = []
        nonnegative = nonnegative_values(model)
        for layer in plan.layers:
            if not constrained and layer.policy is Policy.CONTIGUOUS and self.spec.kind is SearchKind.WEIGHT_BLEND:
                layer = replace(layer, policy=Policy.FREE)
            module = _search_layer(self.net.layer(layer.name), layer, plan, model, nonnegative)
            if module is None:
                continue
            self.net.layers[module_key(layer.name)] = module
            if layer.support.role is Role.SEARCHABLE:
                self.searchable.append(layer.name)
        self.residual_quantizers = nn.ModuleDict()  # the Add inputs' own quantizers, by names.add_input
        self.residual_inputs: list[ResidualInput] = []
        if self.spec.kind is SearchKind.WEIGHT_BLEND:
            self._quantize_residual_adds(model, nonnegative)

    def _quantize_residual_adds(self, model: onnx.ModelProto, nonnegative: set[str]) -> None:
        """Every input of every residual Add reads a quantizer: the identity path (a value that a
        quantized layer also reads) that layer's own input quantizer, one module and one trained clip,
        so the Add and the layer see the same codes; any other input a new PACT, signed unless the
        value is provably non-negative."""
        readers: dict[str, str] = {}  # value -> the first quantized layer reading it, in graph order
        for layer in self.plan.layers:
            if isinstance(self.net.layer(layer.name), BlendLayer):
                readers.setdefault(layer.layer.input, layer.name)
        graph_inputs = {i.name for i in model.graph.input}
        for node in residual_adds(model):
            for k, value in enumerate(node.input):
                shares = readers.get(value)
                if shares is not None:
                    quantizer = self.mixed(shares).act
                else:
                    clip = INPUT_CLIP if value in graph_inputs else HIDDEN_CLIP
                    quantizer = PactActivation(clip, signed=value not in nonnegative)
                    self.residual_quantizers[module_key(names.add_input(node.name, k))] = quantizer
                self.net.read_through(node.name, k, quantizer)
                self.residual_inputs.append(ResidualInput(node.name, k, value, shares))

    def residual_quantizer(self, entry: ResidualInput) -> PactActivation:
        """The quantizer that input reads (a layer's, when it shares one)."""
        if entry.shares is not None:
            return self.mixed(entry.shares).act
        return self.residual_quantizers[module_key(names.add_input(entry.node, entry.index))]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def mixed(self, name: str) -> MixedLayer:
        return self.net.layer(name)

    def mixed_layers(self) -> list[MixedLayer]:
        """Every costed layer's mixed layer (searchable and fixed), in graph order."""
        return [m for m in self.net.layers.values() if isinstance(m, MixedLayer)]

    # --- parameter sets (the target's SearchSpec gives each its optimizer, method.md §4) -------
    def parameter_set(self, which: ParamSet) -> list[nn.Parameter]:
        if which is ParamSet.ARCHITECTURE:
            return [p for name in self.searchable for p in self.mixed(name).architecture_parameters()]
        if which is ParamSet.QUANTIZERS:
            own = [q.clip for q in self.residual_quantizers.values()]
            return [p for m in self.mixed_layers() for p in m.quantizer_parameters()] + own
        if which is ParamSet.SUBSTITUTES:
            return [p for m in self.mixed_layers() for p in m.substitute_parameters()]
        special = {id(p) for s in (ParamSet.ARCHITECTURE, ParamSet.QUANTIZERS) for p in self.parameter_set(s)}
        added = {id(p) for p in self.parameter_set(ParamSet.SUBSTITUTES)}
        return [p for p in self.parameters() if id(p) not in special and id(p) not in added]

    def architecture_parameters(self) -> list[nn.Parameter]:
        return self.parameter_set(ParamSet.ARCHITECTURE)

    def quantizer_parameters(self) -> list[nn.Parameter]:
        return self.parameter_set(ParamSet.QUANTIZERS)

    def weight_parameters(self) -> list[nn.Parameter]:
        """Everything but θ/α and quantizer parameters: the network's and the substitutes' weights."""
        special = {id(p) for p in (*self.architecture_parameters(), *self.quantizer_parameters())}
        return [p for p in self.parameters() if id(p) not in special]

    # --- cost --------------------------------------------------------------------------------
    def corner_costs(self, objective: str) -> tuple[float, float]:
        """(whole network, fixed layers only) cost with every searchable layer on its first CU: the
        accurate corner (All-8bit, All-conv) the search starts from and normalises by."""
        target, layers = self.plan.target, self.plan.analysis.geometries
        table = cost_table(layers, target, corner(layers, target).mapping)
        return table.total.of(objective), table.total.of(objective) - table.searchable.of(objective)

    def cost(self, objective: str, tau: float | None = None) -> torch.Tensor:
        """Σ over searchable layers of Eq. 3 (latency) or Eq. 4 (energy); fixed layers are constant."""
        target = self.plan.target
        total = torch.zeros((), device=next(self.parameters()).device)
        for name in self.searchable:
            geometry = self.plan.layer(name).layer.geometry
            counts = self.mixed(name).expected_counts()
            fn = target.layer_latency_torch if objective == "latency" else target.layer_energy_torch
            total = total + fn(geometry, counts, tau)
        return total

    # --- discretization ----------------------------------------------------------------------
    def mapping(self) -> Assignment:
        return Assignment(self.plan.target.name, {name: self.mixed(name).assignment() for name in self.searchable})

    def fix_mapping(self, mapping: Assignment) -> None:
        for name in self.searchable:
            self.mixed(name).fix_assignment(mapping.layers[name])

    def set_temperature(self, value: float) -> None:
        for name in self.searchable:
            self.mixed(name).set_temperature(value)

    def draw_warmup(self, generator: torch.Generator) -> None:
        for name in self.searchable:
            self.mixed(name).draw_warmup(generator)

    def end_warmup(self) -> None:
        for name in self.searchable:
            self.mixed(name).end_warmup()

    # --- what the emission writes back ---------------------------------------------------------
    def trained_constants(self) -> dict[str, np.ndarray]:
        """Initializers of non-layer nodes that trained (BN affine, PRelu slopes), by ONNX name."""
        return {
            name: getattr(self.net, attr_name).detach().cpu().numpy()
            for name, attr_name in self.net.const_names.items()
            if isinstance(getattr(self.net, attr_name), nn.Parameter)
        }

    def quantized_layers(self, mapping: Assignment) -> QuantizedLayers:
        """Weights trained quantized: the fake-quantized weights and biases at the final θ, with
        each row's step."""
        weights, biases, steps = {}, {}, {}
        with torch.no_grad():
            for module in self.mixed_layers():
                if not isinstance(module, BlendLayer):
                    continue
                name = module.layer.node_name
                if module.searchable:
                    module.fix_assignment(mapping.layers[name])
                w, b = module.effective_weights()
                weights[name], biases[name] = w.cpu().numpy(), b.cpu().numpy()
                steps[name] = module.channel_steps().cpu().numpy().astype(np.float32)
        return QuantizedLayers(weights, steps, {}, {}, biases)

    def act_quantizers(self) -> dict[str, ActQuant]:
        """Each layer's trained input quantizer, by layer name (layers that quantize their input)."""
        result = {}
        for layer in self.plan.layers:
            module = self.net.layer(layer.name)
            if isinstance(module, BlendLayer) and module.activation_quantizer() is not None:
                result[layer.name] = module.act_quant(layer.layer.input)
        return result

    def add_input_quantizers(self) -> tuple[AddInputQuant, ...]:
        """Each quantized input of a residual Add, with its trained quantizer and whose it is."""
        return tuple(
            AddInputQuant(entry.node, entry.index, quantizer.record(entry.value), entry.shares)
            for entry in self.residual_inputs
            if (quantizer := self.residual_quantizer(entry)).enabled
        )

    @contextlib.contextmanager
    def act_quant_disabled(self) -> Iterator[None]:
        """The supernet without its activation quantizers (what the search graph computes)."""
        acts = [a for m in self.mixed_layers() if (a := m.activation_quantizer()) is not None]
        acts += [q for q in self.residual_quantizers.values() if q.enabled]
        try:
            for act in acts:
                act.enabled = False
            yield
        finally:
            for act in acts:
                act.enabled = True

    def graph_nodes(self) -> dict[str, SupernetNode]:
        """Each searchable layer's state for the search graph (passes/supernet_graph.py), as searched:
        θ/α as trained, not the one-hot of the final phase."""
        with self.unfixed(), torch.no_grad():
            return {
                name: self.mixed(name).graph_node(self.spec.graph_function, _group_metadata(self.plan, name))
                for name in self.searchable
            }

    @contextlib.contextmanager
    def unfixed(self) -> Iterator[None]:
        """Temporarily the search state: θ/α as learned, not the one-hot of the final phase."""
        modules = [self.mixed(name) for name in self.searchable]
        saved = [m.fixed for m in modules]
        try:
            for m in modules:
                m.fixed = torch.empty(0, device=m.fixed.device)
            yield
        finally:
            for m, fixed in zip(modules, saved):
                m.fixed = fixed

    def float_layers(self) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, Substitute]]:
        """Weights and biases of every float-trained layer, and the trained substitutes."""
        weights, biases, substitutes = {}, {}, {}
        with torch.no_grad():
            for module in self.net.layers.values():
                searched = isinstance(module, MixedLayer)
                trained = module.float_weights() if searched else (module.weight, module.bias)
                if trained is None:
                    continue  # trained quantized: see quantized_layers
                layer = module.layer if searched else module
                weights[layer.node_name] = trained[0].cpu().numpy()
                if layer.has_bias or searched:
                    biases[layer.node_name] = trained[1].cpu().numpy()
                substitute = module.substitute() if searched else None
                if substitute is not None:
                    substitutes[layer.node_name] = substitute
        return weights, biases, substitutes


def _search_layer(
    layer_module: LayerModule, layer: LayerPlan, plan: TargetPlan, model: onnx.ModelProto, nonnegative: set[str]
) -> MixedLayer | None:
    """The mixed layer the target's search kind gives `layer`, or None to keep the float layer.

    A blend target trains every costed layer quantized (fixed ones in their CU's format); a
    substitute target trains float, so only its searchable layers get a module.
    """
    target, role = plan.target, layer.support.role
    if target.search_spec.kind is SearchKind.CONV_OR_SUBSTITUTE:
        return SubstituteLayer(layer_module, target.cus) if role is Role.SEARCHABLE else None
    if role is Role.HOST:
        return None
    input_name = layer.layer.input
    reads_input = input_name in {i.name for i in model.graph.input}
    return BlendLayer(
        layer_module,
        target.cus,
        target.weight_formats,
        contiguous=layer.policy is Policy.CONTIGUOUS,
        input_clip=INPUT_CLIP if reads_input else HIDDEN_CLIP,
        signed_input=input_name not in nonnegative,
        fixed_cu=None if role is Role.SEARCHABLE else layer.support.cus[0],
    )


def _group_metadata(plan: TargetPlan, name: str) -> dict[str, str]:
    layer = plan.layer(name)
    return {"odimo.group": f"{layer.group.id}:{layer.policy.value}"}


def residual_adds(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """The Adds of two activations (no constant input): the joins of residual paths."""
    index = GraphIndex.of(model.graph)
    return [
        node
        for node in model.graph.node
        if node.op_type == "Add" and len(node.input) == 2 and not any(index.is_constant(v) for v in node.input)
    ]


def nonnegative_values(model: onnx.ModelProto) -> set[str]:
    """Values provably ≥ 0: the [0, 1] image input and what ReLU-like ops and pools keep so.

    A conv input outside this set gets the signed PACT variant instead of losing its negatives.
    """
    index = GraphIndex.of(model.graph)
    known = {i.name for i in model.graph.input if i.name not in index.initializers}
    for node in model.graph.node:
        activations = [n for n in node.input if n and not index.is_constant(n)]
        constants_ok = all(
            index.array(n).min() >= 0
            for n in node.input
            if n and index.is_constant(n) and index.array(n).dtype.kind == "f"
        )
        if node.op_type in _NONNEGATIVE_OPS or (node.op_type == "Clip" and _clip_min(node, index) >= 0):
            known.update(node.output)
        elif node.op_type in _PRESERVING_OPS and activations and all(n in known for n in activations) and constants_ok:
            known.update(node.output)
    return known


def _clip_min(node: onnx.NodeProto, index: GraphIndex) -> float:
    low, _ = clip_bounds(node, index)
    return float("-inf") if low is None else low
