"""insert_act_quant, requant_outputs and qdq_bias: standard Q/DQ activations that runtimes integerize.

The graph is residual_add on DIANA, split per CU, with the QDQ weights of the untrained formats:

    x -> stem -> relu -+-> conv1 -> relu1 -> conv2 -> add -> relu2 -> gap -> flatten -> fc
                       +---------------------------------^

Every layer quantizes its input (scale 64 for the image, 16 elsewhere). Only conv1's output reaches
nothing but another quantizer (through relu1), so only conv1's sub-layers get a requantizing Q/DQ.
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
from odimo.ir.records import ActQuant, Rounding
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


@pytest.fixture(scope="module")
def qdq() -> onnx.ModelProto:
    model = canonical(builders.residual_add())
    plan = plan_of(model, "diana")
    mapping = mapping_of(plan, {layer: prefix(counts) for layer, counts in SPLIT.items()})
    return partition(model, plan, mapping, "qdq", {}).qdq


def quantizers(model: onnx.ModelProto, rounding: Rounding = Rounding.HALF_EVEN) -> dict[str, ActQuant]:
    return {layer: ActQuant(_layer_input(model, layer), 0.0, 127 / s, s, rounding) for layer, s in SCALES.items()}


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


def test_onnxruntime_integerizes_the_requantized_sublayers(qdq, tmp_path) -> None:
    model = qdq_bias(requant_outputs(_on_accumulator_grid(insert_act_quant(qdq, quantizers(qdq)).model)).model).model
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    fused = [n.name for n in onnx.load(options.optimized_model_filepath).graph.node if n.op_type == "QLinearConv"]
    assert len(fused) == 2 and all(name.startswith(("conv1/digital", "conv1/analog")) for name in fused), fused
