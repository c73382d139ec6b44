"""Benchmark: odimo's QDQ output against its float companion in onnxruntime on CPU, in one run.

    python bench/qdq_latency.py OUT.onnx [--data fashion-mnist] [--runs 7] [--batch 64] [--threads 1]

OUT.onnx is a QDQ output of `odimo-compile`; OUT.float.onnx and OUT.report.json sit beside it. Prints:
- what onnxruntime's ORT_ENABLE_ALL graph of the QDQ model holds: QLinearConv nodes against the Conv
  sub-layers (saved as OUT.optimized.onnx, onnxruntime's `optimized_model_filepath`);
- the median latency per batch of both models at ORT_ENABLE_ALL, measured alternately, and the ratio;
- top-1 on the whole test set: torch fake-quant (the report's `final`, measured by the search on the
  same images) against the QDQ file at ORT_DISABLE_ALL and ORT_ENABLE_ALL. Goal: within 0.1 point.
Not a test (timings depend on the machine).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from odimo.ir.graph import value_shape
from odimo.ir.verify import predictions, run
from odimo.retrain.data import fit_to_model, load_dataset

LEVELS = {
    "DISABLE_ALL": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "ENABLE_ALL": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


def session(path: Path, level: str, threads: int, optimized: Path | None = None) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.graph_optimization_level = LEVELS[level]
    options.intra_op_num_threads = threads
    if optimized is not None:
        options.optimized_model_filepath = str(optimized)
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def integerized(qdq: Path, threads: int) -> str:
    """The optimized graph's op counts: how many sub-layers onnxruntime turned into QLinearConv."""
    optimized = qdq.with_name(qdq.name.replace(".onnx", ".optimized.onnx"))
    session(qdq, "ENABLE_ALL", threads, optimized)
    ops = Counter(n.op_type for n in onnx.load(str(optimized)).graph.node)
    convs = sum(1 for n in onnx.load(str(qdq)).graph.node if n.op_type == "Conv")
    shown = ", ".join(f"{op} {n}" for op, n in ops.most_common())
    return f"{ops['QLinearConv']} QLinearConv of {convs} Conv sub-layers ({optimized.name}: {shown})"


def latencies(paths: dict[str, Path], batch: np.ndarray, runs: int, threads: int) -> dict[str, float]:
    """Median seconds per batch at ORT_ENABLE_ALL, the models run alternately so load drifts hit both."""
    sessions = {name: session(path, "ENABLE_ALL", threads) for name, path in paths.items()}
    times: dict[str, list[float]] = {name: [] for name in sessions}
    for k in range(runs + 1):
        for name, sess in sessions.items():
            start = time.perf_counter()
            sess.run(None, {sess.get_inputs()[0].name: batch})
            if k:  # the first run of each warms up
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def accuracy(path: Path, level: str, x: np.ndarray, y: np.ndarray, threads: int) -> float:
    sess = session(path, level, threads)
    batch = sess.get_inputs()[0].shape[0]
    logits = run(sess, x, batch if isinstance(batch, int) and batch > 0 else 256)[0]
    return float((predictions(logits) == y).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("qdq", type=Path)
    parser.add_argument("--data", default="fashion-mnist")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    stem = args.qdq.name.removesuffix(".onnx")
    paths = {"qdq": args.qdq, "float": args.qdq.with_name(f"{stem}.float.onnx")}
    report = json.loads(args.qdq.with_name(f"{stem}.report.json").read_text())

    model = onnx.load(str(args.qdq))
    shape = value_shape(model.graph.input[0])[1:]
    classes = int(value_shape(model.graph.output[0])[-1])
    data = fit_to_model(
        load_dataset(args.data, input_shape=shape, num_classes=classes, seed=report["seed"]), shape, classes
    )
    x, y = data.x_test.astype(np.float32), data.y_test

    print(f"{args.qdq.name}: {integerized(args.qdq, args.threads)}")
    times = latencies(paths, x[: args.batch], args.runs, args.threads)
    print(
        f"latency per batch of {args.batch}, {args.threads} thread(s), ORT_ENABLE_ALL, median of {args.runs}: "
        f"QDQ {times['qdq'] * 1e3:.1f} ms, float {times['float'] * 1e3:.1f} ms, "
        f"QDQ/float {times['qdq'] / times['float']:.2f}"
    )
    torch_top1 = report["accuracy"]["final"]
    print(f"top-1 on {len(y)} test images: torch fake-quant {100 * torch_top1:.2f} %")
    for level in LEVELS:
        top1 = accuracy(args.qdq, level, x, y, args.threads)
        delta = 100 * (top1 - torch_top1)
        print(f"  QDQ at ORT_{level}: {100 * top1:.2f} % ({delta:+.2f} pt; goal |Δ| <= 0.1: {abs(delta) <= 0.1})")


if __name__ == "__main__":
    main()
