"""Annotation, last: CU labels as node metadata and doc strings, the report as model metadata.

Written with plain onnx from a side table, after every other rewrite, because graph-surgeon drops
metadata and doc strings and version_converter drops node metadata (onnx-io.md §3). Metadata on
standard ops passes the checker and onnxruntime; attributes would not.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass

import onnx

from odimo.passes.base import PassResult


@dataclass(frozen=True)
class NodeNote:
    """What to write on one node: sorted-key metadata and the text Netron shows as description."""

    props: dict[str, str]
    doc: str = ""


def annotate(
    model: onnx.ModelProto,
    notes: Mapping[str, NodeNote],
    model_props: Mapping[str, str],
    model_doc: str,
    producer: tuple[str, str] | None = None,
) -> PassResult:
    """`producer` (name, version) replaces the exporter's: the file is the writer's output, and
    tools (Netron's properties, onnxruntime's `modelmeta`) show whoever wrote it last."""
    work = copy.deepcopy(model)
    if producer is not None:
        work.producer_name, work.producer_version = producer
    annotated = 0
    for node in work.graph.node:
        note = notes.get(node.name)
        if note is None:
            continue
        _set_props(node.metadata_props, note.props)
        if note.doc:
            node.doc_string = note.doc
        annotated += 1
    _set_props(work.metadata_props, model_props)
    retitled = model_doc != work.doc_string
    if retitled:  # assigning an equal doc would still mark the field present and change the bytes
        work.doc_string = model_doc
    changed = bool(annotated or model_props or retitled or producer)
    return PassResult(work, changed=changed, report={"nodes_annotated": annotated})


def _set_props(field, props: Mapping[str, str]) -> None:
    existing = {entry.key: entry.value for entry in field if entry.key not in props}
    merged = {**existing, **props}
    del field[:]
    field.extend(onnx.StringStringEntryProto(key=k, value=merged[k]) for k in sorted(merged))
