"""Regenerate docs/reproduction/: the paper's experiments, on Fashion-MNIST and a CPU time budget.

    python scripts/reproduce.py --minutes 60      # train, sweep, measure, then rewrite the tables
    python scripts/reproduce.py --render-only     # rewrite REPRODUCTION.md's tables from the JSON

Steps, each resumable (finished outputs in --work are kept, so a second run only does what is
missing):
1. seed networks, trained once with `odimo.models.train_default`: the Darkside seed network and
   the depthwise-separable MobileNetV1 (the bundled ResNet-20 is the DIANA seed);
2. `odimo-sweep` per experiment (the SWEEPS table), every point with the same budget;
3. the DWS baseline: MobileNetV1's own test accuracy, costed as the seed's "DWS" baseline;
4. `bench/search_overhead.py` (Table II), and `bench/zigzag_crosscheck.py` (Table III) where
   `zigzag-dse` is installed (otherwise the committed reports/zigzag.json is kept);
5. the reports are copied to docs/reproduction/reports/, the figures beside them, and each block
   of REPRODUCTION.md between `<!-- odimo:NAME -->` and `<!-- /odimo:NAME -->` is rewritten from
   those JSON files (`render_block`). The prose around the blocks is written by hand;
   tests/test_reproduction.py checks that every block still matches the committed JSON.

The budget knob, --minutes, sets how many batches each epoch of each point may use (the sweeps'
--limit-batches): the points' epochs times the per-batch seconds measured on a 2-core CPU, plus a
fixed cost per point for evaluation and emission. Seed training is not in the budget (--seed-epochs).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from odimo.compiler.pareto import deployed_accuracy

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "reproduction"
DOCUMENT = OUT / "REPRODUCTION.md"
BUNDLED = ROOT / "models" / "resnet20_fmnist.onnx"
FULL_EPOCH_BATCHES = 421  # 54,000 training images (90 % of 60,000) in batches of 128
POINT_OVERHEAD_S = 60.0  # import, validation, test-set evaluation in torch and onnxruntime, emission


@dataclass(frozen=True)
class Sweep:
    name: str
    model: str  # "bundled" or a seed network trained by step 1
    target: str
    lambdas: tuple[float, ...]
    baselines: tuple[str, ...]
    objective: str
    epochs: tuple[int, int, int]
    batch_seconds: float  # one search step of 128 images, 2 CPU cores (bench/search_overhead.py)

    def batches_per_point(self) -> float:
        """Epochs of work per sweep, in units of one epoch of one point."""
        return (
            len(self.lambdas) * sum(self.epochs[1:])
            + self.epochs[0] * len(self.lambdas)
            + len(self.baselines) * self.epochs[2]
        )

    def points(self) -> int:
        return len(self.lambdas) + len(self.baselines)


# λ weighs the cost relative to the accurate corner's (All-8bit, All-conv): DIANA's grid brackets its
# default (0.25) by 2.5x down and 4x up; Darkside runs the 4x gentler λ of its default (1).
SWEEPS = (
    Sweep(
        "diana-latency",
        "bundled",
        "diana",
        (0.1, 0.25, 0.5, 1.0),
        ("all-8bit", "all-ternary", "io-8bit", "min-cost"),
        "latency",
        (0, 1, 1),
        0.35,
    ),
    Sweep(
        "diana-energy",
        "bundled",
        "diana",
        (0.1, 0.25, 0.5, 1.0),
        ("all-8bit", "min-cost-energy"),
        "energy",
        (0, 1, 1),
        0.35,
    ),
    Sweep(
        "darkside",
        "darkside_seed",
        "darkside",
        # One point: on 2 loaded cores a Darkside point took 46 min, 12.5 of them training; most of the rest
        # is the discrete refinement, which scores every tile top of the cluster's staircase (~C/4 a layer).
        (0.25,),
        ("all-conv", "all-dw"),
        "latency",
        (1, 1, 1),
        0.7,
    ),
)
SEEDS = ("darkside_seed", "mobilenetv1_100")
DWS = "dws-mobilenetv1"


# ------------------------------------------------------------------------------------- running


def limit_batches(minutes: float) -> int:
    """Batches per epoch that fit the budget, between 20 and a full epoch."""
    work = sum(s.batches_per_point() * s.batch_seconds for s in SWEEPS)
    fixed = POINT_OVERHEAD_S * sum(s.points() for s in SWEEPS)
    return max(20, min(FULL_EPOCH_BATCHES, int((minutes * 60 - fixed) / work)))


def seed_model(work: Path, name: str) -> Path:
    return BUNDLED if name == "bundled" else work / "models" / f"{name}_fmnist.onnx"


def train_seeds(work: Path, epochs: int) -> None:
    for name in SEEDS:
        path = seed_model(work, name)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            _run(
                [
                    sys.executable,
                    "-m",
                    "odimo.models.train_default",
                    "--arch",
                    name,
                    "--epochs",
                    str(epochs),
                    "-o",
                    str(path),
                ],
                path.with_suffix(".log"),
            )


def run_sweeps(work: Path, batches: int) -> None:
    for sweep in SWEEPS:
        command = [
            str(Path(sys.executable).with_name("odimo-sweep")), str(seed_model(work, sweep.model)),
            "--target", sweep.target,
            "--lambdas", ",".join(f"{lam:g}" for lam in sweep.lambdas),
            "--baselines", ",".join(sweep.baselines),
            "--objective", sweep.objective,
            "--epochs", ",".join(map(str, sweep.epochs)),
            "--limit-batches", str(batches),
            "-o", str(work / sweep.name),
        ]  # fmt: skip
        _run(command, work / f"{sweep.name}.log", check=False)  # a failed point is reported in pareto.json


def run_dws(work: Path) -> None:
    """The depthwise-separable baseline is MobileNetV1 itself. No layer of it can be split on
    Darkside (odimo-compile emits its one fixed mapping and trains nothing), so its point is its own
    test accuracy in onnxruntime and, as cost, the seed's "DWS" baseline, which costs exactly that
    network."""
    import onnx

    from odimo.ir.verify import onnx_accuracy
    from odimo.retrain.data import fit_to_model, load_dataset

    path = work / DWS / "report.json"
    if path.exists():
        return
    data = fit_to_model(load_dataset("fashion-mnist"), (1, 32, 32), 10)
    accuracy = onnx_accuracy(onnx.load(str(seed_model(work, "mobilenetv1_100"))), data.x_test, data.y_test)
    seed_report = json.loads((work / "darkside" / "baseline-all-conv" / "model.report.json").read_text())
    cost = next(b for b in seed_report["baselines"] if b["name"] == "DWS")
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "schema": "odimo.dws/1",
        "network": "mobilenetv1_100",
        "accuracy_onnx": accuracy,
        "cycles": cost["cycles"],
        "energy_uj": cost["energy_uj"],
    }
    path.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")


def run_overhead(work: Path) -> None:
    if not (work / "overhead.json").exists():
        _run(
            [sys.executable, str(ROOT / "bench" / "search_overhead.py"), "--json", str(work / "overhead.json")],
            work / "overhead.log",
        )


def run_zigzag() -> None:
    """Table III's cross-check, where ZigZag is installed (an optional backend)."""
    try:
        import zigzag  # noqa: F401
    except ImportError:
        print("reproduce: zigzag-dse is not installed; keeping reports/zigzag.json", flush=True)
        return
    _run(
        [sys.executable, str(ROOT / "bench" / "zigzag_crosscheck.py"), "--json", str(OUT / "reports" / "zigzag.json")],
        ROOT / "build" / "zigzag.log",
    )


def _run(command: list[str], log: Path, check: bool = True) -> None:
    print("$", " ".join(command), flush=True)
    with log.open("w") as handle:
        done = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, cwd=ROOT, check=False)
    if check and done.returncode != 0:
        raise SystemExit(f"reproduce: {' '.join(command[:4])} ... failed with exit {done.returncode}; see {log}")


def collect(work: Path, settings: dict[str, Any]) -> None:
    """Copy the reports and figures the document cites into docs/reproduction/."""
    reports = OUT / "reports"
    for sweep in SWEEPS:
        folder = work / sweep.name
        target = reports / sweep.name
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(folder / "pareto.json", target / "pareto.json")
        shutil.copy(folder / "pareto.png", OUT / f"{sweep.name}.png")
        for point in folder.iterdir():
            if (point / "model.report.json").exists():
                shutil.copy(point / "model.report.json", target / f"{point.name}.json")
    (reports / "darkside").mkdir(parents=True, exist_ok=True)
    shutil.copy(work / DWS / "report.json", reports / "darkside" / f"{DWS}.json")
    shutil.copy(work / "overhead.json", reports / "overhead.json")
    for sweep_name, role in (("diana-latency", "fast"), ("darkside", "fast")):
        point = pick_points(load_sweep(OUT, sweep_name))[role]
        shutil.copy(work / sweep_name / point["name"] / "model.split.png", OUT / f"{sweep_name}-{role}-split.png")
    (reports / "run.json").write_text(json.dumps(settings, indent=1, sort_keys=True) + "\n")


# ------------------------------------------------------------------------------------- reading


def load_sweep(out: Path, name: str) -> dict[str, Any]:
    """A sweep's pareto.json points, each with its full report under "report"."""
    folder = out / "reports" / name
    pareto = json.loads((folder / "pareto.json").read_text())
    for point in pareto["points"]:
        point["report"] = json.loads((folder / f"{point['name']}.json").read_text())
    return pareto


def pick_points(sweep: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The paper's Table IV selection among the searched points on the front: Accurate (highest
    accuracy) and Fast (fewest cycles)."""
    searched = [p for p in sweep["points"] if p["kind"] == "search" and p["pareto"]] or [
        p for p in sweep["points"] if p["kind"] == "search"
    ]
    return {
        "accurate": max(searched, key=lambda p: (deployed_accuracy(p), -p["cycles"])),
        "fast": min(searched, key=lambda p: (p["cycles"], -deployed_accuracy(p))),
    }


def baseline(sweep: dict[str, Any], name: str) -> dict[str, Any]:
    return next(p for p in sweep["points"] if p["name"] == f"baseline-{name}")


def utilization(report: dict[str, Any], cus: tuple[str, str]) -> dict[str, float]:
    """Busy time of each CU over the inference (paper Table IV "util."), and the share of output
    channels on the second CU ("A. Ch.")."""
    total = sum(layer["latency_cycles"] for layer in report["layers"])
    busy = {cu: sum(layer["cycles"].get(cu, 0.0) for layer in report["layers"]) / total for cu in cus}
    channels = {cu: sum(layer["split"].get(cu, 0) for layer in report["layers"]) for cu in cus}
    return busy | {"channels": channels[cus[1]] / sum(channels.values())}


# ------------------------------------------------------------------------------------- rendering

PAPER_TABLE_II = {"diana": (2.3, 1.07), "darkside": (1.99, 1.03)}  # CIFAR-10 rows
PAPER_TABLE_IV = {  # CIFAR-10: accuracy %, latency ms, energy µJ, digital / analog util. %, analog channels %
    "All-8bit": (90.70, 1.55, 38.70, "100 / 0", 0.0),
    "ODiMO Accurate": (91.24, 1.55, 42.50, "100 / 18.6", 5.4),
    "ODiMO Fast": (90.38, 1.07, 34.44, "100 / 44.8", 51.8),
    "Min-Cost": (90.06, 0.47, 13.6, "9.5 / 93.6", 97.5),
}


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def render_settings(out: Path) -> str:
    run = json.loads((out / "reports" / "run.json").read_text())
    lines = [f"- {key}: {value}" for key, value in sorted(run.items())]
    reports = [point["report"] for sweep in SWEEPS for point in load_sweep(out, sweep.name)["points"]]
    seconds = sum(sum(r["training"]["phase_seconds"].values()) for r in reports)
    lines.append(f"- compiles: {len(reports)}, training time summed over them: {seconds / 60:.0f} min")
    return "\n".join(lines)


def render_table_ii(out: Path) -> str:
    overhead = json.loads((out / "reports" / "overhead.json").read_text())
    lines = [
        (
            "| model / target | reference | time ratio | peak RSS ratio | footprint ratio | "
            "paper time (CIFAR-10) | paper memory |"
        ),
        "|---|---|---|---|---|---|---|",
    ]
    for case in overhead["cases"]:
        paper = PAPER_TABLE_II[case["target"]] if case["reference"] != "float" else None
        paper_cells = f"{paper[0]:.2f}x | {paper[1]:.2f}x" if paper else "- | -"
        lines.append(
            f"| {case['model']} / {case['target']} | {case['reference']} | {case['time_ratio']:.2f}x | "
            f"{case['peak_rss_ratio']:.2f}x | {case['footprint_ratio']:.2f}x | {paper_cells} |"
        )
    settings = overhead["settings"]
    lines.append("")
    lines.append(
        f"{settings['batches']} batches of {settings['batch_size']} images per epoch, "
        f"{settings['threads']} torch thread(s), "
        "from `reports/overhead.json`."
    )
    return "\n".join(lines)


def render_table_iv(out: Path) -> str:
    sweep = load_sweep(out, "diana-latency")
    picked = pick_points(sweep)
    rows = {
        "All-8bit": baseline(sweep, "all-8bit"),
        "ODiMO Accurate": picked["accurate"],
        "ODiMO Fast": picked["fast"],
        "Min-Cost": baseline(sweep, "min-cost"),
    }
    lines = [
        (
            "| mapping | point | acc. % (ORT) | lat. ms | E. µJ | D./A. util. % | A. ch. % | "
            "paper acc. | paper lat. ms | paper E. µJ | paper util. % | paper A. ch. % |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label, point in rows.items():
        report = point["report"]
        use = utilization(report, ("digital", "analog"))
        paper = PAPER_TABLE_IV[label]
        lines.append(
            f"| {label} | {point['name']} | {_pct(point['accuracy_onnx'])} | "
            f"{report['totals']['all']['latency_ms']:.3f} | {point['energy_uj']:.2f} | "
            f"{100 * use['digital']:.1f} / {100 * use['analog']:.1f} | {100 * use['channels']:.1f} | "
            f"{paper[0]:.2f} | {paper[1]:.2f} | {paper[2]:.2f} | {paper[3]} | {paper[4]:.1f} |"
        )
    return "\n".join(lines)


def render_sweep(out: Path, name: str, reference: str) -> str:
    """Every point of one sweep, with its speed-up over `reference` (the paper's Fig. 5 / 6 data)."""
    sweep = load_sweep(out, name)
    base = baseline(sweep, reference) if any(p["name"] == f"baseline-{reference}" for p in sweep["points"]) else None
    metric = "cycles" if sweep["objective"] == "latency" else "energy_uj"
    lines = [
        f"| point | λ | acc. % (torch) | acc. % (ORT) | cycles | E. µJ | {reference} / point ({metric}) | front |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for point in sorted(sweep["points"], key=lambda p: p["cycles"]):
        ratio = f"{base[metric] / point[metric]:.2f}x" if base else "-"
        lam = f"{point['lambda']:g}" if point["lambda"] is not None else ""
        lines.append(
            f"| {point['name']} | {lam} | {_pct(point['accuracy'])} | {_pct(point['accuracy_onnx'])} | "
            f"{point['cycles']:,.0f} | {point['energy_uj']:.2f} | {ratio} | {'★' if point['pareto'] else ''} |"
        )
    failed = sweep.get("failed") or []
    if failed:
        lines.append("")
        lines.append("Failed points: " + "; ".join(f"{f['name']}: {f['error']}" for f in failed))
    return "\n".join(lines)


def render_darkside(out: Path) -> str:
    """Darkside: the sweep plus the DWS MobileNetV1, with speed-ups over All-conv and DWS."""
    sweep = load_sweep(out, "darkside")
    dws = json.loads((out / "reports" / "darkside" / f"{DWS}.json").read_text())
    conv = baseline(sweep, "all-conv")
    lines = ["| point | λ | acc. % (ORT) | cycles | All-conv / point | DWS / point |", "|---|---|---|---|---|---|"]
    dws_cycles = dws["cycles"]
    entries = [(p["name"], p["lambda"], p["accuracy_onnx"], p["cycles"]) for p in sweep["points"]]
    entries.append(("DWS (MobileNetV1, not fine-tuned)", None, dws["accuracy_onnx"], dws_cycles))
    for name, lam, accuracy, cycles in sorted(entries, key=lambda e: e[3]):
        lines.append(
            f"| {name} | {'' if lam is None else f'{lam:g}'} | {_pct(accuracy)} | "
            f"{cycles:,.0f} | {conv['cycles'] / cycles:.2f}x | {dws_cycles / cycles:.2f}x |"
        )
    return "\n".join(lines)


def render_table_iii(out: Path) -> str:
    """odimo's digital-CU latency against ZigZag's, per layer (bench/zigzag_crosscheck.py)."""
    check = json.loads((out / "reports" / "zigzag.json").read_text())
    lines = [
        "| model pair | layers | MAPE | Pearson | Spearman | paper (DIANA digital, model vs chip) |",
        "|---|---|---|---|---|---|",
        (
            f"| odimo vs ZigZag {check['zigzag_version']} | {len(check['layers'])} | "
            f"{100 * check['mape']:.1f} % | {100 * check['pearson']:.1f} % | "
            f"{100 * check['spearman']:.1f} % | 42 % / 88 % / 95 % |"
        ),
    ]
    return "\n".join(lines)


BLOCKS: dict[str, Callable[[Path], str]] = {
    "settings": render_settings,
    "table-ii": render_table_ii,
    "table-iii": render_table_iii,
    "table-iv": render_table_iv,
    "fig5-diana": lambda out: render_sweep(out, "diana-latency", "all-8bit"),
    "fig6-diana-energy": lambda out: render_sweep(out, "diana-energy", "all-8bit"),
    "fig5-darkside": render_darkside,
}
BLOCK = re.compile(r"(<!-- odimo:(?P<name>[\w-]+) -->\n)(?P<body>.*?)(\n<!-- /odimo:(?P=name) -->)", re.DOTALL)


def render_block(name: str, out: Path = OUT) -> str:
    return BLOCKS[name](out)


def rewrite(document: str, out: Path = OUT) -> str:
    """The document with every marked block regenerated from the JSON under `out`."""
    return BLOCK.sub(lambda m: m.group(1) + render_block(m.group("name"), out) + m.group(4), document)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--minutes", type=float, default=60.0, help="budget for the sweeps (default 60): sets their --limit-batches"
    )
    parser.add_argument("--limit-batches", type=int, help="batches per epoch, instead of deriving them from --minutes")
    parser.add_argument(
        "--seed-epochs",
        type=int,
        default=6,
        help="epochs of the Darkside seed and MobileNetV1 training (once; default 6)",
    )
    parser.add_argument(
        "--work", type=Path, default=ROOT / "build" / "reproduction", help="where the runs go (resumable)"
    )
    parser.add_argument(
        "--render-only", action="store_true", help="only rewrite REPRODUCTION.md from docs/reproduction/reports"
    )
    args = parser.parse_args(argv)
    if not args.render_only:
        batches = args.limit_batches or limit_batches(args.minutes)
        print(f"reproduce: {batches} batches per epoch (budget {args.minutes:g} min)", flush=True)
        train_seeds(args.work, args.seed_epochs)
        run_sweeps(args.work, batches)
        run_dws(args.work)
        run_overhead(args.work)
        run_zigzag()
        settings = {
            "budget_minutes": None if args.limit_batches else args.minutes,
            "limit_batches": batches,
            "seed_epochs": args.seed_epochs,
            "batch_size": 128,
        }
        collect(args.work, settings)
    DOCUMENT.write_text(rewrite(DOCUMENT.read_text()))
    print(f"reproduce: wrote {DOCUMENT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
