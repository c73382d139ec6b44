"""The differentiable costs: equal to the exact ones at one-hot assignments, useful gradients.

The search parameters are built here as method.md §1 defines them (DIANA: per-channel softmax over
two rows; Darkside: cumulative |α| mask with a straight-through estimator).
"""

from __future__ import annotations

import pytest
import torch
from networks import mobilenetv1_supernet, resnet20_cifar10

from odimo.ir.assignment import Assignment
from odimo.ir.geometry import LayerGeometry
from odimo.targets import Role, smooth_max
from odimo.targets.costing import cost_table
from odimo.targets.darkside import DARKSIDE
from odimo.targets.diana import DIANA

HARD = 1e-6  # a temperature at which the smooth max is the hard max in float64
A = LayerGeometry.conv("A", 16, 16, 3, 32)


def _diana_counts(theta: torch.Tensor) -> dict[str, torch.Tensor]:
    """Expected channel counts from θ (2 x C): row 0 digital, row 1 analog (method.md §3)."""
    return {"digital": theta[0].sum(), "analog": theta[1].sum()}


def _darkside_counts(alpha: torch.Tensor) -> dict[str, torch.Tensor]:
    """C_cl = Σ 1[θ_i > 0.5] with θ_i = Σ_{j>=i} |α_j| and a straight-through mask (method.md §1.2)."""
    theta = torch.flip(torch.cumsum(torch.flip(alpha.abs(), [0]), 0), [0])
    mask = (theta > 0.5).to(theta.dtype)
    c_cl = (mask.detach() + theta - theta.detach()).sum()
    return {"cluster": c_cl, "dwe": alpha.numel() - c_cl}


def test_diana_torch_equals_exact_at_one_hot() -> None:
    gen = torch.Generator().manual_seed(0)
    layers = resnet20_cifar10()
    assignment, latency, energy = {}, 0.0, 0.0
    for layer in layers:
        on_digital = torch.rand(layer.c_out, generator=gen, dtype=torch.float64) < 0.3
        theta = torch.stack([on_digital, ~on_digital]).to(torch.float64)
        counts = _diana_counts(theta)
        for cu, c in counts.items():
            exact = DIANA.latency(layer, cu, int(c))
            assert DIANA.latency_torch(layer, cu, c).item() == pytest.approx(exact, rel=1e-12)
        latency += DIANA.layer_latency_torch(layer, counts, tau=HARD).item()
        energy += DIANA.layer_energy_torch(layer, counts, tau=HARD).item()
        assignment[layer.name] = tuple("digital" if d else "analog" for d in on_digital.tolist())
    table = cost_table(layers, DIANA, Assignment("diana", assignment))
    assert latency == pytest.approx(table.total.cycles, rel=1e-9)
    assert energy == pytest.approx(table.total.energy_mw_cycles, rel=1e-9)


def test_darkside_torch_equals_exact_at_integer_splits() -> None:
    gen = torch.Generator().manual_seed(1)
    layers = [layer for layer in mobilenetv1_supernet("cifar10") if DARKSIDE.support(layer).role is Role.SEARCHABLE]
    assignment, latency, energy = {}, 0.0, 0.0
    for layer in layers:
        k = int(torch.randint(0, layer.c_out + 1, (), generator=gen))
        alpha = torch.zeros(layer.c_out, dtype=torch.float64)
        alpha[:k] = 1.0
        counts = _darkside_counts(alpha)
        assert counts["cluster"].item() == k
        latency += DARKSIDE.layer_latency_torch(layer, counts, tau=HARD).item()
        energy += DARKSIDE.layer_energy_torch(layer, counts, tau=HARD).item()
        assignment[layer.name] = ("cluster",) * k + ("dwe",) * (layer.c_out - k)
    table = cost_table(layers, DARKSIDE, Assignment("darkside", assignment))
    assert latency == pytest.approx(table.searchable.cycles, rel=1e-9)
    assert energy == pytest.approx(table.searchable.energy_mw_cycles, rel=1e-9)


@pytest.mark.parametrize("channels, lat_dig, lat_ana", [(7.5, 12_224, None), (0.5, 0, 0), (16.5, 13_376, None)])
def test_fractional_counts_match_the_exact_form(channels, lat_dig, lat_ana) -> None:
    c = torch.tensor(channels, dtype=torch.float64)
    assert DIANA.latency_torch(A, "digital", c).item() == lat_dig
    if lat_ana is not None:
        assert DIANA.latency_torch(A, "analog", c).item() == lat_ana


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_keeps_dtype_and_shape(dtype) -> None:
    c = torch.tensor([[0.0, 4.0], [8.0, 16.0]], dtype=dtype)
    out = DIANA.latency_torch(A, "analog", c)
    assert out.dtype == dtype and out.shape == c.shape
    expected = torch.tensor([[0, 5_811.2], [5_811.2, 5_811.2]], dtype=dtype)
    torch.testing.assert_close(out, expected)


def _slope(target, layer, cu, channels: float) -> float:
    c = torch.tensor(channels, dtype=torch.float64, requires_grad=True)
    target.latency_torch(layer, cu, c).backward()
    return c.grad.item()


def test_straight_through_slopes() -> None:
    """R2: ceil passes slope 1; R3: the gate has slope 1 only below one channel; R4: u has none."""
    # Digital at C = 7.5: ceil16 slope 1 → Cin·ceil16(OX)·OY·kx·ky, plus the load/store OX·OY/8.
    assert _slope(DIANA, A, "digital", 7.5) == 16 * 2 * 32 * 9 + 32 * 32 / 8
    # Analog at C = 8 (u = 4): only the ceil512 term, 1·ceil128(Cin)·OX·OY/u·18.2.
    assert _slope(DIANA, A, "analog", 8.0) == pytest.approx(1 * 1024 / 4 * 18.2, rel=1e-12)
    # Analog at C = 0.5: the gate adds the weight programming 8·Cin·kx·ky.
    assert _slope(DIANA, A, "analog", 0.5) == pytest.approx(8 * 16 * 9 + 1024 / 4 * 18.2, rel=1e-12)
    # DWE: ceil16 slope 1 times the per-16-channel cost.
    layer = LayerGeometry.conv("L", 128, 128, 3, 8)
    assert _slope(DARKSIDE, layer, "dwe", 40.0) == (9 + 72) + 256


def test_gradients_are_finite_and_nonzero() -> None:
    torch.manual_seed(0)
    diana_alphas = [torch.full((2, layer.c_out), 0.01, requires_grad=True) for layer in resnet20_cifar10()]
    thetas = [torch.softmax(alpha, dim=0) for alpha in diana_alphas]
    cost = sum(
        DIANA.layer_latency_torch(layer, _diana_counts(theta)) for layer, theta in zip(resnet20_cifar10(), thetas)
    )
    cost.backward()
    for alpha in diana_alphas:
        assert torch.isfinite(alpha.grad).all() and alpha.grad.abs().sum() > 0

    layers = [layer for layer in mobilenetv1_supernet("cifar10") if DARKSIDE.support(layer).role is Role.SEARCHABLE]
    darkside_alphas = []
    for layer in layers:  # `half` init with the 0.1/C fix of method.md §1.2
        alpha = torch.full((layer.c_out,), 0.1 / layer.c_out)
        alpha[: layer.c_out // 2] = 1.0
        darkside_alphas.append(alpha.requires_grad_())
    energy = sum(
        DARKSIDE.layer_energy_torch(layer, _darkside_counts(alpha)) for layer, alpha in zip(layers, darkside_alphas)
    )
    energy.backward()
    for alpha in darkside_alphas:
        assert torch.isfinite(alpha.grad).all() and alpha.grad.abs().sum() > 0


def test_a_gradient_step_lowers_the_cost() -> None:
    alpha = torch.full((2, 16), 0.01, dtype=torch.float64, requires_grad=True)

    def cost() -> torch.Tensor:
        return DIANA.layer_latency_torch(A, _diana_counts(torch.softmax(alpha, dim=0)))

    before = cost()
    before.backward()
    with torch.no_grad():
        alpha -= 1e-4 * alpha.grad
    assert cost().item() < before.item()


def test_smooth_max_tends_to_the_hard_max_as_tau_falls() -> None:
    t = torch.tensor([3.0, 5.0, 4.0], dtype=torch.float64)
    errors = [(5.0 - smooth_max(t, tau).item()) for tau in (10.0, 1.0, 0.1, 0.01)]
    assert all(a > b for a, b in zip(errors, errors[1:]))
    assert errors[-1] < 1e-12
    assert smooth_max(t, 1e9).item() == pytest.approx(4.0)  # a huge τ gives the mean


def test_default_temperatures() -> None:
    """DIANA's τ = 1 is a hard max at cycle scale; Darkside's τ = 1e7 is close to the mean (R5)."""
    counts = {"digital": torch.tensor(8.0), "analog": torch.tensor(8.0)}
    assert DIANA.layer_latency_torch(A, counts).item() == 12_288
    layer = LayerGeometry.conv("L", 128, 128, 3, 8)
    counts = {"cluster": torch.tensor(64.0), "dwe": torch.tensor(64.0)}
    mean = (268_224 + 1_348) / 2
    assert DARKSIDE.layer_latency_torch(layer, counts).item() == pytest.approx(mean, rel=0.02)
