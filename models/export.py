"""Export a reference network to ONNX: fixed C/H/W, symbolic batch "batch", opset 17.

    python -m odimo.models.export resnet20 -o r20.onnx --input-shape 1x32x32 --num-classes 10
    python -m odimo.models.export resnet20 -o r20_opset13.onnx --input-shape 1x32x32 \
        --weights models/resnet20_fmnist.onnx --opset 13

Exporter choice (torch 2.13): the default `dynamo=True` exporter emits opset 18 at least (asking
for 17 runs a down-conversion that fails on ReduceMean and silently leaves the model at 18), folds
BN into the convs and names nodes `node_Conv_139` / values `getitem_3`. The TorchScript exporter
(`dynamo=False`, deprecated but present) writes opset 17 with nodes named by module path
(`/layer1/layer1.0/conv1/Conv`) and initializers named like the state dict
(`layer1.0.conv1.weight`). We use it with `TrainingMode.PRESERVE` on a module in eval mode: BN
stays a separate inference-mode BatchNormalization node (odimo folds it itself, onnx-io.md §2), so
the graph matches the torch modules one to one and `load_weights_from_onnx` can read the weights
back for a re-export.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import numpy_helper
from torch import nn

from odimo.models.zoo import MODELS, build

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
BATCH_DIM = "batch"
# The float32 agreement we promise between torch and onnxruntime on the same input.
MAX_ABS_DIFF = 1e-5


def export_onnx(module: nn.Module, path: Path | str, input_shape: Sequence[int], opset: int = 17) -> onnx.ModelProto:
    """Write `module` to `path` as ONNX with input (batch, *input_shape) and return the model.

    The module is exported in eval mode and its train/eval flag restored afterwards. The file is
    written to a temporary name in the same folder and renamed at the end, and checked with
    `onnx.checker.check_model(full_check=True)` before the rename.
    """
    path = Path(path)
    c, h, w = (int(d) for d in input_shape)
    was_training = module.training
    module.eval()
    fd, tmp_name = tempfile.mkstemp(suffix=".onnx", dir=path.parent or Path("."))
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with warnings.catch_warnings():
            # The deprecation notice of the TorchScript exporter; the choice is explained above.
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(
                module,
                # Batch 2, not 1, so that no size-1 batch can be specialised into the graph.
                (torch.zeros(2, c, h, w),),
                str(tmp),
                dynamo=False,
                opset_version=opset,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: BATCH_DIM}, OUTPUT_NAME: {0: BATCH_DIM}},
                training=torch.onnx.TrainingMode.PRESERVE,
                # Nothing to fold in these networks; in PRESERVE mode folding only adds a warning.
                do_constant_folding=False,
            )
        model = _inline_initializer_identities(onnx.load(str(tmp)))
        onnx.checker.check_model(model, full_check=True)
        tmp.write_bytes(model.SerializeToString(deterministic=True))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
        module.train(was_training)
    return model


def _inline_initializer_identities(model: onnx.ModelProto) -> onnx.ModelProto:
    """Replace `Identity(initializer)` nodes by a copy of the initializer under the output's name.

    The TorchScript exporter stores equal tensors once and re-creates the others with Identity (BN
    parameters of a fresh network are all ones/zeros); a weight should be an initializer.
    """
    inits = {t.name: t for t in model.graph.initializer}
    kept, copies = [], []
    for node in model.graph.node:
        if node.op_type == "Identity" and node.input[0] in inits:
            copy = onnx.TensorProto()
            copy.CopyFrom(inits[node.input[0]])
            copy.name = node.output[0]
            copies.append(copy)
        else:
            kept.append(node)
    if not copies:
        return model
    result = onnx.ModelProto()
    result.CopyFrom(model)
    del result.graph.node[:]
    result.graph.node.extend(kept)
    result.graph.initializer.extend(copies)
    return result


def load_weights_from_onnx(module: nn.Module, path: Path | str) -> nn.Module:
    """Copy the initializers of a model written by `export_onnx` into `module` (by state-dict name).

    Every parameter and buffer must be present with the same shape (BN's `num_batches_tracked` is
    not exported and is left alone); raises ValueError naming the first mismatch otherwise.
    """
    model = onnx.load(str(path))
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    state = module.state_dict()
    for key, value in state.items():
        if key.endswith("num_batches_tracked"):
            continue
        if key not in inits or tuple(inits[key].shape) != tuple(value.shape):
            found = inits[key].shape if key in inits else "nothing"
            raise ValueError(
                f"{path}: expected initializer '{key}' of shape {tuple(value.shape)}, found "
                f"{found}; was the file exported from this model with export_onnx?"
            )
        state[key] = torch.from_numpy(np.array(inits[key]))
    module.load_state_dict(state)
    return module


def max_abs_diff(module: nn.Module, path: Path | str, input_shape: Sequence[int], batch: int, seed: int = 0) -> float:
    """max |torch − onnxruntime| over the outputs for one seeded uniform [0, 1) batch."""
    x = np.random.default_rng(seed).random((batch, *input_shape), dtype=np.float32)
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            expected = module(torch.from_numpy(x)).numpy()
    finally:
        module.train(was_training)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (actual,) = session.run(None, {INPUT_NAME: x})
    return float(np.max(np.abs(actual - expected)))


def parse_shape(text: str) -> tuple[int, int, int]:
    """'1x32x32' -> (1, 32, 32)."""
    parts = text.lower().split("x")
    if len(parts) != 3 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(f"expected CxHxW with positive integers, got '{text}'")
    c, h, w = (int(p) for p in parts)
    return c, h, w


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m odimo.models.export", description="Export a reference network to ONNX."
    )
    parser.add_argument("name", choices=sorted(MODELS))
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--input-shape", type=parse_shape, default=(3, 32, 32), help="CxHxW")
    parser.add_argument("--num-classes", type=int, default=10)
    parser.add_argument("--opset", type=int, default=17)
    parser.add_argument(
        "--weights",
        type=Path,
        help="an .onnx written by this script (weights read back by name) or a torch state dict",
    )
    parser.add_argument("--seed", type=int, default=0, help="initialisation seed without --weights")
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    module = build(args.name, args.num_classes, args.input_shape[0])
    if args.weights is not None:
        if args.weights.suffix == ".onnx":
            load_weights_from_onnx(module, args.weights)
        else:
            module.load_state_dict(torch.load(args.weights, weights_only=True))
    export_onnx(module, args.output, args.input_shape, args.opset)
    diffs = [max_abs_diff(module, args.output, args.input_shape, b) for b in (1, 3)]
    print(f"wrote {args.output} (opset {args.opset}); max |torch - onnxruntime| = {max(diffs):.2e}")
    if max(diffs) > MAX_ABS_DIFF:
        print(f"error: onnxruntime differs from torch by more than {MAX_ABS_DIFF}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
