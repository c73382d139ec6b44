"""Benchmark: cost of the search phase over plain fine-tuning (the paper's Table II, on CPU).

For ResNet-20 on DIANA and the Darkside seed network on Darkside, one epoch of N batches of B
synthetic 3x32x32 images, measured in one run:
- search: the Supernet (mixed layers, DIANA quantizers), loss CE + λ·cost, the trainer's search
  optimizer (`build_optimizers(...)["search"]`);
- plain fine-tune: the bridged OnnxModule without mixed layers, loss CE, the same weight
  optimizer as the target's final phase (SGD, momentum 0.9, wd 1e-4: DIANA lr 1e-3, Darkside 1e-2);
- baseline fine-tune (the paper's Table II reference, "the most demanding baseline"): the Supernet
  with the All-8bit / All-conv mapping fixed, as `--mapping all-8bit|all-conv` trains it, with the
  trainer's final-phase optimizer. On DIANA that is quantization-aware training (PACT, int8
  weights); on Darkside the conv alone.
Both run the trainer's CPU memory format (channels_last) on the same pre-drawn batches; data
augmentation and validation, identical in both, are left out so they do not dilute the ratio.

Time: both modules live in one process and take one step each in turn (after two untimed steps),
so other jobs on a shared machine slow both alike; an epoch is N x the median step time.
Memory: each configuration alone in its own process. torch has no CPU memory statistics, so it is
the peak RSS: once torch, the ONNX model and the batches are loaded, the kernel's high-water mark is
reset (/proc/self/clear_refs), so the peak (VmHWM) covers building the module and training only
(the fused PACT kernels are compiled before the reset, and glibc's mmap threshold is fixed so that
freed activations leave the RSS);
reported whole and as the footprint above the RSS at the reset (the analogue of the paper's GPU
memory, which holds no interpreter or library).

Not a test: `python bench/search_overhead.py [--batches 20] [--batch-size 128] [--threads 1] [--profile]`
(--profile: torch.profiler's top ops of three search steps, on stderr).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PAPER_TIME = (1.42, 2.48)
PAPER_MEMORY = (1.03, 1.31)
GOALS = {"diana": 1.15, "darkside": 1.6}
MEMORY_GOAL = 1.10
EPOCH_STEPS = 422  # one Fashion-MNIST epoch at batch 128: sizes the budget-dependent rates
LAMBDA = {"diana": 1e-8, "darkside": 5e-7}  # from the reference λ grids; the value does not change the work
CASES = (("resnet20", "diana"), ("darkside_seed", "darkside"))
BASELINE = {"diana": "All-8bit", "darkside": "All-conv"}  # the most demanding baseline of each target
MODES = ("plain", "baseline", "search")


def _status_mb(key: str) -> float:
    """VmRSS / VmHWM of this process (Linux /proc/self/status, kB) in MB."""
    match = re.search(rf"^{key}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE)
    assert match, f"no {key} in /proc/self/status"
    return int(match.group(1)) / 1024


def _reset_peak_rss() -> None:
    """Start a new high-water mark (VmHWM) at the current RSS (Linux >= 4.0)."""
    Path("/proc/self/clear_refs").write_text("5")


def _trainer(model, target: str, mode: str):
    """The module and its `step(x, y)` for one configuration (see the module docstring)."""
    import torch
    import torch.nn.functional as F

    from odimo.retrain.bridge import OnnxModule
    from odimo.retrain.optimizers import build_optimizers
    from odimo.retrain.supernet import Supernet
    from odimo.targets import get_target
    from odimo.targets.base import ParamSet
    from odimo.targets.baselines import build_baseline
    from odimo.targets.plan import plan_for_target

    torch.manual_seed(0)
    if mode in ("search", "baseline"):
        plan = plan_for_target(model, get_target(target))
        net = Supernet(model, plan)
        phase = "search" if mode == "search" else "final"
        optimizer = build_optimizers(net, {phase: EPOCH_STEPS})[phase]
        if mode == "baseline":
            net.fix_mapping(build_baseline(BASELINE[target], plan.analysis.geometries, plan.target).mapping)
    else:
        net = OnnxModule(model)
        params = [p for p in net.parameters() if p.requires_grad]
        weights = next(g for g in get_target(target).search_spec.final if g.params is ParamSet.NETWORK)
        optimizer = (
            torch.optim.SGD(params, lr=weights.lr, momentum=weights.momentum, weight_decay=weights.weight_decay)
            if weights.optimizer == "sgd"
            else torch.optim.Adam(params, lr=weights.lr, weight_decay=weights.weight_decay)
        )
    net.to(memory_format=torch.channels_last).train()

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        loss = F.cross_entropy(net(x), y)
        if mode == "search":
            loss = loss + LAMBDA[target] * net.cost("latency")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return net, step


def _batches(count: int, batch_size: int) -> list:
    import torch

    generator = torch.Generator().manual_seed(0)
    return [
        (
            torch.rand(batch_size, 3, 32, 32, generator=generator),
            torch.randint(0, 10, (batch_size,), generator=generator),
        )
        for _ in range(count)
    ]


def time_epochs(model_path: str, target: str, batches: int, batch_size: int, threads: int, profile: bool) -> dict:
    """Plain and search in this process, one step of each in turn, so both see the same machine load.

    Returns N x the median step time of each (seconds per epoch).
    """
    import onnx
    import torch

    torch.set_num_threads(threads)
    model = onnx.load(model_path)
    steps = {mode: _trainer(model, target, mode)[1] for mode in MODES}
    data = _batches(batches + 2, batch_size)
    seconds: dict[str, list[float]] = {mode: [] for mode in steps}
    for k, (x, y) in enumerate(data):
        for mode, step in steps.items():
            started = time.perf_counter()
            step(x, y)
            if k >= 2:  # two untimed warm-up steps
                seconds[mode].append(time.perf_counter() - started)
    if profile:
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiler:
            for x, y in data[:3]:
                steps["search"](x, y)
        print(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=18), file=sys.stderr)
    return {f"{mode}_s": statistics.median(values) * batches for mode, values in seconds.items()} | {
        "threads": torch.get_num_threads()
    }


def peak_memory(model_path: str, target: str, mode: str, batches: int, batch_size: int, threads: int) -> dict:
    """Peak RSS of one configuration alone in this process: building the module and `batches` steps."""
    import onnx
    import torch

    torch.set_num_threads(threads)
    model = onnx.load(model_path)
    data = _batches(batches, batch_size)
    _load_pact_kernels()
    _reset_peak_rss()
    loaded_mb = _status_mb("VmRSS")
    _, step = _trainer(model, target, mode)
    for x, y in data:
        step(x, y)
    return {"loaded_mb": loaded_mb, "peak_mb": _status_mb("VmHWM")}


def _load_pact_kernels() -> None:
    """Compile the fused PACT kernels once on a tiny tensor, so that the compiler's own code (about
    70 MB of inductor and its generated libraries, the same for any model) counts as loaded, not as
    training memory."""
    import torch

    from odimo.retrain.kernels import fused_pact_backward, fused_pact_forward

    x, bound = torch.rand(2, 3, 4, 4).contiguous(memory_format=torch.channels_last), torch.tensor(0.5)
    fused_pact_backward(x, x, torch.zeros(()), bound)
    fused_pact_forward(x, torch.zeros(()), bound, torch.tensor(4.0))


def export_canonical(name: str, folder: Path) -> Path:
    """The reference network exported and imported as odimo sees it (BN folded, canonical ops)."""
    import onnx
    import torch

    from odimo.compiler.importer import load_model
    from odimo.models.export import export_onnx
    from odimo.models.zoo import build

    torch.manual_seed(0)
    exported = folder / f"{name}.onnx"
    export_onnx(build(name, 10, 3), exported, (3, 32, 32))
    canonical = folder / f"{name}.canonical.onnx"
    onnx.save(load_model(exported).model, str(canonical))
    return canonical


def _child(args: argparse.Namespace, *what: str) -> dict:
    command = [
        sys.executable,
        __file__,
        "--child",
        *what,
        "--batches",
        str(args.batches),
        "--batch-size",
        str(args.batch_size),
        "--threads",
        str(args.threads),
    ]
    if args.profile:
        command.append("--profile")
    # glibc keeps freed large blocks in its heap once its mmap threshold has grown, so the RSS would
    # also count what the allocator retains; a fixed threshold makes it follow the live tensors.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    done = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True, env=env)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _summary(args: argparse.Namespace, rows: list) -> dict:
    """The measured ratios, per case and reference, as REPRODUCTION.md reads them."""
    cases = []
    for name, target, times, memory in rows:
        for reference in ("plain", "baseline"):
            footprint = {mode: memory[mode]["peak_mb"] - memory[mode]["loaded_mb"] for mode in (reference, "search")}
            cases.append({
                "model": name, "target": target, "reference": "float" if reference == "plain" else BASELINE[target],
                "reference_s_per_epoch": times[f"{reference}_s"], "search_s_per_epoch": times["search_s"],
                "time_ratio": times["search_s"] / times[f"{reference}_s"],
                "reference_peak_mb": memory[reference]["peak_mb"], "search_peak_mb": memory["search"]["peak_mb"],
                "peak_rss_ratio": memory["search"]["peak_mb"] / memory[reference]["peak_mb"],
                "footprint_ratio": footprint["search"] / footprint[reference],
            })  # fmt: skip
    settings = {"batches": args.batches, "batch_size": args.batch_size, "threads": rows[0][2]["threads"]}
    return {"schema": "odimo.overhead/1", "settings": settings, "cases": cases}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=128)
    # One thread by default: on a shared machine two OpenMP threads spin-wait on every one of the
    # search's many small ops and make its timing erratic (seconds per step instead of 0.2 s).
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument(
        "--profile", action="store_true", help="print torch.profiler's top ops of three search steps to stderr"
    )
    parser.add_argument(
        "--memory-batches", type=int, default=3, help="steps of each memory run (the peak is reached in the first)"
    )
    parser.add_argument(
        "--json", type=Path, help="also write the measurements to this file (REPRODUCTION.md's Table II)"
    )
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        kind, target, model_path, *mode = args.child
        if kind == "time":
            result = time_epochs(model_path, target, args.batches, args.batch_size, args.threads, args.profile)
        else:
            result = peak_memory(model_path, target, mode[0], args.batches, args.batch_size, args.threads)
        print(json.dumps(result))
        return 0

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, target in CASES:
            model_path = str(export_canonical(name, Path(tmp)))
            times = _child(args, "time", target, model_path)
            memory = {
                mode: _child(
                    argparse.Namespace(**{**vars(args), "batches": args.memory_batches, "profile": False}),
                    "memory",
                    target,
                    model_path,
                    mode,
                )
                for mode in MODES
            }
            rows.append((name, target, times, memory))

    summary = _summary(args, rows)
    print(
        f"search-phase overhead: {args.batches} batches of {args.batch_size} synthetic 3x32x32 images per epoch, "
        f"CPU, {summary['settings']['threads']} torch thread(s)"
    )
    print(
        f"{'model / target':<26}{'reference':>10}{'ref s/ep':>10}{'search s/ep':>12}{'time':>7}{'goal':>7}   "
        f"{'peak RSS MB':>17}{'ratio':>7}   {'footprint':>10}{'goal':>7}"
    )
    for case in summary["cases"]:
        print(
            f"{case['model'] + ' / ' + case['target']:<26}{case['reference']:>10}"
            f"{case['reference_s_per_epoch']:>10.2f}{case['search_s_per_epoch']:>12.2f}"
            f"{case['time_ratio']:>6.2f}x{GOALS[case['target']]:>6.2f}x   {case['reference_peak_mb']:>8.0f} "
            f"{case['search_peak_mb']:>8.0f}{case['peak_rss_ratio']:>6.2f}x   "
            f"{case['footprint_ratio']:>9.2f}x{MEMORY_GOAL:>6.2f}x"
        )
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1, sort_keys=True) + "\n")
    print(
        f"paper (Table II, GPU, vs the most demanding baseline): time {PAPER_TIME[0]}-{PAPER_TIME[1]}x, "
        f"memory {PAPER_MEMORY[0]}-{PAPER_MEMORY[1]}x"
    )
    print(f"goals: time <= {GOALS['diana']}x DIANA, <= {GOALS['darkside']}x Darkside; memory <= {MEMORY_GOAL}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
