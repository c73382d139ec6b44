"""Execution checks: run two models in onnxruntime on the same probes and compare (onnx-io.md §4).

Every rewrite odimo makes is claimed to preserve the network function; this module is where that
claim is tested, on every write, not only in the test suite.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime as ort

from odimo.ir.coupling import index_tail
from odimo.ir.errors import ReferenceMismatchError
from odimo.ir.graph import value_shape

# onnx-io.md §4: max|y - y_ref| <= ABS_TOL + REL_TOL * max|y_ref|, per output. float32 reassociation
# (a split conv sums in another order, a folded BN rounds once) stays orders of magnitude below it.
ABS_TOL = 1e-5
REL_TOL = 1e-4
# Odd, and neither 1 nor a usual export batch: a graph that only runs at its exported batch fails.
DYNAMIC_BATCH_PROBE = 3


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


def probe_inputs(model: onnx.ModelProto, seed: int, count: int = 8, data: np.ndarray | None = None) -> np.ndarray:
    """Seeded probe images in [0, 1) of the model's (C, H, W), [count (+ len(data)), C, H, W].

    Samples, not batches: `run` cuts them into each session's own batch, so a fixed-batch model and
    its symbolic-batch working copy are compared on the same images.
    """
    shape = value_shape(model.graph.input[0])
    rng = np.random.default_rng(seed)
    probes = rng.random((count, *shape[1:]), dtype=np.float32)
    if data is not None:
        probes = np.concatenate([probes, data[:count].astype(np.float32)])
    return probes


def session_batch(sess: ort.InferenceSession, symbolic: int = DYNAMIC_BATCH_PROBE) -> int:
    """The batch a session runs at: its input's fixed batch, else `symbolic`."""
    first = sess.get_inputs()[0].shape[0]
    return first if isinstance(first, int) and first > 0 else symbolic


def run(sess: ort.InferenceSession, samples: np.ndarray, batch: int | None = None) -> list[np.ndarray]:
    """Run `samples` through `sess` in batches of `batch` (default: `session_batch`); one array per
    graph output, in sample order. The last batch is padded with repeated samples, then cut off."""
    name = sess.get_inputs()[0].name
    batch = batch or session_batch(sess)
    per_batch = []
    for start in range(0, len(samples), batch):
        chunk = samples[start : start + batch]
        short = batch - len(chunk)
        padded = np.concatenate([chunk, np.resize(chunk, (short, *chunk.shape[1:]))]) if short else chunk
        per_batch.append([out[: len(chunk)] for out in sess.run(None, {name: padded})])
    return [np.concatenate([outs[i] for outs in per_batch]) for i in range(len(per_batch[0]))]


def compare(
    reference: onnx.ModelProto | bytes,
    candidate: onnx.ModelProto | bytes,
    samples: np.ndarray,
    candidate_batch: int | None = None,
) -> Comparison:
    """Run both models on `samples` (each at its own batch, or the candidate at `candidate_batch`)
    and measure the §4 deviation (on the logits of a model that ends in ArgMax)."""
    ref_outs = run(session(logits_view(reference)), samples)
    new_outs = run(session(logits_view(candidate)), samples, candidate_batch)
    return compare_outputs(ref_outs, new_outs)


def compare_outputs(ref_outs: list[np.ndarray], new_outs: list[np.ndarray]) -> Comparison:
    """The §4 deviation of `new_outs` from `ref_outs`, output by output: |y - y_ref| against
    ABS_TOL + REL_TOL·max|y_ref| (the worst output decides), and the top-1 agreement of the first."""
    worst, bound = 0.0, np.inf
    for ref, new in zip(ref_outs, new_outs, strict=True):
        diff = float(np.max(np.abs(ref.astype(np.float64) - new))) if ref.size else 0.0
        allowed = ABS_TOL + REL_TOL * float(np.max(np.abs(ref))) if ref.size else ABS_TOL
        if diff - allowed > worst - bound or bound == np.inf:
            worst, bound = diff, allowed
    agreement = float(np.mean(predictions(ref_outs[0]) == predictions(new_outs[0])))
    return Comparison(max_abs_diff=worst, bound=bound, top1_agreement=agreement)


def logits_view(model: onnx.ModelProto | bytes) -> onnx.ModelProto | bytes:
    """`model` with its logits as the graph output when it ends in ArgMax/ArgMin: class indices
    flip at near-ties under float reassociation, so a function is compared on the scores."""
    if isinstance(model, bytes):
        return model
    tail = index_tail(model.graph)
    if tail is None:
        return model
    view = onnx.ModelProto()
    view.CopyFrom(model)
    del view.graph.output[:]
    view.graph.output.append(onnx.helper.make_tensor_value_info(tail.logits, onnx.TensorProto.FLOAT, None))
    return view


def predictions(outputs: np.ndarray) -> np.ndarray:
    """Class per sample: the output itself when it is integer (an ArgMax tail), else its argmax."""
    flat = outputs.reshape(len(outputs), -1)
    return flat[:, 0] if np.issubdtype(flat.dtype, np.integer) else flat.argmax(1)


def require_equivalent(
    reference: onnx.ModelProto | bytes,
    candidate: onnx.ModelProto | bytes,
    samples: np.ndarray,
    what: str,
    candidate_batch: int | None = None,
) -> Comparison:
    """`compare`, raising VerificationError (exit 3: our bug) when the bound is exceeded."""
    result = compare(reference, candidate, samples, candidate_batch)
    if not result.passed:
        raise ReferenceMismatchError(
            f"{what} changed the network function: max |y - y_ref| = {result.max_abs_diff:.3g} > {result.bound:.3g}",
        )
    return result


def onnx_accuracy(model: onnx.ModelProto | bytes, x: np.ndarray, y: np.ndarray, batch: int = 256) -> float:
    """Top-1 accuracy of `model` in onnxruntime (the deployed numbers, act-quant chains included).

    A model with a fixed batch runs at that batch (the last one padded): the file as deployed.
    """
    sess = session(model, threads=0)  # 0: onnxruntime picks one thread per core
    batch = session_batch(sess, symbolic=batch)
    correct = 0
    for k in range(0, len(y), 4096):  # bounded memory for the outputs
        logits = run(sess, x[k : k + 4096], batch)[0]
        correct += int((predictions(logits) == y[k : k + 4096]).sum())
    return correct / max(len(y), 1)
