"""Console entry points. They parse arguments, call one library function, and turn OdimoError into
one message on stderr and exit code 2 (3 for a failed self-verification). No traceback for users."""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from odimo.ir.errors import OdimoError

if TYPE_CHECKING:  # the CLI imports the pipeline lazily, so that --help stays fast
    from odimo.compiler.report import Report


def _run(prog: str, body: Callable[[], int]) -> int:
    try:
        return body()
    except OdimoError as err:
        print(f"{prog}: {err.render()}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt as interrupt:
        kept = getattr(interrupt, "__notes__", [])
        said = "; ".join(kept) if kept else "no output file was written"
        print(f"{prog}: interrupted; {said}", file=sys.stderr)
        return 130
    except MemoryError:
        print(f"{prog}: error: out of memory; no output file was written", file=sys.stderr)
        return 2


def inspect_main(argv: Sequence[str] | None = None) -> int:
    """`odimo-inspect MODEL.onnx [--target diana|darkside] [--json]`."""
    parser = argparse.ArgumentParser(
        prog="odimo-inspect",
        usage="odimo-inspect MODEL.onnx [--target diana|darkside] [--json]",
        description="Show each layer of an ONNX model, its coupling group and, with --target, its predicted cost.",
    )
    parser.add_argument("model", help="ONNX model file")
    parser.add_argument("--target", help="SoC to cost the layers on (diana, darkside)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)

    def body() -> int:
        from odimo.compiler.inspect import inspect_model, render_table

        report = inspect_model(args.model, args.target)
        print(json.dumps(report, indent=1, sort_keys=True) if args.json else render_table(report))
        return 0

    return _run("odimo-inspect", body)


def compile_main(argv: Sequence[str] | None = None) -> int:
    """`odimo-compile MODEL.onnx --target T [--mapping M] [-o OUT.onnx] [--emit qdq|float] [--report R]`."""
    parser = argparse.ArgumentParser(
        prog="odimo-compile",
        usage="odimo-compile MODEL.onnx --target diana|darkside [options] (see --help)",
        description="Partition an ONNX model's layers by output channel across the compute units of an SoC.",
    )
    parser.add_argument("model", help="trained float ONNX model")
    parser.add_argument("--target", required=True, help="diana or darkside")
    parser.add_argument(
        "--mapping",
        default="search",
        help=(
            "search (default), a baseline (all-8bit, all-ternary, io-8bit, min-cost, all-conv, all-dw) "
            "or a MAPPING.json"
        ),
    )
    parser.add_argument(
        "-o", "--output", type=Path, help="output model (default: MODEL.<target>.onnx beside the input)"
    )
    parser.add_argument(
        "--emit",
        choices=("qdq", "float"),
        help="weights as QDQ integers or float (default: qdq for diana, float for darkside)",
    )
    parser.add_argument(
        "--qdq-opset",
        type=int,
        metavar="N",
        help=(
            "opset of the QDQ output; 25 or more stores ternary weights as INT2 (default: the input's opset, "
            "so INT2 when the input is at opset 25 or more)"
        ),
    )
    parser.add_argument("--report", type=Path, help="report path (default: OUT.report.json)")
    parser.add_argument("--seed", type=int, default=0, help="seed of probes, data split and training")
    training = parser.add_argument_group("training (the search, or --train for a given mapping)")
    training.add_argument(
        "--data", default="fashion-mnist", help="fashion-mnist[:DIR], cifar10:DIR, npz:FILE or synthetic"
    )
    training.add_argument(
        "--epochs", type=epochs, default="0,1,1", help="warm-up,search,final epochs (the reference: 0,200,200)"
    )
    training.add_argument(
        "--lambda",
        dest="lam",
        type=float,
        help=(
            "strength of the cost term, the cost counted relative to the accurate corner's (All-8bit on diana, "
            "All-conv on darkside), so one value means the same on any model (default: the target's, "
            "diana 0.5, darkside 1)"
        ),
    )
    goal = training.add_mutually_exclusive_group()
    goal.add_argument(
        "--speedup",
        type=float,
        metavar="X",
        help="search for a mapping X times faster than the accurate corner (All-8bit, All-conv): λ adapts",
    )
    goal.add_argument(
        "--energy-saving",
        type=float,
        metavar="X",
        help="search for a mapping using X times less energy than the accurate corner: λ adapts",
    )
    training.add_argument("--objective", choices=("latency", "energy"), default="latency")
    training.add_argument("--device", default="cpu", help="cpu or cuda")
    training.add_argument("--batch-size", type=int, default=128)
    training.add_argument("--limit-batches", type=int, help="at most N batches per epoch (smoke runs)")
    training.add_argument("--resume", action="store_true", help="continue from OUT.ckpt/last.pt")
    training.add_argument(
        "--train", action="store_true", help="fine-tune a baseline or file mapping for the final-phase budget"
    )
    training.add_argument("--no-progress", action="store_true", help="no progress bars (CI logs)")
    training.add_argument(
        "--act-rounding",
        choices=("half-even", "floor"),  # ir/records.py Rounding (imported lazily, as the pipeline is)
        default="half-even",
        help=(
            "how the 7-bit activation quantizers round: half-even (default; QuantizeLinear's rounding, emitted "
            "as standard Q/DQ that runtimes integerize) or floor (a requantizer that right-shifts without a "
            "rounding offset; emitted as a Clip-Mul-Add-Floor-Div chain)"
        ),
    )
    training.add_argument(
        "--calibration-images",
        type=non_negative_int,
        default=256,
        metavar="N",
        help="training images that fit the quantized layers to the float model before training (0: none)",
    )
    training.add_argument(
        "--no-distill",
        action="store_true",
        help="train on the labels only (default: the imported float model teaches every phase, KL on logits)",
    )
    training.add_argument(
        "--no-refine",
        action="store_true",
        help="take the search's argmax as it is (default: refine each layer's count on the exact cost, held-out loss)",
    )
    training.add_argument(
        "--save-search-graph",
        type=Path,
        metavar="PATH",
        help="also write the searched network with one function call per searchable layer (for Netron)",
    )
    args = parser.parse_args(argv)

    def body() -> int:
        from odimo.compiler import pipeline
        from odimo.compiler.pipeline import CompileOptions
        from odimo.ir.records import Rounding
        from odimo.retrain.settings import SearchSettings
        from odimo.targets import get_target

        lam = args.lam if args.lam is not None else get_target(args.target).default_lambda
        ratio, objective = _cost_goal(parser, args)
        settings = SearchSettings(
            data=args.data,
            epochs=args.epochs,
            lam=lam,
            target_ratio=ratio,
            objective=objective,
            seed=args.seed,
            device=args.device,
            batch_size=args.batch_size,
            limit_batches=args.limit_batches,
            resume=args.resume,
            progress=not args.no_progress,
            distill=not args.no_distill,
            refine=not args.no_refine,
            calibration_images=args.calibration_images,
            act_rounding=Rounding(args.act_rounding),
        )
        options = CompileOptions(
            target=args.target,
            mapping=args.mapping,
            output=args.output,
            emit=args.emit,
            qdq_opset=args.qdq_opset,
            report=args.report,
            train=args.train,
            search=settings,
            supernet_graph=args.save_search_graph,
        )
        print(summary(pipeline.compile(args.model, options).report))
        return 0

    return _run("odimo-compile", body)


def _cost_goal(parser: argparse.ArgumentParser, args: argparse.Namespace) -> tuple[float | None, str]:
    """(target ratio, objective) from --speedup / --energy-saving, which each imply their objective."""
    for flag, ratio, objective in (
        ("--speedup", args.speedup, "latency"),
        ("--energy-saving", args.energy_saving, "energy"),
    ):
        if ratio is None:
            continue
        if not math.isfinite(ratio) or ratio <= 1:
            parser.error(f"{flag} takes a number above 1 (times cheaper), not {ratio:g}")
        if args.objective != "latency" and objective == "latency":
            parser.error("--speedup targets latency; use --energy-saving for energy")
        return ratio, objective
    return None, args.objective


def non_negative_int(text: str) -> int:
    """A non-negative integer option (argparse turns the ValueError into a usage error, exit 2)."""
    value = int(text)
    if value < 0:
        raise ValueError(text)
    return value


def epochs(text: str) -> tuple[int, int, int]:
    """`W,S,F`, three non-negative integers (an argparse type: a bad value is a usage error, exit 2)."""
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or min(values) < 0:
        raise argparse.ArgumentTypeError(f"takes three non-negative integers W,S,F, not '{text}'")
    return values  # type: ignore[return-value]  # three, checked above


def summary(report: Report) -> str:
    """What a CI log should show: accuracy, the predicted cost, and the baselines beside it."""
    total = report.summary.total
    acc = report.accuracy
    lines = [
        f"{report.summary.target} / {report.mapping}: "
        f"{total.cycles:,.2f} cycles ({total.latency_ms:.4f} ms), "
        f"{total.energy_uj:.3f} µJ"
    ]
    lines += [f"  {note}" for note in report.notes]
    if report.goal is not None:
        lines.append(f"  {report.goal.line()}")
    if acc.get("final") is not None:
        onnx = f"{acc['onnx']:.2%}" if acc.get("onnx") is not None else "not measured"
        lines.append(f"  accuracy: float {acc['float']:.2%} -> odimo {acc['final']:.2%} (onnxruntime {onnx})")
    elif report.training is not None:
        lines.append("  accuracy: no test accuracy (the data has no test part)")
    for baseline in report.summary.baselines:
        ratio = baseline.cycles / total.cycles if total.cycles else float("nan")
        lines.append(
            f"  {baseline.name:<16} {baseline.cycles:>14,.2f} cycles  {baseline.energy_uj:8.3f} µJ  "
            f"({ratio:.2f}x odimo's latency)"
        )
    lines.append(f"  wrote {', '.join(report.emission.files)} (+ report, mapping, plot)")
    return "\n".join(lines)


def sweep_main(argv: Sequence[str] | None = None) -> int:
    """`odimo-sweep MODEL.onnx --target T --lambdas L1,L2,... [--baselines] [-o DIR] [--workers N] [--ray ADDRESS]`."""
    parser = argparse.ArgumentParser(
        prog="odimo-sweep",
        usage="odimo-sweep MODEL.onnx --target diana|darkside --lambdas L1,L2,... [options] (see --help)",
        description=(
            "One odimo-compile per lambda (and per baseline, same budget), then the accuracy-cost Pareto front."
        ),
    )
    parser.add_argument("model", type=Path)
    parser.add_argument("--target", required=True)
    parser.add_argument("--lambdas", required=True, help="comma-separated, e.g. 0,0.25,0.5,1")
    parser.add_argument("--objective", choices=("latency", "energy"), default="latency")
    parser.add_argument(
        "--baselines",
        nargs="?",
        const="all",
        help="also fine-tune baselines with the same budget: all (default) or a comma-separated list",
    )
    parser.add_argument(
        "-o", "--output", type=Path, default=Path("sweep"), help="folder of the points and the front (default ./sweep)"
    )
    parser.add_argument("--workers", type=int, default=1, help="points run in parallel (local processes)")
    parser.add_argument(
        "--ray", metavar="ADDRESS", help="run the points as Ray tasks on this cluster ('auto' or 'local')"
    )
    parser.add_argument("--data", default="fashion-mnist")
    parser.add_argument("--epochs", type=epochs, default="0,1,1")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit-batches", type=int)
    parser.add_argument(
        "--act-rounding",
        choices=("half-even", "floor"),
        default="half-even",
        help="how every point's activation quantizers round (odimo-compile --act-rounding)",
    )
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error(f"--workers takes an integer >= 1, not {args.workers}")

    def body() -> int:
        from odimo.compiler.emit import OutputFile, write_atomically
        from odimo.compiler.pareto import pareto_json, pareto_plot, pareto_table, summarize
        from odimo.compiler.preflight import check_settings, check_training
        from odimo.compiler.sweep import check_lambdas, check_sweep_folder, plan_points, run_sweep
        from odimo.retrain.settings import SearchSettings
        from odimo.targets import get_target
        from odimo.targets.baselines import MappingRecipe

        target = get_target(args.target)
        lambdas = check_lambdas(args.lambdas)
        settings = SearchSettings(data=args.data, epochs=args.epochs, seed=args.seed, limit_batches=args.limit_batches)
        check_settings(settings)
        check_training(settings, data=True)  # every point trains
        check_sweep_folder(args.output)
        known = [b.name for b in target.baselines if isinstance(b, MappingRecipe)]
        baselines = known if args.baselines == "all" else [b for b in (args.baselines or "").split(",") if b]
        points = plan_points(lambdas, baselines)
        extra = ["--objective", args.objective, "--data", args.data, "--epochs", ",".join(map(str, args.epochs))]
        extra += ["--seed", str(args.seed), "--act-rounding", args.act_rounding]
        extra += ["--limit-batches", str(args.limit_batches)] if args.limit_batches else []
        results = run_sweep(args.model.resolve(), args.target, points, args.output, extra, args.workers, args.ray)
        summary = summarize(results, args.objective)
        write_atomically(
            [
                OutputFile(args.output / "pareto.json", pareto_json(summary)),
                OutputFile(args.output / "pareto.png", pareto_plot(summary)),
                OutputFile(args.output / "table.md", pareto_table(summary).encode()),
            ]
        )
        print(pareto_table(summary))
        return 1 if summary["failed"] else 0

    return _run("odimo-sweep", body)


if __name__ == "__main__":
    sys.exit(compile_main())
