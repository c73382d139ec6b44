"""insert_act_quant, requant_outputs and qdq_bias: standard Q/DQ activations that runtimes integerize.

The graph is residual_add on DIANA, split per CU, with the QDQ weights of the untrained formats:

    x -> stem -> relu -+-> conv1 -> relu1 -> conv2 -> add -> relu2 -> gap -> flatten -> fc
                       +---------------------------------^

Every layer quantizes its input (scale 64 for the image, 16 elsewhere). Without the Add's inputs
quantized, only conv1's output reaches nothing but another quantizer (through relu1), so only conv1's
sub-layers get a requantizing Q/DQ. As trained on DIANA, the Add reads conv2's output through its own
signed quantizer (scale 8) and the identity path through conv1's (ADD_INPUTS): then every Conv
sub-layer's output is quantized, and onnxruntime runs each one as a QLinearConv.
"""

from __future__ import annotations

import builders
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from pass_helpers import canonical, mapping_of, node, outputs, plan_of, prefix, run_pure

from odimo.compiler.partition import partition
from odimo.ir import names
from odimo.ir.graph import GraphIndex
from odimo.ir.records import ActQuant, AddInputQuant, Rounding
from odimo.ir.verify import probe_inputs, run, session
from odimo.passes.act_quant import insert_act_quant
from odimo.passes.qdq_bias import qdq_bias
from odimo.passes.requant_outputs import requant_outputs
from odimo.retrain.kernels import EAGER_FORWARD

SPLIT = {
    "stem": {"digital": 3, "analog": 5},
    "conv1": {"digital": 2, "analog": 6},
    "conv2": {"digital": 8},
    "fc": {"digital": 4},
}
SCALES = {"stem": 64.0, "conv1": 16.0, "conv2": 16.0, "fc": 16.0}
ADD_SCALE = 8.0  # conv2's output, signed, as the Add's input 0 reads it
CONV_SUBLAYERS = {"stem/digital", "stem/analog", "conv1/digital", "conv1/analog", "conv2/digital"}


@pytest.fixture(scope="module")
def qdq() -> onnx.ModelProto:
    model = canonical(builders.residual_add())
    plan = plan_of(model, "diana")
    mapping = mapping_of(plan, {layer: prefix(counts) for layer, counts in SPLIT.items()})
    return partition(model, plan, mapping, "qdq", {}).qdq


def quantizers(model: onnx.ModelProto, rounding: Rounding = Rounding.HALF_EVEN) -> dict[str, ActQuant]:
    return {layer: ActQuant(_layer_input(model, layer), 0.0, 127 / s, s, rounding) for layer, s in SCALES.items()}


def add_inputs(quant: dict[str, ActQuant], rounding: Rounding = Rounding.HALF_EVEN) -> list[AddInputQuant]:
    """add's input 0 (conv2) through its own signed quantizer, input 1 (the identity) through conv1's."""
    own = ActQuant("conv2", -63 / ADD_SCALE, 63 / ADD_SCALE, ADD_SCALE, rounding)
    return [AddInputQuant("add", 0, own), AddInputQuant("add", 1, quant["conv1"], shares="conv1")]


def _layer_input(model: onnx.ModelProto, layer: str) -> str:
    return next(
        n.input[0] for n in model.graph.node if names.belongs_to(n.name, layer) and n.op_type in ("Conv", "Gemm")
    )


def exposed(model: onnx.ModelProto, values: list[str]) -> onnx.ModelProto:
    """`model` with `values` as extra graph outputs."""
    view = onnx.ModelProto()
    view.CopyFrom(model)
    view.graph.output.extend(onnx.helper.make_tensor_value_info(v, onnx.TensorProto.FLOAT, None) for v in values)
    return view


@pytest.mark.parametrize("rounding", list(Rounding))
def test_the_emitted_quantizer_computes_the_trained_torch_quantizer_bit_for_bit(qdq, rounding: Rounding) -> None:
    quant = quantizers(qdq, rounding)
    result = run_pure(insert_act_quant, qdq, quant)
    ops = {n.op_type for n in result.model.graph.node if names.is_act_quant(n.name)}
    assert ops == (
        {"Clip", "QuantizeLinear", "DequantizeLinear"}
        if rounding is Rounding.HALF_EVEN
        else {"Clip", "Mul", "Add", "Floor", "Div"}
    )
    layer = "conv1"
    q = quant[layer]
    quantized = names.act_quant_output(q.input, layer)
    before, after = run(session(exposed(result.model, [q.input, quantized])), probe_inputs(qdq, 0))[1:]
    expected = EAGER_FORWARD[rounding](
        torch.from_numpy(before), torch.tensor(q.low), torch.tensor(q.clip), torch.tensor(q.scale)
    ).numpy()
    np.testing.assert_array_equal(after, expected)
    codes = after * q.scale
    assert np.array_equal(codes, np.round(codes)) and codes.min() >= 0 and codes.max() <= 127


@pytest.mark.parametrize("rounding", list(Rounding))
def test_the_residual_add_reads_what_the_trained_torch_quantizers_compute_bit_for_bit(qdq, rounding: Rounding) -> None:
    quant = quantizers(qdq, rounding)
    result = run_pure(insert_act_quant, qdq, quant, add_inputs(quant, rounding))
    assert result.report == {"act_quant_chains": 5, "add_inputs_quantized": 2}  # 4 layers + the Add's own
    add = node(result.model, "add")
    shared = names.act_quant_output("stem_relu", "conv1")
    own = names.act_quant_output("conv2", names.add_input("add", 0))
    assert list(add.input) == [own, shared]  # the identity path reads conv1's chain itself
    assert node(result.model, "add/input0/act/clip").input[0] == "conv2"
    before_own, before_shared, after_own, after_shared, total = run(
        session(exposed(result.model, ["conv2", "stem_relu", own, shared, "add"])), probe_inputs(qdq, 0)
    )[1:]
    for before, after, q in (
        (before_own, after_own, add_inputs(quant, rounding)[0].quant),
        (before_shared, after_shared, quant["conv1"]),
    ):
        expected = EAGER_FORWARD[rounding](
            torch.from_numpy(before), torch.tensor(q.low), torch.tensor(q.clip), torch.tensor(q.scale)
        ).numpy()
        np.testing.assert_array_equal(after, expected)
    np.testing.assert_array_equal(total, after_own + after_shared)
    codes = after_own * ADD_SCALE
    assert np.array_equal(codes, np.round(codes)) and codes.min() >= -63 and codes.max() <= 63 and codes.min() < 0


def test_a_chain_goes_before_its_first_reader_so_the_graph_stays_sorted() -> None:
    """The Add comes before the layer whose quantizer its identity path shares (conv_b): the shared
    chain is inserted before the Add, and conv_b reads it later."""
    g = builders.GraphBuilder()
    s = g.relu(g.conv("x", 8, "stem"), "stem_relu")
    t = g.binary("Add", g.conv(s, 8, "conv_a"), s, "add")
    u = g.conv(s, 8, "conv_b")
    model = canonical(g.build(g.gemm(g.flatten(g.gap(g.concat([t, u], "concat"), "gap"), "flatten"), 4, "fc")))
    layers = {"stem": "x", "conv_a": s, "conv_b": s, "fc": "flatten"}
    quant = {layer: ActQuant(value, 0.0, 127 / 16, 16.0) for layer, value in layers.items()}
    own = ActQuant("conv_a", -63 / 8, 63 / 8, 8.0)
    entries = [AddInputQuant("add", 0, own), AddInputQuant("add", 1, quant["conv_b"], shares="conv_b")]
    result = run_pure(insert_act_quant, model, quant, entries)
    order = [n.name for n in result.model.graph.node]
    assert order.index("conv_b/act/dequant") < order.index("add") < order.index("conv_b")
    assert node(result.model, "add").input[1] == node(result.model, "conv_b").input[0]
    onnx.checker.check_model(result.model, full_check=True)  # every value defined before it is read


def test_qdq_names_follow_onnxruntime_and_codes_are_7_bit_uint8(qdq) -> None:
    quant = quantizers(qdq)
    model = insert_act_quant(qdq, quant).model
    q = quant["conv1"]
    value = names.act_quant_output(q.input, "conv1")
    clip, quantize, dequantize = (node(model, names.part("conv1/act", n)) for n in ("clip", "quant", "dequant"))
    assert clip.output[0] == quantize.input[0] == f"{value}_QuantizeLinear_Input"
    assert dequantize.output[0] == value and quantize.output[0] == dequantize.input[0]
    index = GraphIndex.of(model.graph)
    assert index.array(quantize.input[1]) == np.float32(1 / 16) and index.array(quantize.input[2]).dtype == np.uint8


def test_only_outputs_that_reach_quantizers_alone_are_requantized_and_nothing_changes(qdq) -> None:
    quantized = insert_act_quant(qdq, quantizers(qdq)).model
    result = run_pure(requant_outputs, quantized)
    assert result.report == {"outputs_requantized": 2}
    requantized = {n.name for n in result.model.graph.node if n.name.endswith("/requant/quant")}
    assert requantized == {"conv1/digital/requant/quant", "conv1/analog/requant/quant"}
    for before, after in zip(outputs(quantized, 0), outputs(result.model, 0), strict=True):
        np.testing.assert_array_equal(after, before)  # exact: the later quantizer sees the same codes


def test_with_the_add_inputs_quantized_every_conv_sublayer_is_requantized_and_nothing_changes(qdq) -> None:
    quant = quantizers(qdq)
    quantized = insert_act_quant(qdq, quant, add_inputs(quant)).model
    result = run_pure(requant_outputs, quantized)
    suffix = "/requant/quant"
    requantized = {n.name.removesuffix(suffix) for n in result.model.graph.node if n.name.endswith(suffix)}
    assert requantized == CONV_SUBLAYERS and result.report == {"outputs_requantized": 5}
    index = GraphIndex.of(result.model.graph)
    scale = index.array(node(result.model, "conv2/digital/requant/quant").input[1])
    assert scale == np.float32(1 / ADD_SCALE)  # conv2 is requantized to the Add's own quantizer
    assert index.array(node(result.model, "stem/digital/requant/quant").input[1]) == np.float32(1 / 16)  # conv1's
    for before, after in zip(outputs(quantized, 0), outputs(result.model, 0), strict=True):
        np.testing.assert_array_equal(after, before)


def test_an_add_input_with_another_scale_than_its_sibling_consumer_declines(qdq) -> None:
    """The stem's output reaches conv1's quantizer and, through an own quantizer of another scale,
    the Add: two grids, so no one Q/DQ pair is exact and the stem stays float."""
    quant = quantizers(qdq)
    other = ActQuant("stem_relu", 0.0, 127 / 32, 32.0)
    entries = [add_inputs(quant)[0], AddInputQuant("add", 1, other)]
    result = requant_outputs(insert_act_quant(qdq, quant, entries).model)
    requantized = {n.name for n in result.model.graph.node if n.name.endswith("/requant/quant")}
    assert not any(name.startswith("stem/") for name in requantized)
    assert {"conv1/digital/requant/quant", "conv2/digital/requant/quant"} <= requantized


def test_a_model_without_activation_quantizers_is_left_alone(qdq) -> None:
    assert not requant_outputs(qdq).changed
    assert qdq_bias(qdq).report == {"biases_quantized": 0, "biases_float": 0}


def _on_accumulator_grid(model: onnx.ModelProto) -> onnx.ModelProto:
    """`model` with each quantized layer's float bias rounded to input scale x weight scale, as trained."""
    grid = onnx.ModelProto()
    grid.CopyFrom(model)
    index = GraphIndex.of(grid.graph)
    for layer in grid.graph.node:
        if layer.op_type not in ("Conv", "Gemm") or len(layer.input) < 3:
            continue
        x_scale = index.array(index.producer[layer.input[0]].input[1])
        w_scale = index.array(index.producer[layer.input[1]].input[1])
        step = (w_scale * x_scale).astype(np.float32)
        bias = index.array(layer.input[2])
        rounded = (np.round(bias / step) * step).astype(np.float32)
        index.initializers[layer.input[2]].CopyFrom(onnx.numpy_helper.from_array(rounded, layer.input[2]))
    return grid


def test_biases_on_the_accumulator_grid_become_int32_and_compute_the_same(qdq) -> None:
    quantized = insert_act_quant(qdq, quantizers(qdq)).model
    assert qdq_bias(quantized).report == {"biases_quantized": 0, "biases_float": 6}  # untrained: off the grid
    grid = _on_accumulator_grid(quantized)
    result = run_pure(qdq_bias, grid)
    assert result.report == {"biases_quantized": 6, "biases_float": 0}
    bias = node(result.model, "conv1/analog/bias/dequant")
    index = GraphIndex.of(result.model.graph)
    assert index.array(bias.input[0]).dtype == np.int32 and bias.input[0].endswith("_quantized")
    for before, after in zip(outputs(grid, 0), outputs(result.model, 0), strict=True):
        np.testing.assert_array_equal(after, before)


def _qlinear_convs(model: onnx.ModelProto, folder, int8_activations: bool = False) -> list[str]:
    """The QLinearConv nodes of onnxruntime's optimized graph (ORT_ENABLE_ALL, saved to disk). On
    x86 onnxruntime fuses int8 (signed) activations only when asked (its default on ARM)."""
    options = ort.SessionOptions()
    if int8_activations:
        options.add_session_config_entry("session.qdqisint8allowed", "1")
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = str(folder / "optimized.onnx")
    ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return [n.name for n in onnx.load(options.optimized_model_filepath).graph.node if n.op_type == "QLinearConv"]


def test_onnxruntime_integerizes_the_requantized_sublayers(qdq, tmp_path) -> None:
    model = qdq_bias(requant_outputs(_on_accumulator_grid(insert_act_quant(qdq, quantizers(qdq)).model)).model).model
    fused = _qlinear_convs(model, tmp_path)
    assert len(fused) == 2 and all(name.startswith(("conv1/digital", "conv1/analog")) for name in fused), fused


def test_with_the_add_inputs_quantized_onnxruntime_integerizes_every_conv_sublayer(qdq, tmp_path) -> None:
    quant = quantizers(qdq)
    quantized = _on_accumulator_grid(insert_act_quant(qdq, quant, add_inputs(quant)).model)
    fused = _qlinear_convs(qdq_bias(requant_outputs(quantized).model).model, tmp_path)
    assert len(fused) == len(CONV_SUBLAYERS), fused
    assert all(any(name.startswith(sub) for name in fused) for sub in CONV_SUBLAYERS), fused


@pytest.mark.parametrize(("step", "requantized"), [(16.0, 2), (0.25, 0)])
def test_a_relu6_whose_bounds_are_codes_is_passed_through_and_nothing_changes(step: float, requantized: int) -> None:
    """MobileNetV2's ReLU6 between two layers: with conv1's input step 1/16, 0 and 6 are codes and the
    stem's sub-layers are requantized exactly; with a step of 4, 6 is not a code and they stay float."""
    model = canonical(builders.relu6_chain())
    plan = plan_of(model, "diana")
    split = {"stem": {"digital": 3, "analog": 5}, "conv1": {"digital": 8}, "fc": {"digital": 4}}
    qdq = partition(model, plan, mapping_of(plan, {k: prefix(v) for k, v in split.items()}), "qdq", {}).qdq
    scales = {"stem": 64.0, "conv1": step, "fc": 16.0}
    quant = {layer: ActQuant(_layer_input(qdq, layer), 0.0, 127 / s, s) for layer, s in scales.items()}
    quantized = insert_act_quant(qdq, quant).model
    result = run_pure(requant_outputs, quantized)
    names_ = {n.name for n in result.model.graph.node if n.name.endswith("/requant/quant")}
    assert len(names_) == requantized and all(n.startswith("stem/") for n in names_)
    for before, after in zip(outputs(quantized, 0), outputs(result.model, 0), strict=True):
        np.testing.assert_array_equal(after, before)


@pytest.mark.parametrize("signed_input", [False, True])
def test_the_requantized_codes_take_the_layer_input_s_type_so_onnxruntime_fuses_it(signed_input, tmp_path) -> None:
    """onnxruntime forms a QLinearConv only when input and output codes have one type: a stem reading
    int8 (signed) codes whose output meets conv1's uint8 quantizer is requantized to int8 (exact:
    that quantizer's Clip drops the negatives), and fuses where int8 activations are (ARM; x86 with
    session.qdqisint8allowed) as it does with uint8 codes."""
    model = canonical(builders.relu6_chain())
    plan = plan_of(model, "diana")
    split = {"stem": {"digital": 3, "analog": 5}, "conv1": {"digital": 8}, "fc": {"digital": 4}}
    qdq = partition(model, plan, mapping_of(plan, {k: prefix(v) for k, v in split.items()}), "qdq", {}).qdq
    scales = {"stem": 64.0, "conv1": 16.0, "fc": 16.0}
    quant = {layer: ActQuant(_layer_input(qdq, layer), 0.0, 127 / s, s) for layer, s in scales.items()}
    if signed_input:
        quant["stem"] = ActQuant(quant["stem"].input, -63 / 64, 63 / 64, 64.0)
    quantized = _on_accumulator_grid(insert_act_quant(qdq, quant).model)
    requantized = run_pure(requant_outputs, quantized).model
    index = GraphIndex.of(requantized.graph)
    code = index.array(node(requantized, "stem/digital/requant/quant").input[2]).dtype
    assert code == (np.int8 if signed_input else np.uint8)
    for before, after in zip(outputs(quantized, 0), outputs(requantized, 0), strict=True):
        np.testing.assert_array_equal(after, before)
    fused = _qlinear_convs(qdq_bias(requantized).model, tmp_path, int8_activations=signed_input)
    assert all(any(name.startswith(sub) for name in fused) for sub in ("stem/digital", "stem/analog")), fused
