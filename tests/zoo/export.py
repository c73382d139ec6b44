"""Export a zoo family to ONNX with either torch exporter, as a third party would.

Both exports have one input `input` [batch, 3, 32, 32] and one output `logits` [batch, 10], where
`batch` is a dynamic dimension (dim_param) and C/H/W are static; or, with `batch=N`, a fixed batch
N, as `torch.onnx.export(model, torch.randn(N, 3, 32, 32), ...)` gives without dynamic axes (N = 1
is what most users export). FIXED_BATCHES are the fixed forms the compile tests run.

How torch 2.13 selects and configures the exporters (`torch.onnx.export`):
- TorchScript (legacy, tracing): `dynamo=False` -- the default is now `dynamo=True`. Dynamic batch
  through `dynamic_axes={name: {0: "batch"}}` on the input and the output; it rejects
  `dynamic_shapes`. It emits a DeprecationWarning, which `export` silences.
- Dynamo (torch.export + onnxscript torchlib): `dynamo=True`. Dynamic batch through
  `dynamic_shapes=({0: Dim("batch")},)`; a named `Dim` (not the string/AUTO form) makes export fail
  loudly if the model specialises the batch instead of silently baking it in. The ONNX dim_param is
  the Dim's name. `external_data` defaults to True and then always writes weights to a side
  `<file>.data` file, so we pass `external_data=False` for one self-contained file. `optimize=True`
  is the default since 2.7 (onnxscript optimizer: constant folding, dead code, function inlining);
  we pass it explicitly so the graphs we test are the ones users get.
- The dynamo exporter translates at opset 18 at least (torchlib's floor). Asked for 17, it runs the
  ONNX version converter *before* its optimizer, and that fails for 15 of the 16 families
  (ReduceMean 18->17: "No initializer or constant input to node found" for the axes input; Pad:
  "No Adapter To Version $17"); the failure is only logged and the model stays at opset 18.
  Converting the optimized opset-18 model ourselves fails as well (no Split 18->17 or Pad adapter;
  ReduceMean keeps an attribute opset 17 lacks). So dynamo models in the wild are opset >= 18 (20
  when `opset_version` is left out), and the zoo exports dynamo at 18 by default. `export` checks
  the opset it got and raises if it is not the one asked for, rather than return a mislabeled file.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import onnx
import torch
from zoo.families import FAMILIES, INPUT_SHAPE

Exporter = Literal["torchscript", "dynamo"]
EXPORTERS: tuple[Exporter, ...] = ("torchscript", "dynamo")
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
BATCH = "batch"

# Opset used when the caller gives none: the lowest each exporter produces natively.
DEFAULT_OPSET: dict[Exporter, int] = {"torchscript": 17, "dynamo": 18}

# Families the dynamo exporter cannot export (at DEFAULT_OPSET), with the reason; the tests xfail
# them (strict). Empty: all 16 export and match torch. At opset 17 all but `flatten_fc` fail, see
# the module docstring.
DYNAMO_XFAIL: dict[str, str] = {}

# Trace with batch 2: torch.export specialises sizes 0 and 1, so a batch-1 example contradicts the
# dynamic batch Dim and export fails.
_EXAMPLE_BATCH = 2
FIXED_BATCHES = (1, 4)


# Warnings torch emits for every user of the exporters, about torch's own code, not the model.
_EXPORTER_NOISE = (
    r"You are using the legacy TorchScript-based ONNX export",  # DeprecationWarning, dynamo=False
    r"The feature will be removed\. Please remove usage of this function",  # ditto, its logging
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",  # FutureWarning inside torch.export
    r"Constant folding - Only steps=1 can be constant folded",  # TorchScript, F.pad's pads subgraph
)


def example_input(batch: int, seed: int = 0) -> torch.Tensor:
    """A seeded float32 input batch of the zoo's input shape."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, *INPUT_SHAPE, generator=generator)


@contextmanager
def single_thread() -> Iterator[None]:
    """Run torch on one intra-op thread, then restore the setting.

    The zoo models are tiny: a second thread buys nothing, and on a loaded machine the OpenMP
    spin-waits of idle workers cost more CPU than the work (TorchScript export of all 16 families:
    1 s on one thread, 15 s on two under load).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def export(family: str, path: Path, exporter: Exporter, opset: int | None = None, batch: int | None = None) -> Path:
    """Build `family` (eval mode, seeded) and export it to `path`; return `path`.

    `batch` None exports a dynamic batch, an int that fixed batch (no dynamic axes or shapes).
    `opset` defaults to DEFAULT_OPSET[exporter]. Raises KeyError for an unknown family, ValueError
    for an unknown exporter, and RuntimeError when the written model does not have the requested
    opset (dynamo asked for opset < 18).
    """
    if exporter not in EXPORTERS:
        raise ValueError(f"unknown exporter '{exporter}'; expected one of {EXPORTERS}")
    opset = DEFAULT_OPSET[exporter] if opset is None else opset
    path = Path(path)
    with single_thread(), warnings.catch_warnings():
        for message in _EXPORTER_NOISE:
            warnings.filterwarnings("ignore", message=message)
        _export(FAMILIES[family](), path, exporter, opset, batch)
    got = _default_opset(onnx.load(str(path), load_external_data=False))
    if got != opset:
        raise RuntimeError(
            f"{exporter} export of '{family}' has opset {got}, asked for {opset}: the "
            "exporter's version conversion failed; use opset >= 18 with dynamo"
        )
    return path


def _export(model: torch.nn.Module, path: Path, exporter: Exporter, opset: int, batch: int | None) -> None:
    args = (example_input(_EXAMPLE_BATCH if batch is None else batch),)
    if exporter == "torchscript":
        dynamic = {"dynamic_axes": {INPUT_NAME: {0: BATCH}, OUTPUT_NAME: {0: BATCH}}} if batch is None else {}
        torch.onnx.export(
            model,
            args,
            str(path),
            dynamo=False,
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            **dynamic,
        )
    else:
        dynamic = {"dynamic_shapes": ({0: torch.export.Dim(BATCH)},)} if batch is None else {}
        torch.onnx.export(
            model,
            args,
            str(path),
            dynamo=True,
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            external_data=False,
            optimize=True,
            verbose=False,
            **dynamic,
        )


def _default_opset(model: onnx.ModelProto) -> int:
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
