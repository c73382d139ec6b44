"""Search modules, supernet cost, trainer and quantizers (method.md §1-6) on tiny graphs and data.

The task is learnable in a few dozen steps: the class is the colour channel that is brightest
(3 classes on the builders' 4-output heads), which survives the trainer's crop and flip. Images
are 8x8 (16x16 where a layer geometry needs it), a few hundred of them.

The spec's optimisers fine-tune a trained network: from the builders' random weights they barely
move the loss in a few epochs (SGD at lr 1e-3 on DIANA's weights), and Adam at 1e-3 needs ~500
steps to move a half-initialised prefix mask by one channel (α from 1 to 0.5). Where a test needs
learning to show within seconds it scales every learning rate of the trainer's optimisers by
FAST_LR (`fast_lr`).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from builders import GraphBuilder, conv_bn_relu, residual_add
from hypothesis import given, settings
from hypothesis import strategies as st

from odimo.ir.errors import TrainingError
from odimo.ir.records import ImportedModel, Rounding
from odimo.retrain import distill, trainer
from odimo.retrain.data import TrainValSplit
from odimo.retrain.mixed_layers import FreeChoice, SplitPoint
from odimo.retrain.optimizers import Joint, build_optimizers
from odimo.retrain.quantizers import Int8Pow2Weights, PactActivation, TernaryWeights
from odimo.retrain.settings import SearchSettings
from odimo.retrain.supernet import Supernet
from odimo.retrain.trainer import train
from odimo.targets import get_target
from odimo.targets.costing import cost_table
from odimo.targets.mapping import validate_mapping
from odimo.targets.plan import Policy, TargetPlan, plan_for_target
from odimo.targets.quantization import FLOOR_GUARD, WeightFormat, quantize

Importer = Callable[[onnx.ModelProto, str], ImportedModel]  # the `imported` fixture (conftest.py)
FAST_LR = 30.0
FAST_SGD_CAP = 0.03
NO_PROGRESS = {"progress": False}


# ----------------------------------------------------------------------------------- fixtures


def brightest_channel(n: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Images in [0, 1]: uniform noise up to 0.3, plus 0.7 on the channel named by the label."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = 0.3 * rng.random((n, 3, size, size), dtype=np.float32)
    x[np.arange(n), y] += 0.7
    return x.astype(np.float32), y.astype(np.int64)


def task(n: int = 128, size: int = 8) -> TrainValSplit:
    return TrainValSplit(*brightest_channel(n, size, seed=0), *brightest_channel(32, size, seed=1))


def two_convs_16x16() -> onnx.ModelProto:
    """x (3x16x16) -> conv1 (3->16) -> relu -> conv2 (16->16) -> relu -> gap -> flatten -> fc

    On DIANA conv1 is cheaper on the digital CU and conv2 on the analog one (see the test).
    """
    g = GraphBuilder(size=16)
    y = g.relu(g.conv("x", 16, "conv1"), "relu1")
    y = g.relu(g.conv(y, 16, "conv2"), "relu2")
    return g.build(g.gemm(g.flatten(g.gap(y, "gap"), "flatten"), 4, "fc"))


def supernet_for(imported: Importer, model: onnx.ModelProto, name: str, target: str) -> Supernet:
    source = imported(model, name)
    return Supernet(source.model, plan_for_target(source.model, get_target(target)))


@pytest.fixture
def fast_lr(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every learning rate of the trainer's optimisers times FAST_LR (see the module docstring), SGD
    rates at most FAST_SGD_CAP."""
    make = trainer.build_optimizers

    def faster(supernet: Supernet, steps: dict[str, int]) -> dict[str, Joint]:
        optimizers = make(supernet, steps)
        for optimizer in optimizers.values():
            for group in optimizer.param_groups:
                sgd = "momentum" in group  # SGD above ~0.03 diverges on these untrained nets (Darkside's 1e-2 x 30)
                group["lr"] = min(group["lr"] * FAST_LR, FAST_SGD_CAP) if sgd else group["lr"] * FAST_LR
        return optimizers

    monkeypatch.setattr(trainer, "build_optimizers", faster)


def _is_prefix(cus: tuple[str, ...], order: tuple[str, ...]) -> bool:
    """Each CU owns one contiguous index range, in CU order."""
    ranks = [order.index(cu) for cu in cus]
    return ranks == sorted(ranks)


def _last_split(history: list[dict], layer: str, cu: str) -> int:
    """Channels of `layer` on `cu` at the end of the last search epoch (before best-epoch selection)."""
    split = [h for h in history if h["phase"] == "search"][-1]["mapping_split"][layer]
    return split.get(cu, 0)


# ------------------------------------------------------------------------------------ training


@pytest.mark.parametrize("target", ["diana", "darkside"])
def test_every_phase_steps_the_supernet_s_own_weights(target: str, imported: Importer) -> None:
    """An optimizer holding copies of the parameters would step tensors that never get a gradient."""
    supernet = supernet_for(imported, residual_add(), "residual_add", target)
    own = {id(p) for p in supernet.parameters()}
    weights = {id(p) for p in supernet.weight_parameters()}
    for phase, optimizer in build_optimizers(supernet, {"search": 10, "final": 10}).items():
        stepped = {id(p) for group in optimizer.param_groups for p in group["params"]}
        assert stepped <= own, phase
        if phase != "warmup" or target == "diana":  # Darkside's warm-up trains only the substitutes
            assert weights <= stepped, phase


@pytest.mark.parametrize("target", ["diana", "darkside"])
def test_one_search_epoch_changes_the_weights(target: str, imported: Importer) -> None:
    supernet = supernet_for(imported, residual_add(), "residual_add", target)
    before = [p.detach().clone() for p in supernet.weight_parameters()]
    train(supernet, task(64), SearchSettings(epochs=(0, 1, 0), batch_size=16, **NO_PROGRESS))
    changed = [not torch.equal(b, p.detach()) for b, p in zip(before, supernet.weight_parameters(), strict=True)]
    assert sum(changed) >= len(changed) // 2, changed


@pytest.mark.parametrize("target", ["diana", "darkside"])
@pytest.mark.usefixtures("fast_lr")
def test_search_loss_falls_over_a_few_epochs(target: str, imported: Importer) -> None:
    supernet = supernet_for(imported, residual_add(), "residual_add", target)
    result = train(supernet, task(256), SearchSettings(epochs=(0, 3, 0), batch_size=16, **NO_PROGRESS))
    losses = [h["loss"] for h in result.history]
    assert losses[-1] < losses[0] - 0.05, losses
    assert all(np.isfinite(losses))


@pytest.mark.parametrize(
    ("target", "graph"),
    [("diana", residual_add), ("diana", conv_bn_relu), ("darkside", residual_add)],
    ids=["diana-residual_add", "diana-conv_bn_relu", "darkside-residual_add"],
)
@pytest.mark.parametrize("objective", ["latency", "energy"])
def test_cost_alone_gives_every_alpha_a_finite_nonzero_gradient(
    target: str, graph: Callable[[], onnx.ModelProto], objective: str, imported: Importer
) -> None:
    supernet = supernet_for(imported, graph(), graph.__name__, target)
    assert supernet.searchable
    supernet.cost(objective).backward()
    for name in supernet.searchable:
        for alpha in supernet.mixed(name).architecture_parameters():
            assert alpha.grad is not None, name
            assert torch.isfinite(alpha.grad).all() and (alpha.grad != 0).all(), (name, alpha.grad)
    assert all(p.grad is None for p in supernet.weight_parameters()), "the cost depends on α only"


def test_large_lambda_moves_diana_channels_to_each_layers_cheaper_cu(imported: Importer, fast_lr: None) -> None:
    supernet = supernet_for(imported, two_convs_16x16(), "two_convs", "diana")
    target, plan = supernet.plan.target, supernet.plan
    cheaper = {}
    for name in ("conv1", "conv2"):
        assert plan.layer(name).policy is Policy.FREE
        geometry = plan.layer(name).layer.geometry
        cycles = {cu: target.layer_latency(geometry, {cu: geometry.c_out}) for cu in target.cus}
        cheaper[name] = min(cycles, key=cycles.get)
        assert max(cycles.values()) > 1.3 * min(cycles.values()), cycles  # clearly cheaper
    assert cheaper == {"conv1": "digital", "conv2": "analog"}

    def searched(lam: float) -> tuple[dict[str, int], float]:
        torch.manual_seed(0)
        net = supernet_for(imported, two_convs_16x16(), f"two_convs_{lam}", "diana")
        result = train(net, task(64, size=16), SearchSettings(epochs=(0, 1, 0), lam=lam, batch_size=16, **NO_PROGRESS))
        full = validate_mapping(result.mapping, plan.analysis.geometries, target)
        exact = cost_table(plan.analysis.geometries, target, full).total.cycles
        return {name: _last_split(result.history, name, cu) for name, cu in cheaper.items()}, exact

    (_, plain_cycles), (pushed, pushed_cycles) = searched(0.0), searched(5.0)
    assert pushed["conv2"] == 16 and pushed_cycles < plain_cycles, (pushed, pushed_cycles, plain_cycles)


def test_large_lambda_moves_darkside_channels_to_the_dwe(imported: Importer, fast_lr: None) -> None:
    supernet = supernet_for(imported, residual_add(), "residual_add", "darkside")
    target, plan = supernet.plan.target, supernet.plan
    for name in supernet.searchable:
        geometry = plan.layer(name).layer.geometry
        assert target.layer_latency(geometry, {"dwe": 8}) * 5 < target.layer_latency(geometry, {"cluster": 8})

    def dwe_channels(lam: float) -> int:
        torch.manual_seed(0)
        net = supernet_for(imported, residual_add(), f"residual_add_{lam}", "darkside")
        result = train(net, task(128), SearchSettings(epochs=(0, 2, 0), lam=lam, batch_size=8, **NO_PROGRESS))
        return sum(_last_split(result.history, name, "dwe") for name in net.searchable)

    plain, pushed = dwe_channels(0.0), dwe_channels(5.0)
    assert pushed > plain and pushed >= 8, (plain, pushed)  # the search starts with every channel on the cluster


@given(st.integers(1, 64), st.floats(-0.2, 1.2))
@settings(max_examples=60, deadline=None)
def test_a_split_point_is_a_prefix_of_ones(channels: int, u: float) -> None:
    split = SplitPoint(channels)
    with torch.no_grad():
        split.u.fill_(u)
        b = split().detach().numpy()
    ones = int(b.sum())
    assert set(b.tolist()) <= {0.0, 1.0}
    assert b[:ones].all() and not b[ones:].any()


def _steps_to_move(split: SplitPoint, sign: float, channels: int, lr: float) -> int:
    """Adam steps of a constant push on the hard count until it moved by `channels`."""
    optimizer = torch.optim.Adam(split.parameters(), lr=lr)
    start = int(split().detach().sum())
    for step in range(1, 10_000):
        optimizer.zero_grad()
        (sign * split().sum()).backward()
        optimizer.step()
        if abs(int(split().detach().sum()) - start) >= channels:
            return step
    raise AssertionError("the count never moved")


def test_a_split_count_moves_both_ways_equally_fast_under_a_constant_push() -> None:
    """The cumulative prefix mask it replaces took 501 steps to give up a channel and 15 to take one."""
    down, up = SplitPoint(64), SplitPoint(64)
    with torch.no_grad():
        up.u.fill_(0.5)
        down.u.fill_(0.5)
    shrink, grow = _steps_to_move(down, +1.0, 8, 1e-2), _steps_to_move(up, -1.0, 8, 1e-2)
    assert max(shrink, grow) <= 1.5 * min(shrink, grow) and max(shrink, grow) < 100, (shrink, grow)


def test_a_free_choice_is_hard_forward_and_soft_backward() -> None:
    choice = FreeChoice(6)
    share = choice()
    assert torch.equal(share.detach(), torch.ones(6))  # step 0: every channel on the first CU
    share.sum().backward()
    assert choice.alpha.grad is not None and bool((choice.alpha.grad[0] > 0).all())


@pytest.mark.parametrize(
    ("target", "graph"),
    [("diana", residual_add), ("darkside", residual_add), ("darkside", conv_bn_relu)],
    ids=["diana-residual_add", "darkside-residual_add", "darkside-conv_bn_relu"],
)
def test_contiguous_layers_give_each_cu_one_range_in_cu_order(
    target: str, graph: Callable[[], onnx.ModelProto], imported: Importer, fast_lr: None
) -> None:
    supernet = supernet_for(imported, graph(), graph.__name__, target)
    plan: TargetPlan = supernet.plan
    contiguous = [p.name for p in plan.searchable if p.policy is Policy.CONTIGUOUS]
    assert contiguous, "the graph must have contiguous layers"
    result = train(supernet, task(64), SearchSettings(epochs=(0, 2, 0), lam=1e-2, batch_size=8, **NO_PROGRESS))
    for name in contiguous:
        assert _is_prefix(result.mapping.layers[name], plan.target.cus), (name, result.mapping.layers[name])
    untrained = supernet_for(imported, graph(), f"{graph.__name__}_random", target)
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):  # and for any α the search could reach
        for name in contiguous:
            (alpha,) = untrained.mixed(name).architecture_parameters()
            with torch.no_grad():
                alpha.copy_(torch.randn(alpha.shape, generator=generator))
        for name in contiguous:
            assert _is_prefix(untrained.mapping().layers[name], plan.target.cus), name


# --------------------------------------------------------------------------------- checkpoints


class Interrupted(Exception):
    """Stands for a kill in the middle of an epoch."""


@pytest.mark.parametrize(
    ("target", "epochs", "stop_in_epoch"),
    [("diana", (0, 2, 0), 2), ("diana", (0, 1, 1), 2), ("diana", (0, 1, 2), 3), ("darkside", (1, 1, 0), 2)],
    ids=["diana-search-search", "diana-search-final", "diana-final-final", "darkside-warmup-search"],
)
def test_resume_reaches_the_uninterrupted_state(
    target: str,
    epochs: tuple[int, int, int],
    stop_in_epoch: int,
    imported: Importer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    source = imported(residual_add(), "residual_add")
    plan = plan_for_target(source.model, get_target(target))
    data = task(64)
    config = SearchSettings(epochs=epochs, lam=1e-4, batch_size=16, checkpoint_dir=tmp_path / "straight", **NO_PROGRESS)
    torch.manual_seed(0)
    straight = Supernet(source.model, plan)
    expected = train(straight, data, config)

    interrupted = dataclasses.replace(config, checkpoint_dir=tmp_path / "resumed")
    run_epoch, calls = trainer._run_epoch, []

    def run_until_killed(*args, **kwargs):
        calls.append(1)
        if len(calls) == stop_in_epoch:
            raise Interrupted
        return run_epoch(*args, **kwargs)

    monkeypatch.setattr(trainer, "_run_epoch", run_until_killed)
    torch.manual_seed(0)
    with pytest.raises(Interrupted):
        train(Supernet(source.model, plan), data, interrupted)
    monkeypatch.setattr(trainer, "_run_epoch", run_epoch)

    torch.manual_seed(1)  # a fresh process: other initial weights, all overwritten by the checkpoint
    resumed = Supernet(source.model, plan)
    got = train(resumed, data, dataclasses.replace(interrupted, resume=True))

    assert got.mapping == expected.mapping
    assert got.history == expected.history
    want, have = straight.state_dict(), resumed.state_dict()
    assert want.keys() == have.keys()
    assert [k for k in want if not torch.equal(want[k], have[k])] == []


def test_nan_loss_stops_with_e330_naming_where_and_keeps_the_last_checkpoint(
    imported: Importer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    supernet = supernet_for(imported, residual_add(), "residual_add", "diana")
    cross_entropy, calls = torch.nn.functional.cross_entropy, []

    def nan_in_epoch_2_batch_2(*args, **kwargs):
        calls.append(1)
        loss = cross_entropy(*args, **kwargs)
        return loss * float("nan") if len(calls) == 4 else loss

    monkeypatch.setattr(distill.F, "cross_entropy", nan_in_epoch_2_batch_2)
    config = SearchSettings(epochs=(0, 2, 0), batch_size=16, limit_batches=2, checkpoint_dir=tmp_path, **NO_PROGRESS)
    with pytest.raises(TrainingError) as caught:
        train(supernet, task(64), config)
    error = caught.value
    assert error.code == "E330" and error.exit_code == 2
    assert error.where == "phase search, epoch 2, batch 2"
    assert str(tmp_path / "last.pt") in error.what
    kept = torch.load(tmp_path / "last.pt", weights_only=True)
    state = json.loads(kept["state"])
    assert state["global_epoch"] == 1 and state["phase_epoch"]["search"] == 1
    assert all(torch.isfinite(v).all() for v in kept["model"].values() if v.is_floating_point())


def test_nan_in_the_data_stops_in_the_first_batch_that_holds_it(imported: Importer) -> None:
    supernet = supernet_for(imported, residual_add(), "residual_add", "darkside")
    data = task(64)
    data.x_train[:, :, 2:6, 2:6] = np.nan  # the centre: in every random crop
    with pytest.raises(TrainingError, match="non-finite-loss") as caught:
        train(supernet, data, SearchSettings(epochs=(1, 1, 0), batch_size=16, **NO_PROGRESS))
    assert caught.value.where == "phase warmup, epoch 1, batch 1"


# ---------------------------------------------------------------------------------- quantizers


@pytest.mark.parametrize("rounding", list(Rounding))
@pytest.mark.parametrize(("signed", "clip", "levels"), [(False, 6.0, 127), (True, 6.0, 63), (False, 1.0, 127)])
def test_pact_output_is_on_the_pow2_grid_within_its_clip(
    signed: bool, clip: float, levels: int, rounding: Rounding
) -> None:
    act = PactActivation(clip, signed, rounding)
    scale = float(act.scale())
    assert scale == 2.0 ** np.floor(np.log2(levels / clip))
    assert act.effective_clip() == levels / scale
    x = torch.linspace(-12, 12, 4801)
    with torch.no_grad():
        y = act(x)
    steps = y * scale
    assert torch.equal(steps, torch.round(steps))
    assert float(steps.min()) == (-levels if signed else 0) and float(steps.max()) == levels
    low = -act.effective_clip() if signed else 0.0
    scaled = torch.clamp(x, low, act.effective_clip()) * scale
    codes = torch.round(scaled) if rounding is Rounding.HALF_EVEN else torch.floor(scaled + FLOOR_GUARD)
    assert torch.equal(y, codes / scale)


@given(st.floats(0.01, 100.0), st.booleans())
@settings(max_examples=50, deadline=None)
def test_pact_effective_clip_is_the_first_pow2_step_at_or_above_the_clip(clip: float, signed: bool) -> None:
    act = PactActivation(clip, signed)
    assert clip <= act.effective_clip() * (1 + 1e-6) < 2 * clip


@pytest.mark.parametrize("signed", [False, True])
def test_pact_gradients_are_masked_to_the_range_and_summed_above_into_the_clip(signed: bool) -> None:
    act = PactActivation(6.0, signed)
    clip = act.effective_clip()
    x = torch.tensor([-9.0, -clip - 0.5, -3.0, -0.5, 0.3, 2.0, clip - 0.5, clip + 0.5, 11.0], requires_grad=True)
    upstream = torch.arange(1.0, 10.0)
    act(x).backward(upstream)
    low = -clip if signed else 0.0
    inside = (x > low) & (x < clip)
    assert torch.equal(x.grad, upstream * inside)
    above = float(upstream[x.detach() >= clip].sum())
    below = float(upstream[x.detach() <= -clip].sum()) if signed else 0.0
    assert float(act.clip.grad) == above - below


def _weights(seed: int, shape: tuple[int, ...] = (8, 6, 3, 3), sd: float = 0.2) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * sd


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_int8_and_ternary_weights_take_at_most_255_and_3_values_per_channel(seed: int) -> None:
    w = _weights(seed, (8, 64, 3, 3))
    q8, qt = Int8Pow2Weights(w), TernaryWeights(w)
    with torch.no_grad():
        w8, wt = q8(w), qt(w)
    step = float(q8.pow2_scale().detach()) / 127
    assert torch.equal(torch.round(w8 / step), w8 / step) and float((w8 / step).abs().max()) <= 127
    scales = qt.scales().detach()
    for c in range(w.shape[0]):
        assert len(torch.unique(w8[c])) <= 255
        values = set(torch.unique(wt[c]).tolist())
        assert len(values) <= 3 and values <= {-float(scales[c]), 0.0, float(scales[c])}


@given(st.integers(0, 2**31 - 1), st.floats(1e-3, 10.0), st.floats(0.05, 8.0))
@settings(max_examples=40, deadline=None)
def test_torch_fake_quant_weights_equal_numpy_quantize_within_one_ulp(
    seed: int, sd: float, trained_scale: float
) -> None:
    w = _weights(seed, sd=sd)
    q8 = Int8Pow2Weights(w)
    with torch.no_grad():
        q8.scale.fill_(trained_scale)  # a learned, non-pow2 value: the forward uses its pow2 floor
        s = float(q8.pow2_scale())
        from_torch = q8(w).numpy()
    from_numpy = quantize(w.numpy(), WeightFormat.INT8_POW2, scale=s).dequantize()
    np.testing.assert_array_max_ulp(from_torch, from_numpy, maxulp=1)

    qt = TernaryWeights(w)
    with torch.no_grad():
        qt.log_scale.add_(torch.linspace(-0.5, 0.5, w.shape[0]))
        from_torch = qt(w).numpy()
        scales = qt.scales().numpy()
    from_numpy = quantize(w.numpy(), WeightFormat.TERNARY, scale=scales).dequantize()
    np.testing.assert_array_max_ulp(from_torch, from_numpy, maxulp=1)
