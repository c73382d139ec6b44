"""qdq_weights: integer codes + DequantizeLinear(axis=0) per layer; equals the dequantized float model.

Tensor names follow onnxruntime's (`W_quantized`, `W_scale`, `W_zero_point`, `W_DequantizeLinear_Output`);
ternary codes are INT2 at opset 25.
"""

from __future__ import annotations

import builders
import ml_dtypes
import numpy as np
import onnx
import pytest
from pass_helpers import (
    assert_same_outputs,
    canonical,
    check,
    darkside_chain,
    initializer,
    mapping_of,
    node,
    outputs,
    plan_of,
    prefix,
    run_pure,
)

from odimo.compiler.partition import partition
from odimo.compiler.search_stage import initial_substitutes
from odimo.ir.errors import PassError
from odimo.passes.qdq_weights import qdq_weights
from odimo.passes.set_weights import set_weights
from odimo.targets.quantization import WeightFormat, quantize

LAYERS = ("conv1", "conv2", "fc")


def fake_quantized(model, fmt: WeightFormat):
    """The float model holding dequantized weights, and each layer's per-row step."""
    quantized = {name: quantize(initializer(model, f"{name}.weight"), fmt) for name in LAYERS}
    float_model = set_weights(model, {name: q.dequantize() for name, q in quantized.items()}).model
    return float_model, quantized


def to_qdq(model, steps):
    return run_pure(qdq_weights, model, steps)


@pytest.fixture(scope="module")
def model():
    return canonical(builders.conv_bn_relu())


@pytest.mark.parametrize("fmt", [WeightFormat.INT8_POW2, WeightFormat.TERNARY, WeightFormat.INT8_CHANNEL])
def test_qdq_model_equals_the_float_model_with_dequantized_weights(model, fmt: WeightFormat) -> None:
    float_model, quantized = fake_quantized(model, fmt)
    result = to_qdq(float_model, {name: q.step for name, q in quantized.items()})
    assert_same_outputs(float_model, result.model)
    assert result.changed and result.report == {"weights_quantized": 3, "weights_int2": 0}
    for name, q in quantized.items():
        codes = initializer(result.model, f"{name}.weight_quantized")
        assert codes.dtype == np.int8
        np.testing.assert_array_equal(codes, q.codes)
        np.testing.assert_array_equal(initializer(result.model, f"{name}.weight_scale"), q.step)
        np.testing.assert_array_equal(
            initializer(result.model, f"{name}.weight_zero_point"), np.zeros(len(q.step), np.int8)
        )
    if fmt is WeightFormat.TERNARY:
        assert set(np.unique(initializer(result.model, "conv2.weight_quantized"))) <= {-1, 0, 1}


def test_int2_ternary_codes_compute_the_int8_form_exactly(model) -> None:
    """At opset 25 the same ternary codes as INT2 (a quarter of the bytes) give the int8 model's outputs."""
    float_model, quantized = fake_quantized(model, WeightFormat.TERNARY)
    steps = {name: q.step for name, q in quantized.items()}
    at25 = onnx.version_converter.convert_version(float_model, 25)
    at25.ir_version = 13
    int8 = to_qdq(at25, steps).model
    int2 = run_pure(qdq_weights, at25, steps, frozenset(LAYERS))
    assert int2.report == {"weights_quantized": 3, "weights_int2": 3}
    check(int2.model)
    for name, q in quantized.items():
        stored = next(i for i in int2.model.graph.initializer if i.name == f"{name}.weight_quantized")
        assert stored.data_type == onnx.TensorProto.INT2
        assert len(stored.raw_data) == -(-q.codes.size // 4)  # four codes per byte
        np.testing.assert_array_equal(initializer(int2.model, f"{name}.weight_quantized").astype(np.int8), q.codes)
        assert initializer(int2.model, f"{name}.weight_zero_point").dtype == ml_dtypes.int2
    for ref, new in zip(outputs(int8, 0), outputs(int2.model, 0), strict=True):
        np.testing.assert_array_equal(new, ref)


def test_each_layer_reads_its_own_dequantize_node(model) -> None:
    float_model, quantized = fake_quantized(model, WeightFormat.INT8_POW2)
    result = to_qdq(float_model, {name: q.step for name, q in quantized.items()})
    names = [n.name for n in result.model.graph.node]
    assert len(names) == len(model.graph.node) + 3
    for name in LAYERS:
        dequant = node(result.model, f"{name}/dequant")
        assert dequant.op_type == "DequantizeLinear" and names.index(f"{name}/dequant") == names.index(name) - 1
        assert [a.i for a in dequant.attribute if a.name == "axis"] == [0]
        w = f"{name}.weight"
        assert list(dequant.input) == [f"{w}_quantized", f"{w}_scale", f"{w}_zero_point"]
        assert node(result.model, name).input[1] == dequant.output[0] == f"{w}_DequantizeLinear_Output"
    assert not {f"{name}.weight" for name in LAYERS} & {i.name for i in result.model.graph.initializer}


@pytest.mark.parametrize(
    ("target", "layers", "sublayers"),
    [
        (
            "diana",
            {
                "conv1": prefix({"analog": 8}),
                "conv2": ("analog", "digital") * 4,
                "fc": prefix({"digital": 1, "analog": 3}),
            },
            ["conv1/analog", "conv2/digital", "conv2/analog", "fc/digital", "fc/analog"],
        ),
        (
            "darkside",
            {"c1": prefix({"cluster": 5, "dwe": 3}), "c2": prefix({"dwe": 8})},
            ["stem/cluster", "c1/cluster", "c1/dwe", "c2/dwe", "fc/cluster"],
        ),
    ],
)
def test_partitioned_model_gets_one_dequantize_per_sublayer(target: str, layers, sublayers: list[str]) -> None:
    model = canonical(builders.conv_bn_relu() if target == "diana" else darkside_chain())
    plan = plan_of(model, target)
    mapping = mapping_of(plan, layers)
    emitted = partition(model, plan, mapping, "qdq", initial_substitutes(model, plan, mapping))
    check(emitted.qdq)
    assert_same_outputs(emitted.partitioned, emitted.qdq)
    assert sorted(n.name for n in emitted.qdq.graph.node if n.op_type == "DequantizeLinear") == sorted(
        f"{s}/dequant" for s in sublayers
    )
    for sub in sublayers:
        weight = node(emitted.qdq, sub).input[1]
        codes = weight.replace("_DequantizeLinear_Output", "_quantized")
        assert weight.endswith("_DequantizeLinear_Output") and initializer(emitted.qdq, codes).dtype == np.int8


def test_float_weights_are_refused(model) -> None:
    steps = {"conv2": quantize(initializer(model, "conv2.weight"), WeightFormat.INT8_POW2).step}
    with pytest.raises(PassError, match="weights of 'conv2' are not integer multiples of their step") as err:
        qdq_weights(model, steps)
    assert err.value.code == "E320"


def test_codes_beyond_int8_are_refused(model) -> None:
    float_model, quantized = fake_quantized(model, WeightFormat.INT8_POW2)
    with pytest.raises(PassError, match="weights of 'conv1' are not integer multiples"):
        qdq_weights(float_model, {"conv1": quantized["conv1"].step / 4})  # codes up to 4 * 127


def test_no_steps_declines(model) -> None:
    result = to_qdq(model, {})
    assert not result.changed and result.report == {"weights_quantized": 0, "weights_int2": 0}
    assert result.model.SerializeToString() == model.SerializeToString()
