"""Mixed layers: one per costed layer of the supernet, mixing what a target's two CUs would compute.

Two kinds, chosen by the target's `SearchSpec.kind` (method.md §1-2); neither names a target or a CU:
- `BlendLayer` (paper Eq. 5): one op on effective weights Ŵ[c] = θ[c]·Q_0(W)[c] + (1 − θ[c])·Q_1(W)[c],
  each Q_i the fake quantizer of CU i's weight format; θ a per-channel choice (`FreeChoice`, free
  groups) or a prefix (`SplitPoint`, contiguous groups, method.md §7.3). A fixed layer (one CU can
  run it) is the same module with that CU's quantizer only.
- `SubstituteLayer` (paper Eq. 2): the layer and a 3x3 depthwise substitute both run; a split point
  gives the first CU the layer's channels up to it, the second the substitute's after it.

Both choices are hard in the forward pass and soft in the backward (straight through), and both
start with every channel on the first CU (the accurate corner: All-8bit on DIANA, All-conv on
Darkside); the cost term moves channels towards the cheaper CU.

θ is always the share of the first CU. Every layer reports `expected_counts()` (real-valued during
the search) for the differentiable cost, `assignment()` (argmax or mask) for discretization, and
`graph_node()` for the supernet graph (`--save-search-graph`); `fix_assignment` freezes a one-hot
choice for the final phase and for fine-tuning a given mapping.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from odimo.ir.records import ActQuant, Substitute, SupernetNode
from odimo.retrain.bridge import LayerModule
from odimo.retrain.pact_layer import pact_layer
from odimo.retrain.quantizers import WEIGHT_QUANTIZERS, PactActivation, quantize_bias
from odimo.targets.quantization import WeightFormat

START_LOGIT = 1.5  # a free channel starts on the first CU, soft share σ(1.5) = 0.82 at T = 1
SPLIT_RAMP = 1 / 8  # the split point's sigmoid ramp starts C/8 channels wide and narrows with T
MIN_RAMP = 0.5  # ... to half a channel: then only the channel at the split feels the gradient


def straight_through(hard: torch.Tensor, soft: torch.Tensor) -> torch.Tensor:
    return soft + (hard - soft).detach()


class FreeChoice(nn.Module):
    """Each channel on its own: logits α (2, C), θ = softmax(α/T)[0] the first CU's share.

    The forward is hard (argmax, ties to the first CU) with the softmax's gradient (straight
    through), so the supernet computes a deployable mapping at every step: at step 0 every channel
    is on the first CU. Annealing T sharpens the gradient near the decision and silences it far
    from it, so choices settle as the search ends.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        alpha = torch.zeros(2, channels)
        alpha[0] = START_LOGIT
        self.alpha = nn.Parameter(alpha)
        self.register_buffer("temperature", torch.tensor(1.0))

    def soft(self) -> torch.Tensor:
        return torch.softmax(self.alpha / self.temperature, dim=0)[0]

    def set_temperature(self, value: float) -> None:
        self.temperature.fill_(value)

    def preference(self) -> torch.Tensor:
        """α0 − α1 per channel: >= 0 exactly where the first CU wins the argmax."""
        return (self.alpha[0] - self.alpha[1]).detach()

    def forward(self) -> torch.Tensor:
        hard = (self.alpha[0] >= self.alpha[1]).to(self.alpha.dtype)
        return straight_through(hard, self.soft())


class SplitPoint(nn.Module):
    """A contiguous split: the first k = C·u channels on the first CU, the rest on the second.

    The forward is the hard prefix 1[i + ½ < k]; the backward goes through a sigmoid ramp of width
    τ around k, so the gradient acts on the count itself and moves it up or down equally fast (a
    cumulative mask of per-channel gates moves one way ~30x slower than the other). u starts at 1:
    every channel on the first CU. It is kept within [-0.05, 1.05] so a push beyond an end stays
    reversible.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.u = nn.Parameter(torch.tensor(1.0))
        self.register_buffer("centres", torch.arange(channels, dtype=torch.float32) + 0.5)
        self.start_ramp = max(channels * SPLIT_RAMP, MIN_RAMP)
        self.register_buffer("ramp", torch.tensor(self.start_ramp))

    def split(self) -> torch.Tensor:
        return len(self.centres) * self.u

    def set_temperature(self, value: float) -> None:
        self.ramp.fill_(max(self.start_ramp * value, MIN_RAMP))

    def preference(self) -> torch.Tensor:
        """k − centre per channel: > 0 exactly on the prefix, falling along it, so the channels
        the split would give up first are the prefix's last."""
        return (self.split() - self.centres).detach()

    def forward(self) -> torch.Tensor:
        with torch.no_grad():
            self.u.clamp_(-0.05, 1.05)
        k = self.split()
        hard = (self.centres < k).to(k.dtype)
        return straight_through(hard, torch.sigmoid((k - self.centres) / self.ramp))


class MixedLayer(nn.Module):
    """What the supernet and the trainer ask of every mixed layer; θ is the first CU's share."""

    def __init__(self, layer: LayerModule, cus: tuple[str, str]) -> None:
        super().__init__()
        self.layer = layer
        self.cus = cus
        self.register_buffer("fixed", torch.empty(0))  # one-hot (C,) first-CU mask once discretized

    @property
    def channels(self) -> int:
        return self.layer.weight.shape[0]

    @property
    def searchable(self) -> bool:
        """Whether its channels choose between the CUs (a fixed layer has one)."""
        return True

    def share(self) -> torch.Tensor:
        """θ per channel (1 = the first CU); fixed after discretization."""
        raise NotImplementedError

    def expected_counts(self) -> dict[str, torch.Tensor]:
        share = self.share()
        return {self.cus[0]: share.sum(), self.cus[1]: (1 - share).sum()}

    def assignment(self) -> tuple[str, ...]:
        """argmax per channel, ties to the first CU (method.md §5)."""
        with torch.no_grad():
            share = self.share()
        return tuple(self.cus[0] if s >= 0.5 else self.cus[1] for s in share.tolist())

    def preference(self) -> torch.Tensor:
        """Per channel, how firmly the search holds it on the first CU: >= 0 exactly for the
        channels `assignment()` gives it, larger for firmer ones (targets/settle.py's order)."""
        raise NotImplementedError

    def fix_assignment(self, cus: tuple[str, ...]) -> None:
        device = self.layer.weight.device
        self.fixed = torch.tensor([1.0 if cu == self.cus[0] else 0.0 for cu in cus], device=device)

    # --- parameter sets (SearchSpec optimizer groups) -----------------------------------------
    def architecture_parameters(self) -> list[nn.Parameter]:
        return []

    def quantizer_parameters(self) -> list[nn.Parameter]:
        return []

    def substitute_parameters(self) -> list[nn.Parameter]:
        return []

    # --- schedule hooks: no-ops unless a kind needs them ---------------------------------------
    def set_temperature(self, value: float) -> None:
        """The softmax temperature of θ (per-step or per-epoch annealing)."""

    def draw_warmup(self, generator: torch.Generator) -> None:
        """Before a warm-up batch: route channels so that the new weights train (a substitute kind)."""

    def end_warmup(self) -> None:
        """After the warm-up batches."""

    # --- what the emission gets back -----------------------------------------------------------
    def activation_quantizer(self) -> PactActivation | None:
        return None

    def float_weights(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The float weight and bias to write back, or None if the layer trains quantized."""
        return self.layer.weight, self.layer.bias

    def substitute(self) -> Substitute | None:
        return None

    def graph_tensors(self) -> tuple[str, str, dict[str, torch.Tensor], dict[str, int]]:
        """(function-name suffix, body, tensors by input name, attributes) of the search graph call."""
        raise NotImplementedError

    def graph_node(self, function_prefix: str, metadata: dict[str, str]) -> SupernetNode:
        """This layer's state for the search graph (passes/supernet_graph.py)."""
        counts = {cu: f"{float(v):.2f}" for cu, v in self.expected_counts().items()}
        metadata = {
            "odimo.search.assignment": "".join(cu[0] for cu in self.assignment()),
            "odimo.search.expected": ",".join(f"{cu}={v}" for cu, v in counts.items()),
            **metadata,
        }
        suffix, body, tensors, attributes = self.graph_tensors()
        arrays = {k: v.detach().cpu().numpy() for k, v in tensors.items()}
        return SupernetNode(function_prefix + suffix, body, arrays, metadata, attributes)


class BlendLayer(MixedLayer):
    """A conv/FC layer whose channels choose between two weight formats (paper Eq. 5)."""

    def __init__(
        self,
        layer: LayerModule,
        cus: tuple[str, str],
        formats: dict[str, WeightFormat],
        contiguous: bool,
        input_clip: float,
        signed_input: bool,
        fixed_cu: str | None = None,
    ) -> None:
        super().__init__(layer, cus)
        self.contiguous = contiguous
        self.fixed_cu = fixed_cu
        self.act = PactActivation(input_clip, signed_input)
        trained_cus = cus if fixed_cu is None else (fixed_cu,)
        self.quantizers = nn.ModuleDict({cu: WEIGHT_QUANTIZERS[formats[cu]](layer.weight) for cu in trained_cus})
        if fixed_cu is not None:
            self.choice: FreeChoice | SplitPoint | None = None
        else:
            self.choice = SplitPoint(self.channels) if contiguous else FreeChoice(self.channels)

    @property
    def searchable(self) -> bool:
        return self.fixed_cu is None

    def share(self) -> torch.Tensor:
        if not self.searchable:
            value = 1.0 if self.fixed_cu == self.cus[0] else 0.0
            return torch.full((self.channels,), value, device=self.layer.weight.device)
        if self.fixed.numel():
            return self.fixed
        return self.choice()

    def architecture_parameters(self) -> list[nn.Parameter]:
        return [] if self.choice is None else list(self.choice.parameters())

    def preference(self) -> torch.Tensor:
        assert self.choice is not None, "a fixed layer has no choice to prefer"
        return self.choice.preference()

    def quantizer_parameters(self) -> list[nn.Parameter]:
        return [self.act.clip, *(p for q in self.quantizers.values() for p in q.parameters())]

    def set_temperature(self, value: float) -> None:
        if self.choice is not None:
            self.choice.set_temperature(value)

    def activation_quantizer(self) -> PactActivation | None:
        return self.act if self.act.enabled else None

    def float_weights(self) -> None:
        return None  # trained fake-quantized: see `quantized`

    def quantized_parts(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Per trained CU, the layer's weight and bias quantized in that CU's format."""
        weight, bias = self.layer.weight, self.layer.bias
        # The accumulator's grid, weight step x input step (1/s, a power of two, so exact): the
        # bias is then an int32 code of it, as a QLinearConv's bias must be.
        return {
            cu: (q(weight), quantize_bias(bias + q.offset, q.step(weight) / self.act.scale()))
            for cu, q in self.quantizers.items()
        }

    def effective_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Ŵ and b̂ of paper Eq. 5: quantized per CU, blended per channel."""
        parts = list(self.quantized_parts().values())
        if len(parts) == 1:
            return parts[0]
        (w0, b0), (w1, b1) = parts
        share = self.share()
        shape = (-1,) + (1,) * (w0.dim() - 1)
        return share.reshape(shape) * w0 + (1 - share).reshape(shape) * w1, share * b0 + (1 - share) * b1

    def channel_steps(self) -> torch.Tensor:
        """Each channel's quantization step under the current (fixed) assignment."""
        weight = self.layer.weight
        steps = {cu: torch.broadcast_to(q.step(weight), (self.channels,)) for cu, q in self.quantizers.items()}
        if len(steps) == 1:
            return next(iter(steps.values()))
        first = self.share() >= 0.5
        return torch.where(first, steps[self.cus[0]], steps[self.cus[1]])

    def act_quant(self, input_name: str) -> ActQuant:
        return self.act.record(input_name)

    def graph_tensors(self) -> tuple[str, str, dict[str, torch.Tensor], dict[str, int]]:
        parts = self.quantized_parts()
        quantized = {f"W_{cu}": w for cu, (w, _) in parts.items()} | {f"B_{cu}": b for cu, (_, b) in parts.items()}
        op = "Conv" if self.layer.op_type == "Conv" else "Gemm"
        if isinstance(self.choice, SplitPoint):
            split = {"split": self.choice.split(), "centres": self.choice.centres}
            return f"{op}Contiguous", f"blend-{op.lower()}-split", {**split, **quantized}, {}
        return op, f"blend-{op.lower()}", {"theta": self.choice.alpha, **quantized}, {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight, bias = self.effective_weights()
        if not self.act.enabled:
            return self.layer.apply(x, weight, bias)
        return pact_layer(x, self.act.bounds(), weight, bias, self.layer, self.act.rounding)


class SubstituteLayer(MixedLayer):
    """A 3x3 C->C conv whose channel suffix is replaced by a 3x3 depthwise conv (paper Eq. 2)."""

    def __init__(self, layer: LayerModule, cus: tuple[str, str]) -> None:
        super().__init__(layer, cus)
        channels, _, kh, kw = layer.weight.shape
        dw = torch.empty(channels, 1, kh, kw)
        nn.init.kaiming_normal_(dw)
        self.dw_weight = nn.Parameter(dw)
        self.dw_bias = nn.Parameter(layer.bias.detach().clone())
        self.choice = SplitPoint(channels)
        self.warmup_prefix: int | None = None  # set per batch in warm-up: route a random prefix

    def share(self) -> torch.Tensor:
        if self.fixed.numel():
            return self.fixed
        if self.warmup_prefix is not None:
            share = torch.zeros(self.channels, device=self.layer.weight.device)
            share[: self.warmup_prefix] = 1.0
            return share
        return self.choice()

    def architecture_parameters(self) -> list[nn.Parameter]:
        return [self.choice.u]

    def preference(self) -> torch.Tensor:
        return self.choice.preference()

    def set_temperature(self, value: float) -> None:
        self.choice.set_temperature(value)

    def substitute_parameters(self) -> list[nn.Parameter]:
        return [self.dw_weight, self.dw_bias]

    def draw_warmup(self, generator: torch.Generator) -> None:
        """Route a uniformly drawn prefix p ∈ {0..C} to the layer, the rest to the substitute."""
        self.warmup_prefix = int(torch.randint(0, self.channels + 1, (1,), generator=generator))

    def end_warmup(self) -> None:
        self.warmup_prefix = None

    def substitute(self) -> Substitute:
        return Substitute(self.cus[1], self.dw_weight.detach().cpu().numpy(), self.dw_bias.detach().cpu().numpy())

    def graph_tensors(self) -> tuple[str, dict[str, torch.Tensor], dict[str, int]]:
        tensors = {
            "split": self.choice.split(),
            "centres": self.choice.centres,
            "W": self.layer.weight,
            "B": self.layer.bias,
            "W_dw": self.dw_weight,
            "B_dw": self.dw_bias,
        }
        return "", "conv-or-depthwise", tensors, {"channels": self.channels}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        share = self.share().reshape(1, -1, 1, 1)
        conv = self.layer(x)
        dw = _depthwise(self.layer, x, self.dw_weight, self.dw_bias)
        return share * conv + (1 - share) * dw


def _depthwise(layer: LayerModule, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    if not layer.symmetric:
        x = F.pad(x, layer.pre_pad)
    return F.conv2d(x, weight, bias, layer.stride, layer.padding, layer.dilation, weight.shape[0])
