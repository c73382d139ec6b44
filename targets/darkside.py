"""Darkside: an 8-core RISC-V cluster and a 3x3 depthwise engine (DWE) (targets.md §4).

A searchable layer is a 3x3 C->C conv whose channels split into a cluster prefix (the conv itself)
and a DWE suffix (a 3x3 depthwise conv substituted for those channels, paper Eq. 2).
Axis names follow the reference: o_x = W, o_y = H (R8).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from odimo.ir.geometry import LayerGeometry, LayerKind
from odimo.targets.arith import Arith, Number, ceil_div
from odimo.targets.base import (
    CU,
    LambdaRamp,
    LayerSupport,
    ParamGroup,
    ParamSet,
    Role,
    SearchKind,
    SearchSpec,
    Target,
    register_target,
)
from odimo.targets.baselines import AllOn, BaselineCost, MinCost, Objective
from odimo.targets.costing import CostTable, LayerCost, layer_cost, tabulate
from odimo.targets.quantization import WeightFormat

_SEARCH_SPACE = "a 3x3, groups 1, c_in == c_out, dilation 1, stride <= 2 conv"

# odimo imports a trained network, where the reference trains the supernet from scratch: the warm-up
# trains only the new depthwise substitutes (lr 5e-3 on the whole supernet wrecks a pretrained one
# within a few steps), and the imported weights are fine-tuned with SGD (momentum 0.9) at 1e-2,
# whose steps scale with the gradient: the accurate corner, which the float model teaches, barely
# moves, while the layers around substituted channels, far from trained, move fast. Adam steps
# every weight by ~lr whatever its gradient. Measured on the Darkside seed (float 91.61 %), one
# final epoch of 150 batches: All-conv 91.65 % with SGD 1e-2, 26.84 % with Adam 1e-3; All-DW
# 78.53 % with SGD 1e-2, 79.92 % with Adam 1e-3, 64.4 % with Adam 1e-4 (the earlier rate); SGD 3e-2
# diverged. The substitutes and α keep the reference's Adam 1e-3. λ ramps from 1 % to its full value
# at half the search (§3).
_NETWORK = ParamGroup(ParamSet.NETWORK, "sgd", 1e-2, momentum=0.9, weight_decay=1e-4)
_SUBSTITUTES = ParamGroup(ParamSet.SUBSTITUTES, "adam", 1e-3, weight_decay=1e-4)
_SEARCH = SearchSpec(
    kind=SearchKind.CONV_OR_SUBSTITUTE,
    quantized_weights=False,  # the Darkside search trains float weights (method.md §2)
    warmup=(ParamGroup(ParamSet.SUBSTITUTES, "adam", 5e-3, weight_decay=1e-4),),
    search=(_NETWORK, _SUBSTITUTES, ParamGroup(ParamSet.ARCHITECTURE, "adam", 1e-3, travel=3.0, max_lr=1e-2)),
    final=(_NETWORK, _SUBSTITUTES),
    graph_function="DarksideConvOrDw",
    lambda_ramp=LambdaRamp(start=0.01, full_at=0.5),
)


def _cluster_conv_latency(layer: LayerGeometry, c: Number, arith: Arith) -> Number:
    """im2col + 4x2 matmul kernel, parallel over output rows (2) and columns (8).

    Gated (R6): with no cluster channels there is no conv sub-layer and no im2col. A grouped conv
    (not in the reference) is costed with its per-group input depth c_in / groups.
    """
    o_y, o_x = layer.out_hw
    kx, ky = layer.kernel
    depth = kx * ky * layer.c_in // layer.groups
    iterations = ceil_div(o_y, 2) * ceil_div(o_x, 8)
    matmul = arith.ceil(c, 4) * (14 * ceil_div(depth, 4) + 15)
    return arith.gate(c) * iterations * (2 * depth + matmul)


def _runs_on_dwe(layer: LayerGeometry) -> bool:
    return (
        layer.kind is LayerKind.DEPTHWISE
        and layer.kernel == (3, 3)
        and layer.dilation == (1, 1)
        and max(layer.stride) <= 2
    )


def _searchable(layer: LayerGeometry) -> bool:
    return (
        layer.kind is LayerKind.CONV
        and layer.kernel == (3, 3)
        and layer.c_in == layer.c_out
        and layer.dilation == (1, 1)
        and max(layer.stride) <= 2
    )


def _describe(layer: LayerGeometry) -> str:
    kh, kw = layer.kernel
    return (
        f"a {kh}x{kw} {layer.kind.value} layer, c_in {layer.c_in}, c_out {layer.c_out}, "
        f"groups {layer.groups}, stride {layer.stride}, dilation {layer.dilation}"
    )


def dws_substitute(layer: LayerGeometry) -> tuple[LayerGeometry, LayerGeometry]:
    """The MobileNetV1 block replacing a searchable layer: 3x3 depthwise (DWE), then 1x1 C->C (cluster)."""
    depthwise = LayerGeometry.conv(
        f"{layer.name}/dw",
        layer.c_in,
        layer.c_in,
        layer.kernel,
        layer.out_hw,
        stride=layer.stride,
        groups=layer.c_in,
    )
    pointwise = LayerGeometry.conv(f"{layer.name}/pw", layer.c_in, layer.c_out, 1, layer.out_hw)
    return depthwise, pointwise


def dws_cost(layers: Sequence[LayerGeometry], target: Target) -> CostTable:
    """Cost of the DWS baseline (targets.md §5.4): every searchable layer becomes `dws_substitute`.

    The two substitutes run one after the other, each with the other CU idle; they keep the
    searchable role, so the `searchable` sum compares with the other baselines. Other layers run
    whole on their only CU.
    """
    rows = []
    for layer in layers:
        support = target.support(layer)
        if support.role is Role.SEARCHABLE:
            rows += [_whole(sub, target, Role.SEARCHABLE) for sub in dws_substitute(layer)]
        else:
            rows.append(_whole(layer, target, support.role))
    return tabulate(target, rows)


def _whole(layer: LayerGeometry, target: Target, role: Role) -> LayerCost:
    cus = target.support(layer).cus
    return layer_cost(target, layer, {cus[0]: layer.c_out} if cus else {}, role)


@dataclass(frozen=True)
class Dws:
    """The DWS baseline: a structural substitute, so it is costed but is not a mapping."""

    name: str

    def cost(self, layers: Sequence[LayerGeometry], target: Target) -> BaselineCost:
        note = "each searchable layer replaced by a 3x3 depthwise conv (dwe) then a 1x1 conv (cluster)"
        return BaselineCost(self.name, dws_cost(layers, target), (note,))


class Darkside(Target):
    name = "darkside"
    # Reference: 168 / 118 mW active, 1.32 mW idle per CU, i.e. Eq. 4 with these constants.
    cu_table = (CU("cluster", 166.68, "#2ca02c"), CU("dwe", 116.68, "#d62728"))
    power_idle_mw = 2.64
    default_tau = 1e7
    contiguous = True
    substitute_cu = "dwe"
    weight_formats = {"cluster": WeightFormat.INT8_CHANNEL, "dwe": WeightFormat.INT8_CHANNEL}
    default_emit = "float"  # the search trains float weights
    search_spec = _SEARCH
    default_lambda = 1.0  # relative to All-conv's cost (the reference grid's 5e-8 per cycle on the seed)
    baselines = (
        AllOn("All-conv", "cluster"),
        AllOn("All-DW", "dwe"),
        MinCost("Min-Cost", Objective.LATENCY),
        Dws("DWS"),
    )

    def support(self, layer: LayerGeometry) -> LayerSupport:
        """3x3 depthwise goes to the DWE, the searchable convs split, everything else is cluster."""
        if _runs_on_dwe(layer):
            return LayerSupport(Role.FIXED, ("dwe",), "cluster: a 3x3 depthwise conv always goes to the dwe")
        if _searchable(layer):
            return LayerSupport(Role.SEARCHABLE, self.cus)
        return LayerSupport(
            Role.FIXED,
            ("cluster",),
            f"dwe: runs only 3x3 depthwise convs, or substitutes one for {_SEARCH_SPACE}; this is {_describe(layer)}",
        )

    def cu_latency(self, layer: LayerGeometry, cu: str, channels: Number, arith: Arith) -> Number:
        o_y, o_x = layer.out_hw
        if cu == "dwe":
            # The DWE model ignores kernel and stride (R11): it sees only the output map.
            return arith.ceil(channels, 16) * ((9 + 9 * o_x) + 4 * o_x * o_y)
        if layer.kind is LayerKind.LINEAR:
            return ceil_div(layer.c_in, 2) * arith.ceil(channels, 4)
        kx, ky = layer.kernel
        if layer.kind is LayerKind.DEPTHWISE:
            return 4 * arith.ceil(channels, 4) * o_x * o_y * kx * ky
        return _cluster_conv_latency(layer, channels, arith)


DARKSIDE = register_target(Darkside())
