"""Console entry points. They parse arguments, call one library function, and turn OdimoError into
one message on stderr and exit code 2 (3 for a failed self-verification). No traceback for users."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence

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
