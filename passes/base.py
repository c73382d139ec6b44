"""What every graph pass returns, and the registry that names them.

A pass leaves its input untouched and returns a new model plus a record of what it did; policy
(which channel goes to which CU) is always an argument, never decided inside a pass.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import onnx

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


def cu_ranges(cus: tuple[str, ...], cu_order: tuple[str, ...]) -> dict[str, tuple[int, int]]:
    """Stored [start, end) of each CU once a layer's channels are sorted by CU (empty CUs omitted)."""
    ranges, start = {}, 0
    for cu in cu_order:
        count = sum(1 for c in cus if c == cu)
        if count:
            ranges[cu] = (start, start + count)
            start += count
    return ranges
