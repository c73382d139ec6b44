"""The CU labels the annotate pass writes (onnx-io.md §3 'Annotations'), and the labelled model.

Built from the mapping summary's rows, so the labels in the ONNX and the numbers in the JSON cannot
disagree.
"""

from __future__ import annotations

import importlib.metadata

import onnx

from odimo.compiler.report import MappingSummary
from odimo.ir import names
from odimo.passes.annotate import NodeNote, annotate
from odimo.passes.base import PassResult, cu_ranges
from odimo.targets import get_target

PRODUCER = "odimo"
VERSION = importlib.metadata.version("odimo")
# The ops of an activation quantizer: Clip->QuantizeLinear->DequantizeLinear, or the floor chain.
ACT_QUANT_OPS = ("Clip", "QuantizeLinear", "DequantizeLinear", "Mul", "Add", "Floor", "Div")


def channel_ranges(indices: list[int]) -> str:
    """[0, 1, 2, 3, 7] -> '0-3,7': compact and readable in Netron's metadata panel."""
    parts, start = [], None
    for k, value in enumerate(indices):
        if start is None:
            start = value
        if k + 1 == len(indices) or indices[k + 1] != value + 1:
            parts.append(str(start) if start == value else f"{start}-{value}")
            start = None
    return ",".join(parts)


def parse_channel_ranges(text: str) -> list[int]:
    """'0-3,7' -> [0, 1, 2, 3, 7], the inverse of `channel_ranges`; ValueError on any other text."""
    indices: list[int] = []
    for part in text.split(","):
        start, dash, end = part.partition("-")
        first = int(start)
        last = int(end) if dash else first
        if not 0 <= first <= last or (indices and first <= indices[-1]):
            raise ValueError(f"'{text}' is not increasing channel ranges such as '0-3,7'")
        indices += range(first, last + 1)
    return indices


def annotate_model(
    model: onnx.ModelProto,
    summary: MappingSummary,
    reindexed: frozenset[str],
    substitutes: dict[str, str],
    *,
    emit: str,
    seed: int,
    source_sha256: str,
) -> PassResult:
    """Label every node of `model` (the float or QDQ partition) from the summary rows, and the
    model itself with the run's facts."""
    target = get_target(summary.target)
    formats = {cu: fmt.value for cu, fmt in target.weight_formats.items()} if emit == "qdq" else {}
    notes = layer_notes(summary, set(reindexed), substitutes, formats)
    for node in model.graph.node:
        if node.name not in notes:
            props = {"odimo.cu": "host"}
            if node.op_type in ACT_QUANT_OPS and names.is_act_quant(node.name):
                props["odimo.role"] = "act-quant"
            if node.name in reindexed:
                props["odimo.reindexed"] = "true"
            notes[node.name] = NodeNote(props)
    props = {
        "odimo.version": VERSION,
        "odimo.target": summary.target,
        "odimo.objective": summary.objective,
        "odimo.lambda": "" if summary.lam is None else f"{summary.lam:g}",
        "odimo.seed": str(seed),
        "odimo.emit": emit,
        "odimo.source.sha256": source_sha256,
        "odimo.report": summary.embedded_json(),
    }
    return annotate(model, notes, props, model_doc(summary), producer=(PRODUCER, VERSION))


def layer_notes(
    summary: MappingSummary, reindexed: set[str], substitutes: dict[str, str], weight_formats: dict[str, str]
) -> dict[str, NodeNote]:
    """`substitutes` maps a layer to the CU that runs a substitute op for some of its channels;
    `weight_formats` says how each CU stores its weights in this file (odimo.weight_format)."""
    notes: dict[str, NodeNote] = {}
    order = (*summary.cus, "host")
    for row in summary.layers:
        name, channels = row.name, row.channels
        cus = tuple(cu for cu in order for _ in channels.get(cu, []))
        ranges = cu_ranges(cus, order)
        split = len(ranges) > 1
        for cu, (start, end) in ranges.items():
            cycles = (row.cycles or {}).get(cu)
            fmt = weight_formats.get(cu, "float32")
            op = "Conv(depthwise substitute)" if substitutes.get(name) == cu else row.op
            props = {
                "odimo.cu": cu,
                "odimo.source_node": name,
                "odimo.channels": channel_ranges(channels[cu]),
                "odimo.op": op,
                "odimo.weight_format": fmt,
                "odimo.group": f"{row.group}:{row.policy}",
            }
            if split:
                props["odimo.concat_range"] = f"{start}:{end}"
            if cycles is not None:
                props["odimo.cycles"] = f"{cycles:g}"
            if name in reindexed:
                props["odimo.reindexed"] = "true"
            doc = f"{name} → {cu} ({fmt}): {end - start} of {len(cus)} channels"
            doc += f", concat {start}:{end}" if split else ""
            doc += f", {cycles:,.0f} cycles" if cycles is not None else ""
            notes[names.sublayer(name, cu)] = NodeNote(props, doc)
            sub = names.sublayer(name, cu)
            notes[names.dequant(sub)] = NodeNote(
                {"odimo.role": "dequant", "odimo.source_node": name, "odimo.cu": cu},
                f"{name} → {cu}: {fmt} weights to float",
            )
            notes[names.bias_dequant(sub)] = NodeNote(
                {"odimo.role": "dequant", "odimo.source_node": name, "odimo.cu": cu},
                f"{name} → {cu}: int32 bias on the accumulator grid to float",
            )
            for step in ("quant", "dequant"):
                notes[names.part(names.requant(sub), step)] = NodeNote(
                    {"odimo.role": "requant", "odimo.source_node": name, "odimo.cu": cu},
                    f"{name} → {cu}: the output requantized to the next layer's activation codes",
                )
        if split:
            notes[names.concat(name)] = NodeNote(
                {"odimo.role": "concat", "odimo.source_node": name, "odimo.cu": "host"},
                f"{name}: joins {', '.join(ranges)} in CU order",
            )
        if name in substitutes and split:
            cu = substitutes[name]
            notes[names.input_slice(name, cu)] = NodeNote(
                {"odimo.role": "input-slice", "odimo.source_node": name, "odimo.cu": "host"},
                f"{name}: input channels of {cu}",
            )
    return notes


def model_doc(summary: MappingSummary) -> str:
    """'DIANA, latency, λ=1e-08: 86,964 cycles (0.334 ms @ 260 MHz), 2.96× vs All-8bit'.

    A given mapping is not named: its label (a baseline or a file name) is provenance, kept in the
    report; the model depends only on the mapping's content, so `--mapping OUT.mapping.json`
    reproduces it byte for byte.
    """
    total = summary.total
    mhz = summary.frequency_hz / 1e6
    lam = summary.lam
    head = f"{summary.target.upper()}, {summary.objective}, " + (f"λ={lam:g}" if lam is not None else "given mapping")
    text = f"{head}: {total.cycles:,.0f} cycles ({total.latency_ms:.3f} ms @ {mhz:g} MHz)"
    if summary.baselines and total.cycles:
        first = summary.baselines[0]
        text += f", {first.cycles / total.cycles:.2f}× vs {first.name}"
    return text
