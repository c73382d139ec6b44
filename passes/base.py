"""What every graph pass returns, and the registry that names them.

A pass leaves its input untouched and returns a new model plus a record of what it did; policy
(which channel goes to which CU) is always an argument, never decided inside a pass.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper

from odimo.ir import names
from odimo.ir.graph import GraphIndex

# Layer name -> CU name of each output channel, in original channel order ("host" for host layers).
LayerCUs = Mapping[str, tuple[str, ...]]


@dataclass(frozen=True)
class PassResult:
    model: onnx.ModelProto
    changed: bool
    report: dict[str, int] = field(default_factory=dict)


def own_name(index: GraphIndex, name: str, node: str) -> str:
    """The initializer `name` as node `node` may rewrite it: itself if no other node reads it, else a
    copy `name@node` (onnx-io.md §3), so derived names such as `W@node/<cu>` stay unique too."""
    return name if len(index.consumers.get(name, [])) == 1 else names.private_copy(name, node)


def dequantized_input(
    node: onnx.NodeProto,
    slot: int,
    index: GraphIndex,
    graph: onnx.GraphProto,
    codes: np.ndarray,
    scale: np.ndarray,
    name: str,
) -> onnx.NodeProto:
    """Replace the constant input `slot` of `node` by a per-row DequantizeLinear (axis 0) of integer
    `codes` (their dtype is the stored type, zero point 0) and `scale`, named the way onnxruntime's
    tools pair them with the float tensor (ir/names.py); returns the node `name` to insert before it."""
    prefix = own_name(index, node.input[slot], node.name)
    graph.initializer.extend(
        [
            numpy_helper.from_array(codes, names.quantized(prefix)),
            numpy_helper.from_array(scale, names.quant_scale(prefix)),
            numpy_helper.from_array(np.zeros(len(scale), dtype=codes.dtype), names.quant_zero_point(prefix)),
        ]
    )
    dequantized = names.dequantize_output(prefix)
    node.input[slot] = dequantized
    return helper.make_node(
        "DequantizeLinear",
        [names.quantized(prefix), names.quant_scale(prefix), names.quant_zero_point(prefix)],
        [dequantized],
        name=name,
        axis=0,
    )


def cu_ranges(cus: tuple[str, ...], cu_order: tuple[str, ...]) -> dict[str, tuple[int, int]]:
    """Stored [start, end) of each CU once a layer's channels are sorted by CU (empty CUs omitted)."""
    ranges, start = {}, 0
    for cu in cu_order:
        count = sum(1 for c in cus if c == cu)
        if count:
            ranges[cu] = (start, start + count)
            start += count
    return ranges
