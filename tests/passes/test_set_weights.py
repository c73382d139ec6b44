"""set_weights: new values into existing layers; same nodes, names, opset."""

from __future__ import annotations

import builders
import numpy as np
import pytest
from pass_helpers import ATOL, RTOL, assert_same_outputs, canonical, initializer, node, outputs, run_pure, tied_branches

from odimo.ir.errors import PassError
from odimo.passes.set_weights import set_weights


def write(model, weights, biases=None, constants=None):
    return run_pure(
        set_weights, model, weights, {} if biases is None else biases, {} if constants is None else constants
    )


@pytest.fixture(scope="module")
def model():
    return canonical(builders.conv_bn_relu())


def test_same_values_keep_names_and_function(model) -> None:
    weights = {name: initializer(model, f"{name}.weight") for name in ("conv1", "conv2", "fc")}
    result = write(model, weights, {"fc": initializer(model, "fc.bias")})
    assert_same_outputs(model, result.model)
    assert result.changed and result.report == {"weights_set": 3, "biases_set": 1, "constants_set": 0}
    assert [i.name for i in result.model.graph.initializer] == [i.name for i in model.graph.initializer]
    assert [list(n.input) for n in result.model.graph.node] == [list(n.input) for n in model.graph.node]
    assert result.model.opset_import == model.opset_import and result.model.ir_version == model.ir_version


def test_doubling_the_last_layer_doubles_the_output(model) -> None:
    result = write(model, {"fc": 2 * initializer(model, "fc.weight")}, {"fc": 2 * initializer(model, "fc.bias")})
    np.testing.assert_allclose(outputs(result.model)[0], 2 * outputs(model)[0], rtol=RTOL, atol=ATOL)
    np.testing.assert_array_equal(initializer(result.model, "fc.weight"), 2 * initializer(model, "fc.weight"))


def test_shared_weight_gets_its_own_initializer() -> None:
    model = canonical(tied_branches())
    new = np.full((8, 3, 3, 3), 0.5, np.float32)
    result = write(model, {"conv_b": new})
    assert node(result.model, "conv_b").input[1] == "conv_b/weight"
    np.testing.assert_array_equal(initializer(result.model, "conv_b/weight"), new)
    np.testing.assert_array_equal(initializer(result.model, "conv_a.weight"), initializer(model, "conv_a.weight"))


def test_missing_bias_is_added() -> None:
    source = builders.conv_bn_relu()
    del node(source, "conv2").input[2]
    model = canonical(source)
    result = write(model, {}, {"conv2": np.zeros(8, np.float32)})
    assert list(node(result.model, "conv2").input) == ["relu1", "conv2.weight", "conv2/bias"]
    assert_same_outputs(model, result.model)  # a zero bias is no bias
    assert result.report == {"weights_set": 0, "biases_set": 1, "constants_set": 0}


def test_constants_are_overwritten_by_initializer_name() -> None:
    model = canonical(builders.per_channel_constants())
    scale = initializer(model, "scale.value")
    result = write(model, {}, {}, {"scale.value": scale, "shift.value": np.zeros_like(scale)})
    assert result.changed and result.report == {"weights_set": 0, "biases_set": 0, "constants_set": 2}
    np.testing.assert_array_equal(initializer(result.model, "shift.value"), np.zeros_like(scale))
    same = write(model, {}, {}, {"shift.value": initializer(model, "shift.value")})
    assert_same_outputs(model, same.model)


def test_unknown_or_misshapen_constant_is_refused() -> None:
    model = canonical(builders.per_channel_constants())
    with pytest.raises(PassError, match=r"no initializer 'scale.value' of shape \(8,\) to overwrite"):
        set_weights(model, {}, {}, {"scale.value": np.ones(8, np.float32)})
    with pytest.raises(PassError, match="no initializer 'bn1.scale'"):
        set_weights(model, {}, {}, {"bn1.scale": np.ones(8, np.float32)})


def test_wrong_shape_is_refused(model) -> None:
    with pytest.raises(
        PassError, match=r"new weight of 'conv2' has shape \(8, 8, 1, 1\), the graph's \(8, 8, 3, 3\)"
    ) as err:
        set_weights(model, {"conv2": np.zeros((8, 8, 1, 1), np.float32)})
    assert err.value.code == "E320"
    with pytest.raises(PassError, match=r"new bias of 'fc' has shape \(5,\)"):
        set_weights(model, {}, {"fc": np.zeros(5, np.float32)})


def test_unknown_node_is_refused(model) -> None:
    with pytest.raises(PassError, match="no node named 'conv9'"):
        set_weights(model, {"conv9": np.zeros((8, 8, 3, 3), np.float32)})


def test_nothing_to_write_declines(model) -> None:
    result = write(model, {})
    assert not result.changed and result.report == {"weights_set": 0, "biases_set": 0, "constants_set": 0}
    assert result.model.SerializeToString() == model.SerializeToString()
