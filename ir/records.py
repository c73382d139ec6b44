"""The records that cross stages: frozen values one stage returns and a later one reads.

They live below every stage (import, search, transform, emit) so that each stage can name them
without importing another stage's package.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from odimo.ir import names
from odimo.ir.assignment import Assignment
from odimo.ir.coupling import index_tail
from odimo.ir.graph import GraphIndex, opset_version, value_shape


@dataclass(frozen=True)
class ImportedModel:
    """The canonical model and the facts later stages need about its interface."""

    path: Path
    source_sha256: str
    original: onnx.ModelProto
    model: onnx.ModelProto
    rewrites: tuple[str, ...]

    @property
    def input_name(self) -> str:
        return self.model.graph.input[0].name

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the single input."""
        c, h, w = value_shape(self.model.graph.input[0])[1:]
        return int(c), int(h), int(w)

    @property
    def output_name(self) -> str:
        return self.model.graph.output[0].name

    @property
    def num_outputs(self) -> int:
        """Width of the single output (classes, for a classifier); of the logits when the graph
        ends in ArgMax/ArgMin, whose output is one class index per image."""
        tail = index_tail(self.model.graph)
        shape = GraphIndex.of(self.model.graph).shapes[tail.logits] if tail else value_shape(self.model.graph.output[0])
        return int(np.prod([d for d in shape[1:] if isinstance(d, int)]))

    @property
    def opset(self) -> int:
        return opset_version(self.model)


@dataclass(frozen=True)
class Substitute:
    """Per-channel depthwise weights (C, 1, kh, kw) and bias (C,) a CU runs instead of the layer."""

    cu: str
    weight: np.ndarray
    bias: np.ndarray


@dataclass(frozen=True)
class SupernetNode:
    """The state of one searchable layer: which function, which body it has, and its named tensors.

    `body` is one of passes/supernet_graph.py's BODIES; `tensors` holds, by function input name, the
    arrays the call reads (θ or α, per-CU weights and biases, a temperature); `metadata` is written
    on the call node.
    """

    function: str
    body: str
    tensors: dict[str, np.ndarray]
    metadata: dict[str, str]
    attributes: dict[str, int] = field(default_factory=dict)


class Rounding(enum.Enum):
    """How an activation quantizer picks its integer code (the CLI's --act-rounding values).

    HALF_EVEN is what ONNX QuantizeLinear does, so a QuantizeLinear/DequantizeLinear pair computes
    the trained quantizer exactly and runtimes can integerize it. FLOOR is an arithmetic right
    shift without a rounding offset: it has no exact standard Q/DQ spelling (ties differ), so it is
    emitted as a Clip->Mul->Add->Floor->Div chain of float ops.
    """

    HALF_EVEN = "half-even"
    FLOOR = "floor"


@dataclass(frozen=True)
class ActQuant:
    """A layer's input quantizer: range [low, clip] and step 1/scale (scale a power of two)."""

    input: str
    low: float
    clip: float
    scale: float
    rounding: Rounding = Rounding.HALF_EVEN

    @property
    def signed(self) -> bool:
        return self.low < 0


@dataclass(frozen=True)
class AddInputQuant:
    """Input `index` of residual Add `node` reads the 7-bit quantized value, as DIANA adds two
    requantized 8-bit tensors (method.md §6).

    `shares` names the layer whose input quantizer it is (the identity path: the Add reads what that
    layer reads, one trained clip); None gives the input its own quantizer. `quant` holds the numbers
    either way, with `quant.input` the value the Add reads in the canonical graph.
    """

    node: str
    index: int
    quant: ActQuant
    shares: str | None = None


@dataclass(frozen=True)
class QuantizedLayers:
    """Dequantized weights to write back, and each channel's step (original channel order)."""

    weights: dict[str, np.ndarray]
    steps: dict[str, np.ndarray]
    substitutes: dict[str, Substitute]
    substitute_steps: dict[str, np.ndarray]
    biases: dict[str, np.ndarray] = field(default_factory=dict)  # fake-quantized, when trained

    def sublayer_steps(self, mapping: Assignment) -> dict[str, np.ndarray]:
        """Step vector of every emitted node `L/<cu>`, rows in stored (ascending channel) order."""
        result = {}
        for layer, steps in self.steps.items():
            cus = mapping.layers[layer]
            for cu in dict.fromkeys(cus):
                channels = [c for c, owner in enumerate(cus) if owner == cu]
                source = (
                    self.substitute_steps[layer]
                    if self.substitutes.get(layer) and self.substitutes[layer].cu == cu
                    else steps
                )
                result[names.sublayer(layer, cu)] = source[channels]
        return result
