"""The searchable network: the bridged ONNX module with one search module per costed layer.

It owns the three things training needs beyond the task loss: the differentiable cost of the
current θ (target cost models, paper Eq. 3/4 with a smooth max), the discrete mapping (argmax or
prefix), and the trained numbers the emission writes back (fake-quantized weights and their steps).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import replace

import numpy as np
import onnx
import torch
from torch import nn

from odimo.ir.graph import GraphIndex, attr
from odimo.targets.plan import LayerPlan, Policy, TargetPlan
from odimo.targets.quantize import QuantizedLayers
from odimo.ir.records import Substitute
from odimo.retrain.bridge import OnnxModule, module_key
from odimo.ir.records import SearchNode
from odimo.retrain.quantizers import quantize_bias
from odimo.retrain.search import DarksideSearchLayer, DianaSearchLayer
from odimo.targets.base import Role
from odimo.ir.assignment import Assignment

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


class Supernet(nn.Module):
    """`constrained=False` searches every layer per channel, ignoring contiguous groups: only for
    measuring what the constraint costs (its mappings cannot all be emitted without Gathers)."""

    def __init__(self, model: onnx.ModelProto, plan: TargetPlan, constrained: bool = True) -> None:
        super().__init__()
        self.plan = plan
        self.net = OnnxModule(model)
        self.search_names: list[str] = []
        nonnegative = nonnegative_values(model)
        for layer in plan.layers:
            if not constrained and layer.policy is Policy.CONTIGUOUS and plan.target.substitute_cu is None:
                layer = replace(layer, policy=Policy.FREE)
            module = _search_module(self.net.layer(layer.name), layer, plan, model, nonnegative)
            if module is None:
                continue
            self.net.layers[module_key(layer.name)] = module
            if layer.support.role is Role.SEARCHABLE:
                self.search_names.append(layer.name)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def search_module(self, name: str) -> nn.Module:
        return self.net.layer(name)

    # --- parameter groups (method.md §4 gives each its optimizer) ----------------------------
    def search_parameters(self) -> list[nn.Parameter]:
        return [p for name in self.search_names for p in self.search_module(name).search_parameters()]

    def quantizer_parameters(self) -> list[nn.Parameter]:
        return [p for m in self._costed_modules() for p in m.quantizer_parameters()]

    def substitute_parameters(self) -> list[nn.Parameter]:
        """The weights the search adds (Darkside's depthwise substitutes): all the warm-up trains."""
        return [
            p for m in self.net.layers.values() if isinstance(m, DarksideSearchLayer) for p in (m.dw_weight, m.dw_bias)
        ]

    def weight_parameters(self) -> list[nn.Parameter]:
        special = {id(p) for p in (*self.search_parameters(), *self.quantizer_parameters())}
        return [p for p in self.parameters() if id(p) not in special]

    def _costed_modules(self) -> list[nn.Module]:
        return [m for m in self.net.layers.values() if isinstance(m, (DianaSearchLayer, DarksideSearchLayer))]

    # --- cost --------------------------------------------------------------------------------
    def cost(self, objective: str, tau: float | None = None) -> torch.Tensor:
        """Σ over searchable layers of Eq. 3 (latency) or Eq. 4 (energy); fixed layers are constant."""
        target = self.plan.target
        total = torch.zeros((), device=next(self.parameters()).device)
        for name in self.search_names:
            geometry = self.plan.layer(name).layer.geometry
            counts = self.search_module(name).expected_counts()
            fn = target.layer_latency_torch if objective == "latency" else target.layer_energy_torch
            total = total + fn(geometry, counts, tau)
        return total

    # --- discretization ----------------------------------------------------------------------
    def mapping(self) -> Assignment:
        return Assignment(
            self.plan.target.name, {name: self.search_module(name).assignment() for name in self.search_names}
        )

    def fix_mapping(self, mapping: Assignment) -> None:
        for name in self.search_names:
            self.search_module(name).fix_assignment(mapping.layers[name])

    def set_temperature(self, value: float) -> None:
        for name in self.search_names:
            module = self.search_module(name)
            if isinstance(module, DianaSearchLayer):
                module.temperature.fill_(value)

    # --- what the emission writes back ---------------------------------------------------------
    def trained_constants(self) -> dict[str, np.ndarray]:
        """Initializers of non-layer nodes that trained (BN affine, PRelu slopes), by ONNX name."""
        return {
            name: getattr(self.net, attr_name).detach().cpu().numpy()
            for name, attr_name in self.net.const_names.items()
            if isinstance(getattr(self.net, attr_name), nn.Parameter)
        }

    def quantized_layers(self, mapping: Assignment) -> QuantizedLayers:
        """DIANA: the fake-quantized weights and biases at the final θ, with each row's step."""
        weights, biases, steps = {}, {}, {}
        with torch.no_grad():
            for module in self._costed_modules():
                name = module.layer.node_name
                if isinstance(module, DianaSearchLayer):
                    if module.searchable:
                        module.fix_assignment(mapping.layers[name])
                    w, b = module.effective_weights()
                    digital = module.digital_share().cpu().numpy() >= 0.5
                    step = np.where(
                        digital,
                        float(module.q8.step()),
                        module.qt.scales().cpu().numpy() if module.qt is not None else 0.0,
                    )
                    weights[name], biases[name], steps[name] = w.cpu().numpy(), b.cpu().numpy(), step.astype(np.float32)
        return QuantizedLayers(weights, steps, {}, {}, biases)

    def search_nodes(self) -> dict[str, SearchNode]:
        """Each searchable layer's state for the search graph (passes/search_graph.py), as searched:
        θ/α as trained, not the one-hot of the final phase."""
        with self.unfixed(), torch.no_grad():
            return {name: _search_node(self.search_module(name), self.plan.layer(name)) for name in self.search_names}

    @contextlib.contextmanager
    def unfixed(self) -> Iterator[None]:
        """Temporarily the search state: θ/α as learned, not the one-hot of the final phase."""
        modules = [self.search_module(name) for name in self.search_names]
        saved = [m.fixed for m in modules]
        try:
            for m in modules:
                m.fixed = torch.empty(0, device=m.fixed.device)
            yield
        finally:
            for m, fixed in zip(modules, saved):
                m.fixed = fixed

    def float_layers(self) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, Substitute]]:
        """Weights and biases of every float-trained layer, and the trained DWE substitutes."""
        weights, biases, substitutes = {}, {}, {}
        with torch.no_grad():
            for module in self.net.layers.values():
                if isinstance(module, DianaSearchLayer):
                    continue  # quantized: see quantized_layers
                layer = module.layer if isinstance(module, DarksideSearchLayer) else module
                weights[layer.node_name] = layer.weight.cpu().numpy()
                if layer.has_bias or isinstance(module, DarksideSearchLayer):
                    biases[layer.node_name] = layer.bias.cpu().numpy()
                if isinstance(module, DarksideSearchLayer):
                    substitutes[layer.node_name] = Substitute(
                        "dwe", module.dw_weight.cpu().numpy(), module.dw_bias.cpu().numpy()
                    )
        return weights, biases, substitutes


def _search_module(
    layer_module: nn.Module, layer: LayerPlan, plan: TargetPlan, model: onnx.ModelProto, nonnegative: set[str]
) -> nn.Module | None:
    """The target's module for `layer`, or None to keep the plain float layer."""
    return SEARCH_MODULES[plan.target.name](layer_module, layer, model, nonnegative)


def _darkside_module(
    layer_module: nn.Module, layer: LayerPlan, model: onnx.ModelProto, nonnegative: set[str]
) -> nn.Module | None:
    """Darkside trains float (method.md §2): only searchable layers get the conv-or-DW module."""
    return DarksideSearchLayer(layer_module) if layer.support.role is Role.SEARCHABLE else None


def _diana_module(
    layer_module: nn.Module, layer: LayerPlan, model: onnx.ModelProto, nonnegative: set[str]
) -> nn.Module | None:
    """Every costed layer is quantized; searchable ones also mix digital and analog per channel."""
    role = layer.support.role
    if role is Role.HOST:
        return None
    input_name = layer.layer.input
    reads_input = input_name in {i.name for i in model.graph.input}
    return DianaSearchLayer(
        layer_module,
        contiguous=layer.policy is Policy.CONTIGUOUS,
        input_clip=INPUT_CLIP if reads_input else HIDDEN_CLIP,
        signed_input=input_name not in nonnegative,
        searchable=role is Role.SEARCHABLE,
    )


def _search_node(module: nn.Module, layer: LayerPlan) -> SearchNode:
    counts = {cu: f"{float(v):.2f}" for cu, v in module.expected_counts().items()}
    metadata = {
        "odimo.search.assignment": "".join(cu[0] for cu in module.assignment()),
        "odimo.search.expected": ",".join(f"{cu}={v}" for cu, v in counts.items()),
        "odimo.group": f"{layer.group.id}:{layer.policy.value}",
    }
    if isinstance(module, DarksideSearchLayer):
        tensors = {
            "alpha": module.mask.alpha,
            "W": module.layer.weight,
            "B": module.layer.bias,
            "W_dw": module.dw_weight,
            "B_dw": module.dw_bias,
        }
        return SearchNode(
            "DarksideConvOrDw",
            {k: v.cpu().numpy() for k, v in tensors.items()},
            metadata,
            {"channels": int(module.layer.weight.shape[0])},
        )
    weight, bias = module.layer.weight, module.layer.bias
    clip = module.act.effective_clip()
    quantized = {
        "W_digital": module.q8(weight),
        "W_analog": module.qt(weight),
        "B_digital": quantize_bias(bias, module.q8.step() * clip / 127),
        "B_analog": quantize_bias(bias, module.qt.scales() * clip / 127),
    }
    kind = "Conv" if module.layer.op_type == "Conv" else "Gemm"
    if module.contiguous:
        tensors = {"alpha": module.mask.alpha, **quantized}
        function = f"DianaMixed{kind}Contiguous"
    else:
        tensors = {"theta": module.alpha, "T": module.temperature, **quantized}
        function = f"DianaMixed{kind}"
    return SearchNode(function, {k: v.cpu().numpy() for k, v in tensors.items()}, metadata)


SEARCH_MODULES = {"diana": _diana_module, "darkside": _darkside_module}


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
    if len(node.input) > 1 and node.input[1] and index.is_constant(node.input[1]):
        return float(index.array(node.input[1]))
    value = attr(node, "min")
    return float(value) if value is not None else float("-inf")
