"""Calibration: fit each quantized layer to the float model it came from, before any training.

A trained network with BatchNorm folded into its convs has no statistics left to re-estimate, so
every quantization error shifts and shrinks the next layer's input, layer after layer: All-Ternary
ResNet-20 starts at 10 % with the initial scales. Fitting each layer in turn, on a few hundred
training images and against the float model's output of the same layer, recovers most of it with
no training at all (ODiMO on Fashion-MNIST: 10 % -> 93.6 %, research/short-budget-search.md §1.3):
- a per-channel ternary scale S_c that minimises the layer's *output* error (w − q)ᵀ Σ_x (w − q),
  Σ_x the second moment of the layer's input patches, not the weight error;
- a per-channel gain on the ternary level and a per-channel bias shift for every format, so that
  each output channel's mean and spread match the float model's (what BatchNorm re-estimation does);
- PACT clips from the statistics of each layer's input, and of each residual Add input that has
  its own quantizer (the identity path shares its layer's);
- for a depthwise substitute (Darkside), per channel the 3x3 kernel and bias that reproduce the
  conv's output channel from its own input channel in the least-squares sense (the diagonal of the
  conv, or a random init, predicts it worse than its mean).

"Sequential": layer ℓ is fitted on the inputs the already-fitted layers 0..ℓ−1 produce. A pass runs
with every layer on one CU (a CU's branch is fitted where it is used alone), or on the current
assignment after discretization. Everything fitted is deployable: the gain lives in the analog
CU's per-channel requantization step, the shift in the bias.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F

from odimo.retrain.bridge import OnnxModule
from odimo.retrain.hooks import removed_after
from odimo.retrain.mixed_layers import BlendLayer, MixedLayer, SubstituteLayer
from odimo.retrain.quantizers import PactActivation, TernaryWeights
from odimo.retrain.supernet import Supernet

PATCH_ROWS = 20_000  # im2col rows sampled for Σ_x
SCALE_GRID = torch.linspace(0.2, 3.0, 57)  # candidate S_c as multiples of the channel's weight spread
SUBSTITUTE_IMAGES = 256  # a 2x2 map gives 4 positions an image: 1,024 rows for a 10-parameter fit
# Ridge of the depthwise fit, relative to the layer's mean tap energy per channel. On small maps most of a
# conv's output channel is unpredictable from its own input channel, and a plain least-squares fit
# chases that with kernels of several hundred (Darkside seed, 2x2 blocks), which compound layer
# after layer: All-DW's logits grew 4x too large and agreed with the float model on 20 % of images.
# 0.01 fitted held-out images a little closer (gap to the float layer 0.62-0.85 against 0.65-0.86),
# but left kernels twice as large, and an SGD fine-tuning diverged from them.
SUBSTITUTE_RIDGE = 0.1
CLIP_QUANTILE = 0.9999  # PACT clip: the activation level below which this share of the inputs lies
CLIP_VALUES = 1_000_000  # activations sampled for the quantile (torch.quantile's input limit is 16 M)


def calibrate(
    supernet: Supernet,
    reference: OnnxModule,
    images: torch.Tensor,
    assignment: str = "each",
    substitutes_too: bool | None = None,
) -> None:
    """Fit every BlendLayer of `supernet` to `reference` (the float model) on `images`.

    `assignment` "each" runs one pass per CU (every layer on it); "current" one pass on the layers'
    fixed assignment (a given mapping, or after discretization). `substitutes_too` (default: with
    "each") also fits the depthwise substitutes: before a search on the all-conv network, before a
    given mapping trains (or is emitted untrained) on its own; not after a search, which trained them.
    """
    substitutes = [m for m in supernet.mixed_layers() if isinstance(m, SubstituteLayer)]
    if substitutes and (assignment == "each" if substitutes_too is None else substitutes_too):
        _fit_substitutes(supernet, reference, substitutes, images, all_conv=assignment == "each")
    layers = [m for m in supernet.mixed_layers() if isinstance(m, BlendLayer)]
    if not layers:
        return
    targets = _layer_outputs(reference, [m.layer.node_name for m in layers], images)
    was_training = supernet.training
    supernet.eval()
    try:
        with torch.no_grad():
            if assignment == "current":
                _sequential_pass(supernet, layers, targets, images, None)
            else:
                for cu in supernet.plan.target.cus:
                    with _all_on(layers, cu):
                        _sequential_pass(supernet, layers, targets, images, cu)
    finally:
        supernet.train(was_training)


def _sequential_pass(
    supernet: Supernet,
    layers: list[BlendLayer],
    targets: dict[str, torch.Tensor],
    images: torch.Tensor,
    cu: str | None,
) -> None:
    """One forward pass that fits each layer on its input just before the layer runs, so every later
    layer sees the outputs of the layers already fitted."""

    def fit(module: BlendLayer, inputs: tuple[torch.Tensor, ...]) -> None:
        if cu is not None and cu not in module.quantizers:
            return  # a fixed layer is fitted in the pass of its own CU, on the inputs it will see
        x = inputs[0]
        if cu is None or cu == module.cus[0]:
            module.act.clip.fill_(_clip_of(x, module.act.signed))
        quantizer = module.quantizers[cu] if cu is not None else None
        if isinstance(quantizer, TernaryWeights):
            quantizer.gain.fill_(1.0)
            quantizer.set_scales(_output_mse_scales(module, x))
        _fit_affine(module, x, targets[module.layer.node_name], cu)

    def fit_clip(quantizer: PactActivation, inputs: tuple[torch.Tensor, ...]) -> None:
        if cu is None or cu == supernet.plan.target.cus[0]:  # as a layer's own clip, in the first pass
            quantizer.clip.fill_(_clip_of(inputs[0], quantizer.signed))

    hooks = [module.register_forward_pre_hook(fit) for module in layers]
    hooks += [q.register_forward_pre_hook(fit_clip) for q in supernet.residual_quantizers.values()]
    with removed_after(hooks):
        supernet(images)


def _fit_substitutes(
    supernet: Supernet, reference: OnnxModule, layers: list[SubstituteLayer], images: torch.Tensor, all_conv: bool
) -> None:
    """Least-squares depthwise kernels against the float model's output of each layer, on the inputs
    of the all-conv network (where the search starts, so the target is the conv's own output) or,
    sequentially, of the current assignment: each fit sees the substitutes before it and also makes
    up, where one channel can, for what they changed upstream."""
    images = images[:SUBSTITUTE_IMAGES]
    targets = _layer_outputs(reference, [m.layer.node_name for m in layers], images)

    def fit(module: SubstituteLayer, inputs: tuple[torch.Tensor, ...]) -> None:
        weight, bias = _least_squares_depthwise(module.layer, inputs[0], targets[module.layer.node_name])
        module.dw_weight.copy_(weight.reshape(module.dw_weight.shape))
        module.dw_bias.copy_(bias)

    hooks = [module.register_forward_pre_hook(fit) for module in layers]
    routing = _all_on(layers, supernet.plan.target.cus[0]) if all_conv else contextlib.nullcontext()
    with removed_after(hooks), torch.no_grad(), routing:
        supernet(images)


def _least_squares_depthwise(
    layer: torch.nn.Module, x: torch.Tensor, target: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per channel c, argmin over (K_c, b_c) of |y_c − (patches of x_c)·K_c − b_c|²."""
    channels = x.shape[1]
    cols = _unfold(layer, x)
    taps = cols.shape[1] // channels
    patches = cols.reshape(x.shape[0], channels, taps, -1).permute(1, 0, 3, 2).reshape(channels, -1, taps)
    y = target.permute(1, 0, 2, 3).reshape(channels, -1)
    if patches.shape[1] > PATCH_ROWS:
        pick = _sample(patches.shape[1], PATCH_ROWS)
        patches, y = patches[:, pick], y[:, pick]
    design = torch.cat([patches, torch.ones_like(patches[..., :1])], dim=2).to(torch.float64)
    gram = design.transpose(1, 2) @ design
    energy = gram.diagonal(dim1=1, dim2=2)[:, :taps].mean().clamp(min=1e-12)  # the layer's mean per channel
    ridge = torch.ones(taps + 1, dtype=torch.float64)
    ridge[taps] = 0.0  # the bias is not shrunk
    gram = gram + (SUBSTITUTE_RIDGE * energy + 1e-9) * torch.diag(ridge)
    solution = torch.linalg.solve(gram, design.transpose(1, 2) @ y.to(torch.float64)[..., None])[..., 0]
    return solution[:, :taps].to(torch.float32), solution[:, taps].to(torch.float32)


def _fit_affine(module: BlendLayer, x: torch.Tensor, target: torch.Tensor, cu: str | None) -> None:
    """Match each output channel's mean (every format) and spread (ternary) to the float output."""
    quantizers = [module.quantizers[cu]] if cu is not None else list(module.quantizers.values())
    for q in quantizers:
        q.offset.zero_()
    out = module.forward(x)  # not module(x): that would run the calibration hook again
    dims = [d for d in range(out.dim()) if d != 1]
    for q in quantizers:
        if isinstance(q, TernaryWeights):
            spread_out, spread_ref = out.std(dim=dims), target.std(dim=dims)
            gain = torch.where(spread_out > 1e-8, spread_ref / spread_out.clamp(min=1e-8), torch.ones_like(spread_out))
            q.gain.mul_(gain.clamp(0.25, 4.0))
    out = module.forward(x)
    shift = target.mean(dim=dims) - out.mean(dim=dims)
    for q in quantizers:
        q.offset.add_(shift)


def _output_mse_scales(module: BlendLayer, x: torch.Tensor) -> torch.Tensor:
    """Per channel, the S_c on SCALE_GRID·σ_c minimising (w − q)ᵀ Σ_x (w − q)."""
    layer = module.layer
    x = module.act(x) if module.act.enabled else x
    patches = _patches(layer, x).to(torch.float64)
    sigma = patches.T @ patches / len(patches)
    weight = layer.weight.detach().reshape(layer.weight.shape[0], -1).to(torch.float64)
    spread = weight.std(dim=1, unbiased=False).clamp(min=1e-12)
    best, best_err = spread.clone(), torch.full_like(spread, float("inf"))
    for ratio in SCALE_GRID:
        s = (ratio * spread)[:, None]
        error = weight - s * torch.round(torch.clamp(weight / s, -1, 1))
        err = ((error @ sigma) * error).sum(dim=1)
        better = err < best_err
        best = torch.where(better, s[:, 0], best)
        best_err = torch.where(better, err, best_err)
    return best.to(torch.float32)


def _patches(layer: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The layer's input as rows of its weight's columns (im2col for a conv), sampled."""
    if layer.op_type == "Gemm":
        rows = x.reshape(x.shape[0], -1)
    else:
        cols = _unfold(layer, x)
        rows = cols.transpose(1, 2).reshape(-1, cols.shape[1])
    return rows[_sample(len(rows), PATCH_ROWS)] if len(rows) > PATCH_ROWS else rows


def _unfold(layer: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """im2col of a conv's input, padded as the conv pads it: (batch, c_in·kernel, positions)."""
    padded = x if layer.symmetric else F.pad(x, layer.pre_pad)
    kernel = layer.weight.shape[2:]
    return F.unfold(padded, kernel, dilation=layer.dilation, padding=layer.padding, stride=layer.stride)


def _sample(count: int, keep: int) -> torch.Tensor:
    """`keep` of `count` row indices, the same on every run (seeded, so calibration is deterministic)."""
    return torch.randperm(count, generator=torch.Generator().manual_seed(0))[:keep]


def _clip_of(x: torch.Tensor, signed: bool) -> float:
    values = x.abs() if signed else x.clamp(min=0)
    flat = values.reshape(-1)
    if len(flat) > CLIP_VALUES:
        flat = flat[_sample(len(flat), CLIP_VALUES)]
    return max(float(torch.quantile(flat.float(), CLIP_QUANTILE)), 1e-3)


def _layer_outputs(reference: OnnxModule, names: list[str], images: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each named layer's output in the float model."""
    outputs: dict[str, torch.Tensor] = {}
    hooks = [
        reference.layer(name).register_forward_hook(lambda m, i, o, name=name: outputs.__setitem__(name, o.detach()))
        for name in names
    ]
    with removed_after(hooks), torch.no_grad():
        reference.eval()(images)
    return outputs


@contextlib.contextmanager
def _all_on(layers: list[MixedLayer], cu: str) -> Iterator[None]:
    """Every layer's channels on `cu` where it can run them (fixed layers keep their one CU)."""
    saved = [m.fixed for m in layers]
    try:
        for m in layers:
            if m.searchable:
                m.fix_assignment((cu,) * m.channels)
        yield
    finally:
        for m, fixed in zip(layers, saved, strict=True):
            m.fixed = fixed
