"""qdq_weights: integer codes + DequantizeLinear(axis=0) per layer; equals the dequantized float model."""

from __future__ import annotations

import builders
import numpy as np
import pytest
from pass_helpers import (
    assert_same_outputs,
    canonical,
    check,
    darkside_chain,
    initializer,
    mapping_of,
    node,
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
    assert result.changed and result.report == {"weights_quantized": 3}
    for name, q in quantized.items():
        codes = initializer(result.model, f"{name}.weight/q")
        assert codes.dtype == np.int8
        np.testing.assert_array_equal(codes, q.codes)
        np.testing.assert_array_equal(initializer(result.model, f"{name}.weight/scale"), q.step)
        np.testing.assert_array_equal(
            initializer(result.model, f"{name}.weight/zero_point"), np.zeros(len(q.step), np.int8)
        )
    if fmt is WeightFormat.TERNARY:
        assert set(np.unique(initializer(result.model, "conv2.weight/q"))) <= {-1, 0, 1}


def test_each_layer_reads_its_own_dequantize_node(model) -> None:
    float_model, quantized = fake_quantized(model, WeightFormat.INT8_POW2)
    result = to_qdq(float_model, {name: q.step for name, q in quantized.items()})
    names = [n.name for n in result.model.graph.node]
    assert len(names) == len(model.graph.node) + 3
    for name in LAYERS:
        dequant = node(result.model, f"{name}/dequant")
        assert dequant.op_type == "DequantizeLinear" and names.index(f"{name}/dequant") == names.index(name) - 1
        assert [a.i for a in dequant.attribute if a.name == "axis"] == [0]
        assert list(dequant.input) == [f"{name}.weight/q", f"{name}.weight/scale", f"{name}.weight/zero_point"]
        assert node(result.model, name).input[1] == dequant.output[0] == f"{name}.weight/dequantized"
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
        assert (
            weight.endswith("/dequantized")
            and initializer(emitted.qdq, weight.replace("/dequantized", "/q")).dtype == np.int8
        )


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
    assert not result.changed and result.report == {"weights_quantized": 0}
    assert result.model.SerializeToString() == model.SerializeToString()
