"""A Conv/Gemm on PACT-quantized input that keeps only the float input for its backward pass.

Why: autograd would keep both x (its producer, a ReLU or the data, holds it anyway) and the
quantized copy x_q the layer reads: one more activation-sized tensor per layer, a third more memory
than plain fine-tuning. This Function saves x and recomputes x_q in the backward pass (one fused
pass, `odimo.retrain.kernels`), then calls the layer's own backward kernel: the memory of plain
training, for one extra elementwise pass.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from odimo.ir.records import Rounding
from odimo.retrain.bridge import LayerModule
from odimo.retrain.kernels import fused_pact_backward, fused_pact_forward


class _PactLayer(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, low, clip, scale, weight, bias, layer: LayerModule, rounding: Rounding):
        ctx.save_for_backward(x, low, clip, scale, weight)
        ctx.layer = layer
        ctx.rounding = rounding
        return layer.apply(fused_pact_forward(x, low, clip, scale, rounding), weight, bias)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, low, clip, scale, weight = ctx.saved_tensors
        x_q = fused_pact_forward(x, low, clip, scale, ctx.rounding)
        grad_q, grad_weight, grad_bias = _layer_backward(ctx.layer, grad, x_q, weight)
        grad_x, grad_low, grad_clip = fused_pact_backward(grad_q, x, low, clip)
        grads = grad_x, grad_low.reshape(low.shape), grad_clip.reshape(clip.shape), None, grad_weight, grad_bias
        return *grads, None, None


def _layer_backward(
    layer: LayerModule, grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(∂/∂x, ∂/∂W, ∂/∂b) of `layer.apply(x, W, b)` by the kernels autograd itself would call."""
    if layer.op_type == "Gemm":
        return grad @ weight, grad.t() @ x, grad.sum(0)
    padded = x if layer.symmetric else F.pad(x, layer.pre_pad)
    grad_x, grad_weight, grad_bias = torch.ops.aten.convolution_backward(
        grad,
        padded,
        weight,
        [weight.shape[0]],
        layer.stride,
        layer.padding,
        layer.dilation,
        False,
        [0, 0],
        layer.groups,
        [True, True, True],
    )
    if not layer.symmetric:
        left, _, top, _ = layer.pre_pad
        grad_x = grad_x[..., top : top + x.shape[-2], left : left + x.shape[-1]]
    return grad_x, grad_weight, grad_bias


def pact_layer(
    x: torch.Tensor,
    bounds: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    weight: torch.Tensor,
    bias: torch.Tensor,
    layer: LayerModule,
    rounding: Rounding = Rounding.HALF_EVEN,
) -> torch.Tensor:
    """`layer.apply(pact(x), weight, bias)` with bounds = PactActivation.bounds() and its rounding."""
    return _PactLayer.apply(x, *bounds, weight, bias, layer, rounding)
