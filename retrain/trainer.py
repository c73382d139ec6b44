"""Three-phase training (method.md §4): warm-up, search (task loss + λ·cost), final fine-tuning.

Deterministic and resumable: batch order and augmentation come from a generator seeded by (seed,
global epoch), and each epoch ends with an atomic checkpoint holding every state that influences the
next one, so `--resume` reaches the same result as an uninterrupted run. A NaN or Inf loss stops with
TrainingError (exit 2) and leaves the last good checkpoint in place.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from odimo.ir.assignment import Assignment
from odimo.ir.errors import BadCheckpointError, NonFiniteLossError
from odimo.retrain import checkpoint as checkpoints
from odimo.retrain.augment import augment
from odimo.retrain.bridge import OnnxModule
from odimo.retrain.calibrate import calibrate
from odimo.retrain.data import TrainValSplit
from odimo.retrain.distill import Distiller, task_loss
from odimo.retrain.optimizers import PHASES, Stepper, build_optimizers
from odimo.retrain.settings import SearchSettings
from odimo.retrain.supernet import Supernet
from odimo.targets.refine import Refinement, refine
from odimo.targets.settle import LayerChoice, layer_costs, settle

# Schedules run per step, on the fraction t/S of the phase's steps, so a one-epoch search anneals as
# fully as a 200-epoch one: T falls from 1 to FINAL_TEMPERATURE, and the final phase's learning rates
# follow a cosine to 0 (fine-tuning in a few hundred steps needs the full rate early, none at the end).
FINAL_TEMPERATURE = 0.05
# With a cost target, log λ moves by this gain times the relative miss (cost / target − 1) per step:
# λ can change by e^±10 over a 400-step search, and a 10 % miss moves it by 0.5 % a step.
TARGET_GAIN = 0.05
TARGET_RANGE = 1e4  # λ stays within [λ0 / 1e4, λ0 · 1e4]
TARGET_START = 0.25  # with a target, λ starts gentle and rises while the mapping is too costly
CROP_PAD = 4  # augmentation: random crop with 4 pixels of padding, horizontal flip
REFINE_IMAGES = 1024  # held-out images on which the discrete refinement compares mappings (targets/refine.py)


@dataclass
class TrainState:
    """Everything that carries from one epoch to the next (checkpointed)."""

    global_epoch: int = 0
    phase_epoch: dict[str, int] = field(default_factory=lambda: {p: 0 for p in PHASES})
    best_val: float = -1.0
    best_state: dict[str, Any] | None = None
    mapping: dict[str, tuple[str, ...]] | None = None
    notes: list[str] = field(default_factory=list)  # how the mapping was discretized, for the report
    history: list[dict[str, Any]] = field(default_factory=list)
    phase_seconds: dict[str, float] = field(default_factory=lambda: {p: 0.0 for p in PHASES})
    log_lambda_gain: float = 0.0  # the cost target's controller: λ = λ0 · e^gain


@dataclass(frozen=True)
class TrainResult:
    mapping: Assignment
    val_accuracy: float | None  # None when no step was trained (a calibrated given mapping)
    history: list[dict[str, Any]]
    phase_seconds: dict[str, float]
    lam: float  # the full λ at the end of the search (a cost target adapts it)
    notes: tuple[str, ...] = ()  # for the report: what the discretization did


def train(
    supernet: Supernet,
    data: TrainValSplit,
    config: SearchSettings,
    fixed_mapping: Assignment | None = None,
    reference: OnnxModule | None = None,
) -> TrainResult:
    """Run the phases `config` asks for (only the final one to fine-tune a `fixed_mapping`); returns
    the discrete mapping the final phase used."""
    # Tiny gradients turn denormal late in an epoch and CPU convs slow down ~7x: flush them while
    # training, and give the process its IEEE behaviour back afterwards.
    torch.set_flush_denormal(True)
    try:
        return _train(supernet, data, config, fixed_mapping, reference)
    finally:
        torch.set_flush_denormal(False)


def _train(
    supernet: Supernet,
    data: TrainValSplit,
    config: SearchSettings,
    fixed_mapping: Assignment | None,
    reference: OnnxModule | None,
) -> TrainResult:
    """`reference`, the imported float model, calibrates the quantized layers (before training and
    again after discretization) and, with `config.distill`, teaches every phase."""
    device = torch.device(config.device)
    supernet.to(device)
    if device.type == "cpu":
        supernet.to(memory_format=torch.channels_last)
    if reference is not None:
        reference.to(device).eval()
        if device.type == "cpu":
            reference.to(memory_format=torch.channels_last)
    teacher = reference if config.distill else None
    images = _calibration_images(data, config, device)
    state = TrainState()
    warmup, search, final = config.epochs
    if fixed_mapping is not None:
        warmup = search = 0
    per_epoch = steps_per_epoch(len(data.y_train), config)
    steps = {"warmup": warmup * per_epoch, "search": search * per_epoch, "final": final * per_epoch}
    optimizers = build_optimizers(supernet, steps)
    checkpoint = config.checkpoint_dir / "last.pt" if config.checkpoint_dir else None
    made_by = checkpoints.identity(config, supernet.plan.target.name, fixed_mapping)
    if config.resume and checkpoint is not None and checkpoint.exists():
        state = _load_checkpoint(checkpoint, supernet, optimizers, made_by)
    elif fixed_mapping is not None:
        state.mapping = dict(fixed_mapping.layers)
        supernet.fix_mapping(fixed_mapping)
        _calibrate(supernet, reference, images, "current", substitutes_too=True)
    else:
        _calibrate(supernet, reference, images, "each")
        if config.target_ratio is not None:
            state.log_lambda_gain = math.log(TARGET_START)
    plan = [("warmup", warmup), ("search", search), ("final", final)]
    for phase, count in plan:
        if phase == "final" and state.mapping is None:
            _discretize(supernet, state, config, search > 0, data, teacher, device)
            supernet.fix_mapping(Assignment(supernet.plan.target.name, state.mapping))
            _calibrate(supernet, reference, images, "current")
        if phase == "final":
            supernet.fix_mapping(Assignment(supernet.plan.target.name, state.mapping))
        while state.phase_epoch[phase] < count:
            started = time.perf_counter()
            schedule = Schedule(phase, count * per_epoch, state.phase_epoch[phase] * per_epoch)
            record = _run_epoch(supernet, data, config, optimizers[phase], schedule, state, device, teacher)
            state.phase_seconds[phase] += time.perf_counter() - started
            _after_epoch(supernet, state, phase, record)
            if checkpoint is not None:
                _save_checkpoint(checkpoint, supernet, optimizers, state, made_by)
    if state.mapping is None:
        _discretize(supernet, state, config, search > 0, data, teacher, device)
        supernet.fix_mapping(Assignment(supernet.plan.target.name, state.mapping))
        _calibrate(supernet, reference, images, "current")
    val = _final_val(supernet, data, config, state, device)
    lam = config.lam * math.exp(state.log_lambda_gain)
    return TrainResult(
        Assignment(supernet.plan.target.name, state.mapping),
        val,
        state.history,
        state.phase_seconds,
        lam,
        tuple(state.notes),
    )


def _final_val(
    supernet: Supernet, data: TrainValSplit, config: SearchSettings, state: TrainState, device: torch.device
) -> float | None:
    """The trained mapping's validation accuracy: the last epoch's when it was a final-phase epoch
    (nothing has changed since it was measured), None when no step was trained."""
    if not any(state.phase_epoch[p] for p in PHASES):
        return None
    last = state.history[-1] if state.history else None
    if last is not None and last["phase"] == "final":
        return last["val_acc"]
    return evaluate(supernet, data.x_val, data.y_val, config.batch_size, device)


def _calibration_images(data: TrainValSplit, config: SearchSettings, device: torch.device) -> torch.Tensor:
    """A seeded sample of the training images, the same on every run and on resume."""
    pick = torch.randperm(len(data.y_train), generator=torch.Generator().manual_seed(config.seed))
    return torch.from_numpy(data.x_train[pick[: config.calibration_images].numpy()]).to(device)


def _calibrate(
    supernet: Supernet,
    reference: OnnxModule | None,
    images: torch.Tensor,
    assignment: str,
    substitutes_too: bool | None = None,
) -> None:
    if reference is not None and len(images):
        calibrate(supernet, reference, images, assignment, substitutes_too)


def evaluate(
    model: torch.nn.Module, x: np.ndarray, y: np.ndarray, batch_size: int = 256, device: torch.device | str = "cpu"
) -> float:
    """Top-1 accuracy in eval mode."""
    if len(y) == 0:
        return float("nan")
    model.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(y), batch_size):
            xb = torch.from_numpy(x[start : start + batch_size]).to(device)
            correct += int((model(xb).argmax(1).cpu().numpy() == y[start : start + batch_size]).sum())
    return correct / len(y)


# --- one epoch -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Schedule:
    """Where an epoch sits in its phase: `total` steps in the phase, `done` before this epoch."""

    phase: str
    total: int
    done: int

    def fraction(self, k: int) -> float:
        """t/S of the k-th step of this epoch."""
        return (self.done + k) / max(self.total, 1)


def steps_per_epoch(samples: int, config: SearchSettings) -> int:
    batches = math.ceil(samples / config.batch_size)
    return min(batches, config.limit_batches) if config.limit_batches else batches


def _run_epoch(
    supernet: Supernet,
    data: TrainValSplit,
    config: SearchSettings,
    optimizer: Stepper,
    schedule: Schedule,
    state: TrainState,
    device: torch.device,
    teacher: torch.nn.Module | None,
) -> dict[str, Any]:
    phase = schedule.phase
    generator = torch.Generator().manual_seed(config.seed * 100_003 + state.global_epoch)
    order = torch.randperm(len(data.y_train), generator=generator).numpy()
    batches = [order[k : k + config.batch_size] for k in range(0, len(order), config.batch_size)]
    if config.limit_batches:
        batches = batches[: config.limit_batches]
    supernet.train()
    distiller = Distiller(supernet, teacher)
    totals = {"loss": 0.0, "correct": 0, "seen": 0, "cost": 0.0}
    corner, fixed = supernet.corner_costs(config.objective)
    label = f"{phase} {state.phase_epoch[phase] + 1}"
    bar = tqdm(batches, desc=label, leave=False, disable=not config.progress, unit="batch")
    lam = 0.0
    for k, rows in enumerate(bar):
        t = schedule.fraction(k)
        lam = _lambda_at(supernet, config, phase, t) * math.exp(state.log_lambda_gain)
        if phase == "search":
            supernet.set_temperature(FINAL_TEMPERATURE**t)
        if phase == "final":
            for group in optimizer.param_groups:
                group["lr"] = group.setdefault("initial_lr", group["lr"]) * 0.5 * (1 + math.cos(math.pi * t))
        xb = augment(torch.from_numpy(data.x_train[rows]), CROP_PAD, generator).to(device)
        yb = torch.from_numpy(data.y_train[rows]).to(device)
        if phase == "warmup":
            supernet.draw_warmup(generator)
        logits = distiller.forward(xb)
        task = distiller.loss(logits, yb, xb)
        cost = (
            supernet.cost(config.objective)
            if phase == "search" and supernet.searchable
            else torch.zeros((), device=device)
        )
        loss = task + lam * _cost_term(cost, corner, fixed, config.target_ratio)
        if not torch.isfinite(loss):
            where = f"phase {phase}, epoch {state.phase_epoch[phase] + 1}, batch {k + 1}"
            kept = f"; the last good checkpoint is {config.checkpoint_dir / 'last.pt'}" if config.checkpoint_dir else ""
            raise NonFiniteLossError(
                f"the training loss became {float(loss.detach())}{kept}",
                where,
                "lower --lambda or the learning rate, check the data for NaN, then rerun with --resume",
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if phase == "search" and config.target_ratio is not None:
            miss = (fixed + float(cost.detach())) * config.target_ratio / corner - 1
            bound = math.log(TARGET_RANGE)
            state.log_lambda_gain = min(max(state.log_lambda_gain + TARGET_GAIN * miss, -bound), bound)
        totals["loss"] += float(task.detach()) * len(rows)
        totals["correct"] += int((logits.argmax(1) == yb).sum())
        totals["seen"] += len(rows)
        totals["cost"] = float(cost.detach())
        bar.set_postfix(
            loss=f"{totals['loss'] / totals['seen']:.3f}",
            acc=f"{totals['correct'] / totals['seen']:.3f}",
            cycles=f"{totals['cost']:,.0f}",
        )
    supernet.end_warmup()
    val = evaluate(supernet, data.x_val, data.y_val, 256, device)
    return {
        "phase": phase,
        "epoch": state.phase_epoch[phase] + 1,
        "loss": totals["loss"] / max(totals["seen"], 1),
        "train_acc": totals["correct"] / max(totals["seen"], 1),
        "val_acc": val,
        "lambda": lam,
        "cost": totals["cost"],
    }


def _after_epoch(supernet: Supernet, state: TrainState, phase: str, record: dict[str, Any]) -> None:
    state.phase_epoch[phase] += 1
    state.global_epoch += 1
    record["mapping_split"] = (
        {name: _split_summary(cus) for name, cus in supernet.mapping().layers.items()} if phase == "search" else None
    )
    state.history.append(record)
    if phase == "search" and record["val_acc"] > state.best_val:
        state.best_val = record["val_acc"]
        state.best_state = copy.deepcopy(supernet.state_dict())


def _discretize(
    supernet: Supernet,
    state: TrainState,
    config: SearchSettings,
    searched: bool,
    data: TrainValSplit,
    teacher: torch.nn.Module | None,
    device: torch.device,
) -> None:
    """Restore the best search epoch (validation accuracy, as the reference) and take its argmax,
    refined on the exact objective (targets/refine.py: the relaxed cost cannot see that a layer's
    last channel on the accurate CU costs a whole tile).

    With a cost target the last epoch is kept instead (the most accurate epoch is the least
    compressed one, the opposite of what the target asks), and its argmax is settled at the
    target: whole channels move until the mapping is just within it (targets/settle.py)."""
    if config.target_ratio is None and searched and state.best_state is not None:
        supernet.load_state_dict(state.best_state)
    state.mapping = dict(supernet.mapping().layers)
    if not searched or not supernet.searchable:
        return
    if config.target_ratio is not None:
        state.mapping |= settled_mapping(supernet, state.mapping, config.objective, config.target_ratio)
    elif config.refine and len(data.y_val):
        state.mapping |= _refined_mapping(supernet, state, config, data, teacher, device)


def _layer_choices(supernet: Supernet, mapping: dict[str, tuple[str, ...]], objective: str) -> list[LayerChoice]:
    """Each searchable layer's argmax count, preference order and cost staircase."""
    target = supernet.plan.target
    cost = target.layer_latency if objective == "latency" else target.layer_energy
    choices = []
    for name in supernet.searchable:
        module = supernet.mixed(name)
        cus = module.cus
        choices.append(
            LayerChoice(
                name,
                cus,
                module.preference().cpu().numpy(),
                layer_costs(supernet.plan.layer(name).layer.geometry, cus, cost),
                mapping[name].count(cus[0]),
            )
        )
    return choices


def settled_mapping(
    supernet: Supernet, mapping: dict[str, tuple[str, ...]], objective: str, ratio: float
) -> dict[str, tuple[str, ...]]:
    """The searchable layers' assignment moved, channel by channel in the search's own preference
    order, to cost at most 1/ratio of the accurate corner."""
    choices = _layer_choices(supernet, mapping, objective)
    corner, fixed = supernet.corner_costs(objective)
    counts = settle(choices, corner / ratio - fixed)
    return {choice.name: choice.assignment(counts[choice.name]) for choice in choices}


def _refined_mapping(
    supernet: Supernet,
    state: TrainState,
    config: SearchSettings,
    data: TrainValSplit,
    teacher: torch.nn.Module | None,
    device: torch.device,
) -> dict[str, tuple[str, ...]]:
    """The argmax refined on the search's own objective, task loss measured on held-out images."""
    choices = _layer_choices(supernet, state.mapping, config.objective)
    by_name = {c.name: c for c in choices}
    x = torch.from_numpy(data.x_val[:REFINE_IMAGES]).to(device)
    y = torch.from_numpy(data.y_val[:REFINE_IMAGES]).to(device)
    size = config.batch_size
    batches = [(x[k : k + size], y[k : k + size]) for k in range(0, len(y), size)]
    supernet.eval()
    with torch.no_grad():
        taught = [None if teacher is None else teacher(xb) for xb, _ in batches]

        def loss(counts: dict[str, int]) -> float:
            layers = {name: by_name[name].assignment(n) for name, n in counts.items()}
            supernet.fix_mapping(Assignment(supernet.plan.target.name, layers))
            total = sum(float(task_loss(supernet(xb), yb, t)) * len(yb) for (xb, yb), t in zip(batches, taught))
            return total / len(y)

        corner, _ = supernet.corner_costs(config.objective)
        result = refine(choices, loss, config.lam, corner)
    state.notes.append(_refinement_note(result, config.objective))
    return {name: by_name[name].assignment(n) for name, n in result.counts.items()}


def _refinement_note(result: Refinement, objective: str) -> str:
    unit = "cycles" if objective == "latency" else "mW·cycles"
    if not result.moved:
        return f"discrete refinement: the argmax kept ({result.cost_before:,.0f} {unit})"
    moves = ", ".join(f"{name} {a}->{b}" for name, (a, b) in result.moved.items())
    return (
        f"discrete refinement: {len(result.moved)} layers changed their count on the accurate CU ({moves}); "
        f"{result.cost_before:,.0f} -> {result.cost_after:,.0f} {unit}, held-out task loss "
        f"{result.loss_before:.4f} -> {result.loss_after:.4f}"
    )


def _split_summary(cus: tuple[str, ...]) -> dict[str, int]:
    return {cu: cus.count(cu) for cu in dict.fromkeys(cus)}


def _cost_term(cost: torch.Tensor, corner: float, fixed: float, target_ratio: float | None) -> torch.Tensor:
    """The cost relative to the accurate corner's; with a target, only its excess over the target (a
    hinge: once the mapping is cheap enough, the task loss alone pulls channels back to accuracy, so
    the search settles at the target instead of overshooting it)."""
    if target_ratio is None:
        return cost / corner
    return torch.relu((fixed + cost) * target_ratio / corner - 1)


def _lambda_at(supernet: Supernet, config: SearchSettings, phase: str, t: float) -> float:
    """λ at fraction t of the phase: 0 outside the search, else the target's schedule (full, or a
    linear ramp to full at `full_at` of the search)."""
    if phase != "search":
        return 0.0
    ramp = supernet.spec.lambda_ramp
    if ramp is None:
        return config.lam
    start = config.lam * ramp.start
    return min(start + t * (config.lam - start) / ramp.full_at, config.lam)


# --- checkpoints ---------------------------------------------------------------------------------


def _save_checkpoint(
    path: Path, supernet: Supernet, optimizers: dict[str, Stepper], state: TrainState, made_by: dict[str, Any]
) -> None:
    optimizer_states = {k: o.state_dict() for k, o in optimizers.items()}
    checkpoints.save(path, made_by, supernet.state_dict(), optimizer_states, dict(state.__dict__))


def _load_checkpoint(
    path: Path, supernet: Supernet, optimizers: dict[str, Stepper], made_by: dict[str, Any]
) -> TrainState:
    """Restore the run `path` holds into `supernet` and `optimizers` (retrain/checkpoint.py checks
    that it is safe and belongs to this run; here, that it fits this supernet)."""
    saved = checkpoints.load(path, made_by)
    try:
        state = TrainState(**saved.state, best_state=saved.best_state)
        if state.mapping is not None:
            state.mapping = {name: tuple(cus) for name, cus in state.mapping.items()}
            # A checkpoint of the final phase holds the one-hot `fixed` buffers: give them their shape.
            supernet.fix_mapping(Assignment(supernet.plan.target.name, state.mapping))
        supernet.load_state_dict(saved.model)
        for key, optimizer in optimizers.items():
            optimizer.load_state_dict(saved.optimizers[key])
        torch.set_rng_state(saved.torch_rng)
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BadCheckpointError(
            f"cannot resume: the checkpoint does not fit this model ({reason})",
            str(path),
            "delete the checkpoint folder to start over",
        ) from None
    return state
