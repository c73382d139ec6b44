"""mix_substitutes: the Darkside reference y = m·conv(x, W) + (1 − m)·dwconv(x, W_dw).

Oracle: a depthwise conv equals a full conv whose weight is zero off the diagonal, so the mixed
model must equal the original with rows of dwe channels replaced by W_dw on the diagonal.
"""

from __future__ import annotations

import numpy as np
import pytest
from pass_helpers import assert_same_outputs, canonical, check, darkside_chain, initializer, plan_of, prefix

from odimo.ir.records import Substitute
from odimo.passes.mix_substitutes import diagonal_substitutes, mix_substitutes
from odimo.passes.set_weights import set_weights

LAYERS = ("c1", "c2")


def mix(model, assignment, substitutes):
    before = model.SerializeToString()
    result = mix_substitutes(model, assignment, substitutes)
    assert model.SerializeToString() == before, "the input model was modified"
    check(result.model)
    return result


def dense_equivalent(model, assignment, substitutes):
    """The original model with each dwe row c of a mixed layer set to W_dw[c] at input channel c."""
    weights, biases = {}, {}
    for name, sub in substitutes.items():
        weight, bias = initializer(model, f"{name}.weight").copy(), initializer(model, f"{name}.bias").copy()
        for c, cu in enumerate(assignment[name]):
            if cu == sub.cu:
                weight[c] = 0
                weight[c, c] = sub.weight[c, 0]
                bias[c] = sub.bias[c]
        weights[name], biases[name] = weight, bias
    return set_weights(model, weights, biases).model


@pytest.fixture(scope="module")
def chain():
    return canonical(darkside_chain())


def test_all_cluster_keeps_the_function(chain) -> None:
    assignment = {name: prefix({"cluster": 8}) for name in LAYERS}
    result = mix(chain, assignment, diagonal_substitutes(chain, list(LAYERS), "dwe"))
    assert_same_outputs(chain, result.model)
    assert result.changed and result.report == {"layers_mixed": 2}
    np.testing.assert_array_equal(initializer(result.model, "c1/mask"), np.ones((1, 8, 1, 1), np.float32))
    np.testing.assert_array_equal(initializer(result.model, "c1/mask_complement"), np.zeros((1, 8, 1, 1), np.float32))


def test_mixed_layer_nodes_and_initializers(chain) -> None:
    assignment = {"c1": prefix({"cluster": 5, "dwe": 3}), "c2": prefix({"cluster": 8})}
    result = mix(chain, assignment, diagonal_substitutes(chain, ["c1"], "dwe"))
    assert result.report == {"layers_mixed": 1}
    nodes = {n.name: n for n in result.model.graph.node}
    assert len(result.model.graph.node) == len(chain.graph.node) + 4
    assert [nodes[n].op_type for n in ("c1", "c1/dw", "c1/mask_conv", "c1/mask_dw", "c1/mix")] == [
        "Conv",
        "Conv",
        "Mul",
        "Mul",
        "Add",
    ]
    assert list(nodes["c1"].output) == ["c1/conv"] and list(nodes["c1/mix"].output) == ["c1"]
    assert next(a.i for a in nodes["c1/dw"].attribute if a.name == "group") == 8
    np.testing.assert_array_equal(initializer(result.model, "c1/mask").reshape(-1), [1, 1, 1, 1, 1, 0, 0, 0])
    assert initializer(result.model, "c1/dw/weight").shape == (8, 1, 3, 3)


@pytest.mark.parametrize("dwe", [0, 3, 8])
def test_mixed_model_equals_the_dense_diagonal_model(chain, dwe: int) -> None:
    assignment = {name: prefix({"cluster": 8 - dwe, "dwe": dwe}) for name in LAYERS}
    substitutes = diagonal_substitutes(chain, list(LAYERS), "dwe")
    result = mix(chain, assignment, substitutes)
    assert_same_outputs(dense_equivalent(chain, assignment, substitutes), result.model)


def test_trained_substitute_weights_are_used(chain) -> None:
    rng = np.random.default_rng(1)
    substitutes = {
        "c2": Substitute("dwe", rng.normal(size=(8, 1, 3, 3)).astype(np.float32), rng.normal(size=8).astype(np.float32))
    }
    assignment = {"c1": prefix({"cluster": 8}), "c2": prefix({"cluster": 1, "dwe": 7})}
    result = mix(chain, assignment, substitutes)
    assert_same_outputs(dense_equivalent(chain, assignment, substitutes), result.model)


def test_diagonal_substitute_is_the_kernel_from_channel_c_to_channel_c(chain) -> None:
    sub = diagonal_substitutes(chain, ["c1"], "dwe")["c1"]
    weight = initializer(chain, "c1.weight")
    assert sub.cu == "dwe" and sub.weight.shape == (8, 1, 3, 3)
    np.testing.assert_array_equal(sub.weight[:, 0], weight[np.arange(8), np.arange(8)])
    np.testing.assert_array_equal(sub.bias, initializer(chain, "c1.bias"))


def test_no_substitutes_declines(chain) -> None:
    plan = plan_of(chain, "darkside")
    result = mix(chain, {p.name: prefix({"dwe": 8}) for p in plan.searchable}, {})
    assert not result.changed and result.report == {"layers_mixed": 0}
    assert result.model.SerializeToString() == chain.SerializeToString()
