"""Console entry points. They parse arguments, call one library function, and turn OdimoError into
one message on stderr and exit code 2 (3 for a failed self-verification). No traceback for users."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from odimo.compiler.errors import OdimoError


def _run(prog: str, body: Callable[[], int]) -> int:
    try:
        return body()
    except OdimoError as err:
        print(f"{prog}: {err.render()}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; nothing was written", file=sys.stderr)
        return 130


def inspect_main(argv: Sequence[str] | None = None) -> int:
    """`odimo-inspect MODEL.onnx [--target diana|darkside] [--json]`."""
    parser = argparse.ArgumentParser(prog="odimo-inspect", description="Show each layer of an ONNX model, its coupling group and, with --target, its predicted cost.")
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
    parser = argparse.ArgumentParser(prog="odimo-compile", description="Partition an ONNX model's layers by output channel across the compute units of an SoC.")
    parser.add_argument("model", help="trained float ONNX model")
    parser.add_argument("--target", required=True, help="diana or darkside")
    parser.add_argument("--mapping", default="search", help="search (default), a baseline (all-8bit, all-ternary, io-8bit, min-cost, all-conv, all-dw) or a MAPPING.json")
    parser.add_argument("-o", "--output", type=Path, help="output model (default: MODEL.<target>.onnx beside the input)")
    parser.add_argument("--emit", choices=("qdq", "float"), help="weights as QDQ integers or float (default: qdq for diana, float for darkside)")
    parser.add_argument("--report", type=Path, help="report path (default: OUT.report.json)")
    parser.add_argument("--seed", type=int, default=0, help="seed of probes, data split and training")
    args = parser.parse_args(argv)

    def body() -> int:
        from odimo.compiler.pipeline import CompileOptions, compile

        options = CompileOptions(target=args.target, mapping=args.mapping, output=args.output, emit=args.emit, report=args.report, seed=args.seed)
        result = compile(args.model, options)
        total = result.report["totals"]["all"]
        print(f"{result.paths.model}: {total['cycles']:,.2f} cycles ({total['latency_ms']:.4f} ms), {total['energy_uj']:.3f} µJ on {args.target}")
        for baseline in result.report["baselines"]:
            print(f"  {baseline['name']:<12} {baseline['cycles']:>14,.2f} cycles  {baseline['energy_uj']:.3f} µJ")
        return 0

    return _run("odimo-compile", body)
