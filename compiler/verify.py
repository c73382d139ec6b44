"""Execution checks: run two models in onnxruntime on the same probes and compare (onnx-io.md §4).

Every rewrite odimo makes is claimed to preserve the network function; this module is where that
claim is tested, on every write, not only in the test suite.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime as ort

from odimo.compiler.errors import VerificationError
from odimo.compiler.onnx_graph import value_shape

# onnx-io.md §4: max|y - y_ref| <= ABS_TOL + REL_TOL * max|y_ref|, per output. float32 reassociation
# (a split conv sums in another order, a folded BN rounds once) stays orders of magnitude below it.
ABS_TOL = 1e-5
REL_TOL = 1e-4
DYNAMIC_BATCH_PROBE = 2


@dataclass(frozen=True)
class Comparison:
    """Worst deviation over all probes and outputs, and how often the top-1 class agreed."""

    max_abs_diff: float
    bound: float
    top1_agreement: float

    @property
    def passed(self) -> bool:
        return self.max_abs_diff <= self.bound


def session(model: onnx.ModelProto | bytes, threads: int = 1) -> ort.InferenceSession:
    """An ORT session without graph optimizations, so we test our graph and not ORT's rewrite of it.

    One thread by default: deterministic reductions, and no oversubscription in tests.
    """
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = threads
    payload = model if isinstance(model, bytes) else model.SerializeToString()
    return ort.InferenceSession(payload, options, providers=["CPUExecutionProvider"])


def probe_batch(model: onnx.ModelProto, seed: int, count: int = 8, data: np.ndarray | None = None) -> np.ndarray:
    """Seeded probe inputs in [0, 1) at the declared batch (DYNAMIC_BATCH_PROBE if symbolic)."""
    shape = value_shape(model.graph.input[0])
    batch = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else DYNAMIC_BATCH_PROBE
    rng = np.random.default_rng(seed)
    probes = rng.random((count, *shape[1:]), dtype=np.float32)
    if data is not None:
        probes = np.concatenate([probes, data[:count].astype(np.float32)])
    rows = -(-len(probes) // batch) * batch
    padded = np.concatenate([probes, probes[: rows - len(probes)]]) if rows > len(probes) else probes
    return padded.reshape(-1, batch, *shape[1:])


def run(sess: ort.InferenceSession, batches: np.ndarray) -> list[np.ndarray]:
    """Run every batch through `sess`; one array per graph output, batches concatenated."""
    name = sess.get_inputs()[0].name
    per_batch = [sess.run(None, {name: batch}) for batch in batches]
    return [np.concatenate([outs[i] for outs in per_batch]) for i in range(len(per_batch[0]))]


def compare(reference: onnx.ModelProto | bytes, candidate: onnx.ModelProto | bytes, batches: np.ndarray) -> Comparison:
    """Run both models on `batches` and measure the §4 deviation."""
    ref_outs = run(session(reference), batches)
    new_outs = run(session(candidate), batches)
    worst, bound = 0.0, np.inf
    for ref, new in zip(ref_outs, new_outs, strict=True):
        diff = float(np.max(np.abs(ref.astype(np.float64) - new))) if ref.size else 0.0
        allowed = ABS_TOL + REL_TOL * float(np.max(np.abs(ref))) if ref.size else ABS_TOL
        if diff - allowed > worst - bound or bound == np.inf:
            worst, bound = diff, allowed
    first_ref, first_new = ref_outs[0], new_outs[0]
    agreement = float(np.mean(first_ref.reshape(len(first_ref), -1).argmax(1) == first_new.reshape(len(first_new), -1).argmax(1)))
    return Comparison(max_abs_diff=worst, bound=bound, top1_agreement=agreement)


def require_equivalent(reference: onnx.ModelProto | bytes, candidate: onnx.ModelProto | bytes, batches: np.ndarray, what: str) -> Comparison:
    """`compare`, raising VerificationError (exit 3: our bug) when the bound is exceeded."""
    result = compare(reference, candidate, batches)
    if not result.passed:
        raise VerificationError(
            "E900",
            "verification-failed",
            f"{what} changed the network function: max |y - y_ref| = {result.max_abs_diff:.3g} > {result.bound:.3g}",
            fix="this is a bug in odimo; please report it with the model (nothing was written)",
        )
    return result


def onnx_accuracy(model: onnx.ModelProto | bytes, x: np.ndarray, y: np.ndarray, batch: int = 256) -> float:
    """Top-1 accuracy of `model` in onnxruntime (the deployed numbers, act-quant chains included)."""
    sess = session(model, threads=0)  # 0: onnxruntime picks one thread per core
    name = sess.get_inputs()[0].name
    correct = sum(int((sess.run(None, {name: x[k : k + batch]})[0].argmax(1) == y[k : k + batch]).sum()) for k in range(0, len(y), batch))
    return correct / max(len(y), 1)
