"""annotate: node metadata, doc strings and model metadata; checker- and onnxruntime-clean."""

from __future__ import annotations

import builders
import onnx
import pytest
from pass_helpers import assert_same_outputs, canonical, node, run_pure

from odimo.ir.verify import session
from odimo.passes.annotate import NodeNote, annotate

NOTES = {
    "conv2": NodeNote(
        {"odimo.source_node": "conv2", "odimo.cu": "analog", "odimo.channels": "0-3,7"},
        "conv2 → analog (ternary): 5 of 8 channels",
    ),
    "relu1": NodeNote({"odimo.cu": "host"}),
    "not-a-node": NodeNote({"odimo.cu": "digital"}),
}
PROPS = {"odimo.target": "diana", "odimo.emit": "qdq", "odimo.report": '{"layers":[]}'}
DOC = "DIANA, latency: 1,018 cycles (0.004 ms @ 260 MHz), 1.00× vs All-8bit"


def props(entries) -> list[tuple[str, str]]:
    return [(e.key, e.value) for e in entries]


def run_annotate(model, notes=NOTES, model_props=PROPS, doc=DOC):
    return run_pure(annotate, model, notes, model_props, doc)


@pytest.fixture(scope="module")
def model():
    return canonical(builders.conv_bn_relu())


def test_metadata_is_written_with_sorted_keys(model) -> None:
    result = run_annotate(model)
    assert result.changed and result.report == {"nodes_annotated": 2}
    conv2 = node(result.model, "conv2")
    assert props(conv2.metadata_props) == [
        ("odimo.channels", "0-3,7"),
        ("odimo.cu", "analog"),
        ("odimo.source_node", "conv2"),
    ]
    assert conv2.doc_string == "conv2 → analog (ternary): 5 of 8 channels"
    assert props(node(result.model, "relu1").metadata_props) == [("odimo.cu", "host")]
    assert node(result.model, "relu1").doc_string == ""
    assert props(result.model.metadata_props) == sorted(PROPS.items())
    assert result.model.doc_string == DOC


def test_annotations_leave_the_function_and_the_graph_alone(model) -> None:
    result = run_annotate(model)
    assert_same_outputs(model, result.model)
    stripped = onnx.ModelProto()
    stripped.CopyFrom(result.model)
    for n in stripped.graph.node:
        n.ClearField("metadata_props")
        n.ClearField("doc_string")
    stripped.ClearField("metadata_props")
    stripped.ClearField("doc_string")
    assert stripped.SerializeToString() == model.SerializeToString()


def test_onnxruntime_sees_the_model_metadata(model) -> None:
    result = run_annotate(model)
    assert session(result.model).get_modelmeta().custom_metadata_map == PROPS


def test_existing_metadata_is_kept_and_updated(model) -> None:
    first = run_annotate(model).model
    again = run_annotate(
        first, {"conv2": NodeNote({"odimo.cu": "digital", "odimo.cycles": "12"})}, {"odimo.seed": "0"}, DOC
    ).model
    assert props(node(again, "conv2").metadata_props) == [
        ("odimo.channels", "0-3,7"),
        ("odimo.cu", "digital"),
        ("odimo.cycles", "12"),
        ("odimo.source_node", "conv2"),
    ]
    assert node(again, "conv2").doc_string == NOTES["conv2"].doc  # a note without doc keeps the old one
    assert dict(props(again.metadata_props)) == {**PROPS, "odimo.seed": "0"}


def test_nothing_to_write_declines(model) -> None:
    result = run_annotate(model, {}, {}, model.doc_string)
    assert not result.changed and result.report == {"nodes_annotated": 0}
    assert result.model.SerializeToString() == model.SerializeToString()


def test_producer_names_the_writer_for_onnxruntime(model) -> None:
    assert model.producer_name != "odimo"
    result = run_pure(annotate, model, {}, {}, model.doc_string, ("odimo", "0.1.0"))
    assert result.changed
    assert session(result.model).get_modelmeta().producer_name == "odimo"
    assert (result.model.producer_name, result.model.producer_version) == ("odimo", "0.1.0")
