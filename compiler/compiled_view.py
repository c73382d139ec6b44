"""What a model odimo wrote says about its partition, read back from the file alone.

The view is built from the `odimo.*` node metadata (onnx-io.md §3) and the `odimo.report` model
metadata, never from node or tensor names: those are a protocol between odimo's passes and may be
renamed (onnxruntime's QDQ conventions, a user's tool), while metadata survives every rewrite that
keeps nodes. The one fact read from the graph itself is the element type behind each sub-layer's
weight input, so the view says how the weights are stored in this file beside the CU's format.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import onnx

from odimo.compiler.annotations import parse_channel_ranges
from odimo.ir.errors import BadOdimoMetadataError

# Node roles that are not sub-layers: the weights' dequantization, the Concat, an input Slice and
# the activation quantizers. A node with `odimo.source_node` and no role computes the layer's channels.
HELPER_ROLE = "odimo.role"
WEIGHT_INPUT = 1  # Conv and Gemm read their weights at input 1


@dataclass(frozen=True)
class SubLayer:
    """One node computing some of a source layer's output channels on one CU."""

    node: str
    op: str  # odimo.op: the source op, or the substitute a CU runs
    cu: str
    channels: str  # original output channel indices, compact ('0-3,7')
    count: int
    weight_format: str  # the CU's format as odimo.weight_format states it (int8, ternary, float32)
    stored: str  # the element type of the weight initializer in this file (int8, float32, int2...)
    cycles: float | None
    concat_range: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "op": self.op,
            "cu": self.cu,
            "channels": self.channels,
            "count": self.count,
            "weight_format": self.weight_format,
            "stored": self.stored,
            "cycles": self.cycles,
            "concat_range": self.concat_range,
        }


@dataclass(frozen=True)
class SourceLayer:
    """A layer of the model odimo was given, and the sub-layers it became."""

    name: str
    role: str | None  # searchable, fixed or host, from the report (None without one)
    latency_cycles: float | None
    sublayers: tuple[SubLayer, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "class": self.role,
            "latency_cycles": self.latency_cycles,
            "sublayers": [s.to_dict() for s in self.sublayers],
        }


@dataclass(frozen=True)
class CuTotal:
    sublayers: int
    channels: int
    cycles: float

    def to_dict(self) -> dict[str, Any]:
        return {"sublayers": self.sublayers, "channels": self.channels, "cycles": self.cycles}


@dataclass(frozen=True)
class CompiledView:
    """The partition of one compiled file: its run facts, layers, per-CU totals and the report."""

    props: dict[str, str]  # odimo.* model metadata but the report: version, target, emit, seed...
    summary: str  # the model doc_string: the one-line summary odimo writes
    layers: tuple[SourceLayer, ...]
    cus: dict[str, CuTotal]
    report: dict[str, Any] | None  # the embedded odimo.report, None if the file has none

    @property
    def target(self) -> str | None:
        return self.props.get("odimo.target")

    def to_dict(self) -> dict[str, Any]:
        report = self.report or {}
        return {
            "odimo": {key.removeprefix("odimo."): value for key, value in sorted(self.props.items())},
            "summary": self.summary,
            "layers": [layer.to_dict() for layer in self.layers],
            "cus": {cu: total.to_dict() for cu, total in self.cus.items()},
            "totals": report.get("totals"),
            "baselines": report.get("baselines", []),
        }


def is_compiled(model: onnx.ModelProto) -> bool:
    """Whether odimo wrote `model`: it carries odimo's model or node metadata."""
    return any(p.key.startswith("odimo.") for p in model.metadata_props) or any(
        p.key == "odimo.source_node" for node in model.graph.node for p in node.metadata_props
    )


def read_compiled(model: onnx.ModelProto, where: str) -> CompiledView:
    """The partition `model` records; BadOdimoMetadataError (E115) when its labels are unreadable
    or contradict the embedded report."""
    model_props = {p.key: p.value for p in model.metadata_props if p.key.startswith("odimo.")}
    report = _report(model_props.pop("odimo.report", None), where)
    sublayers = _sublayers(model, where)
    if not sublayers:
        raise BadOdimoMetadataError(
            "the model carries odimo's model metadata but no node has odimo.source_node: "
            "its node labels were dropped (onnx.version_converter drops every node's metadata_props)",
            where,
            "inspect the file odimo wrote, or change its opset with odimo (not after it)",
        )
    layers = _layers(sublayers, report, where)
    return CompiledView(model_props, model.doc_string, layers, _cu_totals(layers), report)


def _report(text: str | None, where: str) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        report = json.loads(text)
        if not isinstance(report, dict) or not isinstance(report.get("layers", []), list):
            raise ValueError("not a report object")
    except ValueError as exc:
        raise BadOdimoMetadataError(
            f"the odimo.report model metadata is not odimo's report ({exc})",
            f"{where}: metadata_props 'odimo.report'",
            "inspect the file odimo wrote; the same report is in OUT.report.json",
        ) from None
    return report


def _sublayers(model: onnx.ModelProto, where: str) -> dict[str, list[SubLayer]]:
    """Source layer -> its sub-layers, in graph order."""
    stored = _stored_weight_types(model.graph)
    found: dict[str, list[SubLayer]] = {}
    for node in model.graph.node:
        props = {p.key: p.value for p in node.metadata_props}
        if "odimo.source_node" not in props or HELPER_ROLE in props:
            continue
        here = f"{where}: node '{node.name}' ({node.op_type})"
        missing = [k for k in ("odimo.cu", "odimo.channels") if k not in props]
        if missing:
            raise BadOdimoMetadataError(f"a sub-layer lacks {', '.join(missing)}", here, _REWRITTEN_FIX)
        try:
            count = len(parse_channel_ranges(props["odimo.channels"]))
            cycles = float(props["odimo.cycles"]) if "odimo.cycles" in props else None
        except ValueError as exc:
            raise BadOdimoMetadataError(
                f"unreadable odimo.channels or odimo.cycles ({exc})", here, _REWRITTEN_FIX
            ) from None
        found.setdefault(props["odimo.source_node"], []).append(
            SubLayer(
                node=node.name,
                op=props.get("odimo.op", node.op_type),
                cu=props["odimo.cu"],
                channels=props["odimo.channels"],
                count=count,
                weight_format=props.get("odimo.weight_format", ""),
                stored=stored.get(node.input[WEIGHT_INPUT], "") if len(node.input) > WEIGHT_INPUT else "",
                cycles=cycles,
                concat_range=props.get("odimo.concat_range"),
            )
        )
    return found


_REWRITTEN_FIX = "inspect the file odimo wrote; a tool that rewrote its metadata_props changed the labels"


def _layers(sublayers: dict[str, list[SubLayer]], report: dict[str, Any] | None, where: str) -> tuple[SourceLayer, ...]:
    """Source layers in the report's order (graph order without a report), each checked against its
    report row: the same CUs and the same channels, or the labels and the report disagree."""
    if report is None:
        return tuple(SourceLayer(name, None, None, tuple(subs)) for name, subs in sublayers.items())
    rows = {row.get("name"): row for row in report.get("layers", []) if isinstance(row, Mapping)}
    unreported = sorted(set(sublayers) - set(rows))
    if unreported:
        raise BadOdimoMetadataError(
            f"sub-layers of {', '.join(repr(n) for n in unreported)} are labelled but not in odimo.report",
            where,
            _REWRITTEN_FIX,
        )
    layers = []
    for name, row in rows.items():
        subs = tuple(sublayers.get(name, ()))
        labelled = {s.cu: parse_channel_ranges(s.channels) for s in subs}
        reported = {cu: list(indices) for cu, indices in (row.get("channels") or {}).items()}
        if labelled != reported:
            raise BadOdimoMetadataError(
                f"layer '{name}': the node labels give channels {_compact(labelled)}, "
                f"odimo.report gives {_compact(reported)}",
                where,
                _REWRITTEN_FIX,
            )
        layers.append(SourceLayer(name, row.get("class"), row.get("latency_cycles"), subs))
    return tuple(layers)


def _compact(channels: dict[str, list[int]]) -> str:
    return "{" + ", ".join(f"{cu}: {len(indices)}" for cu, indices in sorted(channels.items())) + "}"


def _cu_totals(layers: tuple[SourceLayer, ...]) -> dict[str, CuTotal]:
    """Sub-layers, channels and summed cycles per CU, in the order CUs first appear."""
    totals: dict[str, CuTotal] = {}
    for sub in (s for layer in layers for s in layer.sublayers):
        old = totals.get(sub.cu, CuTotal(0, 0, 0.0))
        totals[sub.cu] = CuTotal(old.sublayers + 1, old.channels + sub.count, old.cycles + (sub.cycles or 0.0))
    return totals


def _stored_weight_types(graph: onnx.GraphProto) -> dict[str, str]:
    """Value -> element type of the initializer it holds, looking through a DequantizeLinear."""
    types = {init.name: _type_name(init.data_type) for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "DequantizeLinear" and node.input and node.input[0] in types:
            types[node.output[0]] = types[node.input[0]]
    return types


def _type_name(data_type: int) -> str:
    name = onnx.TensorProto.DataType.Name(data_type).lower()
    return "float32" if name == "float" else name
