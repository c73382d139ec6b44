"""The fused PACT kernels and the PACT-input layer that recomputes its quantized input.

Both must give exactly the numbers of the plain eager formulas (the QDQ emission reproduces those),
whatever the shape, memory format or compile state.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from odimo.ir.records import Rounding
from odimo.retrain import kernels
from odimo.retrain.bridge import LayerModule, NodeSpec
from odimo.retrain.kernels import (
    EAGER_FORWARD,
    fused_pact_backward,
    fused_pact_forward,
    pact_backward,
    pact_forward,
    pact_round_forward,
)
from odimo.retrain.pact_layer import pact_layer
from odimo.retrain.quantizers import PactActivation


def _bounds(signed: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return PactActivation(3.0, signed).bounds()


def _tensors() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(4, 6, 5, 7, generator=generator) * 4
    return {
        "nchw": x,
        "channels_last": x.contiguous(memory_format=torch.channels_last),
        "fc": torch.randn(9, 33, generator=generator) * 4,
        "strided_slice": x[:, ::2, 1:, :],
        "exact_bounds": torch.tensor([-3.0, 0.0, 3.0 - 1 / 32, 4.0, 3.0, -4.0]),
    }


@pytest.mark.parametrize("rounding", list(Rounding))
@pytest.mark.parametrize("signed", [False, True])
@pytest.mark.parametrize("layout", list(_tensors()))
def test_fused_kernels_equal_the_eager_formulas_bit_for_bit(layout: str, signed: bool, rounding: Rounding) -> None:
    x = _tensors()[layout]
    low, clip, scale = (t.detach() for t in _bounds(signed))
    grad = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))

    produced = fused_pact_forward(x, low, clip, scale, rounding)
    assert torch.equal(produced, EAGER_FORWARD[rounding](x, low, clip, scale))
    assert produced.shape == x.shape
    if layout == "channels_last":
        assert produced.is_contiguous(memory_format=torch.channels_last)

    grad_x, grad_low, grad_clip = fused_pact_backward(grad, x, low, clip)
    expected = pact_backward(grad, x, low, clip)
    assert torch.equal(grad_x, expected[0])
    torch.testing.assert_close(grad_low, expected[1], rtol=1e-6, atol=1e-5)  # summation order only
    torch.testing.assert_close(grad_clip, expected[2], rtol=1e-6, atol=1e-5)


def test_a_gradient_in_another_memory_format_is_paired_element_for_element() -> None:
    x = _tensors()["channels_last"]
    low, clip, _ = (t.detach() for t in _bounds(False))
    grad = torch.randn(x.shape, generator=torch.Generator().manual_seed(2))  # NCHW, x is NHWC
    assert torch.equal(fused_pact_backward(grad, x, low, clip)[0], pact_backward(grad, x, low, clip)[0])


def test_many_shapes_share_one_compiled_kernel_without_falling_back() -> None:
    low, clip, scale = (t.detach() for t in _bounds(False))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a fallback would warn
        for n in range(1, 14):
            x = torch.randn(n, 3, n + 2, 5)
            for rounding, eager in EAGER_FORWARD.items():
                assert torch.equal(fused_pact_forward(x, low, clip, scale, rounding), eager(x, low, clip, scale))
    assert not kernels._flat_pact_forward.failed and not kernels._flat_pact_round_forward.failed


def test_the_compiled_round_is_half_to_even_as_quantize_linear() -> None:
    """Ties go to the even code (2.5 -> 2, 3.5 -> 4), as onnx QuantizeLinear rounds; floor keeps the guard."""
    low, clip, scale = torch.tensor(0.0), torch.tensor(127 / 4), torch.tensor(4.0)
    ties = torch.tensor([0.5, 1.5, 2.5, 3.5, 126.5]) / 4
    assert torch.equal(fused_pact_forward(ties, low, clip, scale) * 4, torch.tensor([0.0, 2, 2, 4, 126]))
    assert torch.equal(pact_round_forward(ties, low, clip, scale) * 4, torch.tensor([0.0, 2, 2, 4, 126]))
    floored = fused_pact_forward(ties, low, clip, scale, Rounding.FLOOR) * 4
    assert torch.equal(floored, torch.tensor([0.0, 1, 2, 3, 126]))


def test_a_failing_compiler_warns_once_and_gives_the_eager_numbers(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_args: object, **_kwargs: object):
        def run(*_a: object) -> None:
            raise RuntimeError("no C++ compiler")

        return run

    monkeypatch.setattr(torch, "compile", broken)
    kernel = kernels._FusedKernel(pact_forward)
    x = _tensors()["fc"]
    bounds = tuple(t.detach() for t in _bounds(True))
    with pytest.warns(
        RuntimeWarning, match="torch.compile of pact_forward failed .*no C\\+\\+ compiler.*ODIMO_COMPILE=0"
    ):
        first = kernel(x, *bounds)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        second = kernel(x, *bounds)
    assert kernel.failed and torch.equal(first, pact_forward(x, *bounds)) and torch.equal(second, first)


def test_odimo_compile_0_runs_eagerly_without_compiling(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(kernels.COMPILE_ENV, "0")
    kernel = kernels._FusedKernel(pact_forward)
    x = _tensors()["nchw"]
    bounds = tuple(t.detach() for t in _bounds(False))
    assert torch.equal(kernel(x, *bounds), pact_forward(x, *bounds))
    assert kernel.compiled is None


# ------------------------------------------------------------------ PACT-input layer (recompute)


def _layer(op: str, pads: list[int] | None) -> tuple[LayerModule, torch.Tensor]:
    rng = np.random.default_rng(0)
    if op == "Gemm":
        spec, weight, x = NodeSpec("fc", "Gemm", (), (), {}), rng.normal(size=(8, 5)), torch.randn(3, 5) * 4
    else:
        spec = NodeSpec("conv", "Conv", (), (), {"pads": pads, "strides": [2, 2]})
        weight, x = (
            rng.normal(size=(8, 4, 3, 3)),
            (torch.randn(3, 4, 9, 9) * 4).contiguous(memory_format=torch.channels_last),
        )
    return LayerModule(spec, weight.astype(np.float32), rng.normal(size=8).astype(np.float32)), x


@pytest.mark.parametrize("rounding", list(Rounding))
@pytest.mark.parametrize("signed", [False, True])
@pytest.mark.parametrize(("op", "pads"), [("Conv", [1, 1, 1, 1]), ("Conv", [0, 1, 1, 2]), ("Gemm", None)])
def test_pact_layer_equals_the_layer_on_pact_output_in_value_and_every_gradient(
    op: str, pads: list[int] | None, signed: bool, rounding: Rounding
) -> None:
    layer, x = _layer(op, pads)
    act = PactActivation(3.0, signed, rounding)
    results = []
    for fused in (False, True):
        for p in (act.clip, layer.weight, layer.bias):
            p.grad = None
        leaf = x.clone().requires_grad_()
        y = (
            pact_layer(leaf, act.bounds(), layer.weight, layer.bias, layer, act.rounding)
            if fused
            else layer.apply(act(leaf), layer.weight, layer.bias)
        )
        y.backward(torch.linspace(-1, 1, y.numel()).reshape(y.shape))
        results.append(
            (y.detach(), leaf.grad, act.clip.grad.clone(), layer.weight.grad.clone(), layer.bias.grad.clone())
        )
    for name, plain, fused in zip(("output", "d/dx", "d/dclip", "d/dW", "d/db"), *results, strict=True):
        torch.testing.assert_close(fused, plain, rtol=1e-5, atol=1e-5, msg=name)
