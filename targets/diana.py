"""DIANA: an 8-bit digital PE array and a ternary analog in-memory array (targets.md §3).

The per-channel CU choice is a precision choice: digital channels get int8 weights, analog ones
ternary. Formulas are the reference `hw_models.py` ones, kept exact (R1, R7, R8).
"""

from __future__ import annotations

from odimo.ir.geometry import LayerGeometry, LayerKind
from odimo.targets.arith import Arith, Number, ceil_div
from odimo.targets.base import (
    CU,
    LayerSupport,
    ParamGroup,
    ParamSet,
    Role,
    SearchKind,
    SearchSpec,
    Target,
    register_target,
)
from odimo.targets.baselines import AllOn, IoOn, MinCost, Objective
from odimo.targets.quantization import WeightFormat

# One analog step is 70 ns at 260 MHz: 70e-9 · 260e6 = 18.2 = 91/5 cycles.
_ANALOG_STEP_NUM, _ANALOG_STEP_DEN = 91, 5
_AIMC_ROWS, _AIMC_COLS = 1152, 512

# SGD on the network (method.md §4), Adam on θ during the search with a rate sized to the number of
# search steps (a choice can travel 3 logits); the final phase fine-tunes at the search's rate on a
# cosine to 0 (trainer.py). Quantizer parameters (ternary log-scales, PACT clips) get Adam at 1e-3:
# the reference's SGD 1e-5 moves a log-scale by ~1e-8 a step, i.e. not at all in a short budget,
# while Adam moves each by up to ~0.15 over 150 steps (λ 0.25, 150 batches: 93.49 % ORT at 2.88x,
# against 93.46 % at 2.35x with SGD 1e-5, one run each).
_NETWORK = ParamGroup(ParamSet.NETWORK, "sgd", 1e-3, momentum=0.9, weight_decay=1e-4)
_QUANTIZERS = ParamGroup(ParamSet.QUANTIZERS, "adam", 1e-3)
_SEARCH = SearchSpec(
    kind=SearchKind.WEIGHT_BLEND,
    quantized_weights=True,
    warmup=(_NETWORK, _QUANTIZERS),
    search=(_NETWORK, _QUANTIZERS, ParamGroup(ParamSet.ARCHITECTURE, "adam", 1e-3, travel=3.0, max_lr=1e-2)),
    final=(_NETWORK, _QUANTIZERS),
    graph_function="DianaMixed",
)


class Diana(Target):
    name = "diana"
    # p_dig = 24.96, p_ana = 28.74, p_hyb = 42.39 mW of the reference are Eq. 4 with these.
    cu_table = (CU("digital", 13.65, "#1f77b4"), CU("analog", 17.43, "#ff7f0e"))
    power_idle_mw = 11.31
    default_tau = 1.0
    contiguous = False
    weight_formats = {"digital": WeightFormat.INT8_POW2, "analog": WeightFormat.TERNARY}
    default_emit = "qdq"
    search_spec = _SEARCH
    default_lambda = 0.25  # relative to All-8bit's cost; the 4-λ sweep of the README picked it
    baselines = (
        AllOn("All-8bit", "digital"),
        AllOn("All-Ternary", "analog"),
        IoOn("IO-8bit", io_cu="digital", rest_cu="analog"),
        MinCost("Min-Cost", Objective.LATENCY),
        MinCost("Min-Cost-Energy", Objective.ENERGY),
    )

    def support(self, layer: LayerGeometry) -> LayerSupport:
        """Convs with groups 1 and linear layers are searched; depthwise is digital; the rest host."""
        if layer.dilation != (1, 1):
            why = f"dilated convs (dilation {layer.dilation}) are not modelled"
            return LayerSupport(Role.HOST, (), f"digital: {why}; analog: {why}")
        if layer.kind in (LayerKind.CONV, LayerKind.LINEAR):
            return LayerSupport(Role.SEARCHABLE, self.cus)
        if layer.kind is LayerKind.DEPTHWISE:
            return LayerSupport(Role.FIXED, ("digital",), "analog: runs only groups == 1 convs and linear layers")
        why = f"grouped convs (groups {layer.groups}, not depthwise) are not modelled"
        return LayerSupport(Role.HOST, (), f"digital: {why}; analog: {why}")

    def cu_latency(self, layer: LayerGeometry, cu: str, channels: Number, arith: Arith) -> Number:
        if cu == "digital":
            return _digital_latency(layer, channels, arith)
        return _analog_latency(layer, channels, arith)


def _digital_latency(layer: LayerGeometry, c: Number, arith: Arith) -> Number:
    """LAT_dig: 16x16 PEs over (output channels per group, OX); loads/stores of 8 bytes a cycle.

    For a depthwise layer groups = C = Cin, so the channel term is 1 and Cin carries the work.
    """
    ox, oy = layer.out_hw
    kx, ky = layer.kernel
    comp = arith.ceil(c / layer.groups, 16) * layer.c_in * ceil_div(ox, 16) * oy * kx * ky
    ldst = ox * oy * (c + layer.c_in) / 8
    return arith.gate(c) * ldst + comp


def _analog_latency(layer: LayerGeometry, c: Number, arith: Arith) -> Number:
    """LAT_ana: weight programming (independent of C) plus array steps of 70 ns each.

    The unroll u replicates the kernel along OX while the columns (u·C <= 512) and the rows
    ((u + kx − 1) · max(64, Cin) · ky <= 1152) fit; OX·OY/u is not rounded (R7).
    """
    ox, oy = layer.out_hw
    kx, ky = layer.kernel
    rows = max(64, layer.c_in) * ky
    unrolls = [(_AIMC_COLS / u, u) for u in (8, 4, 2) if (u + kx - 1) * rows <= _AIMC_ROWS]
    u = arith.first_fit(c, unrolls, 1)
    steps = arith.ceil(c, _AIMC_COLS) * ceil_div(layer.c_in, 128) * ox * oy / u
    program = 8 * layer.c_in * kx * ky
    return arith.gate(c) * program + steps * _ANALOG_STEP_NUM / _ANALOG_STEP_DEN


DIANA = register_target(Diana())
