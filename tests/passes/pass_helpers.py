"""Shared by the pass tests: canonical inputs, seeded onnxruntime runs, plans and mappings.

A pass test builds its input like the pipeline does (canonicalize, then strict shape inference),
runs one pass, and compares onnxruntime outputs before and after on the seeded probes of
`odimo.ir.verify` (graph optimizations off, so the graph itself is tested).
"""

from __future__ import annotations

from collections.abc import Mapping as AnyMapping

import builders
import numpy as np
import onnx
from builders import GraphBuilder
from onnx import numpy_helper

from odimo.compiler.canonicalize import canonicalize
from odimo.ir.assignment import Assignment
from odimo.ir.verify import probe_inputs, run, session
from odimo.targets import get_target
from odimo.targets.mapping import validate_mapping
from odimo.targets.plan import Policy, TargetPlan, plan_for_target

# STYLE.md §8: float32 before/after tolerance of a pass that claims to keep the function.
RTOL, ATOL = 1e-5, 1e-6


def canonical(model: onnx.ModelProto) -> onnx.ModelProto:
    """`model` as the passes receive it: canonical and strictly shape-inferred."""
    model, _ = canonicalize(model)
    return onnx.shape_inference.infer_shapes(model, strict_mode=True)


def darkside_chain() -> onnx.ModelProto:
    """x (3 ch) -> stem (3x3, 3->8) -> relu -> c1 (3x3, 8->8) -> relu -> c2 (3x3, 8->8, stride 2) -> relu
    -> gap -> flatten -> fc

    c1 and c2 are Darkside-searchable (3x3, c_in == c_out, group 1); stem and fc are cluster-only.
    """
    g = GraphBuilder(seed=3)
    y = g.relu(g.conv("x", 8, "stem"), "stem_relu")
    y = g.relu(g.conv(y, 8, "c1"), "relu1")
    y = g.relu(g.conv(y, 8, "c2", stride=2), "relu2")
    return g.build(g.gemm(g.flatten(g.gap(y, "gap"), "flatten"), 4, "fc"))


def host_branch_add() -> onnx.ModelProto:
    """x -> conv_a (3x3) ---------------+-> add -> relu -> gap -> flatten -> fc
       x -> dilated (3x3, dilation 2) --+

    On DIANA the dilated conv runs on the host, so the Add's group has one searchable producer: it
    is free, and conv_a's permutation must reach the dilated conv's weight rows and bias too.
    """
    g = GraphBuilder(seed=5)
    a = g.conv("x", 8, "conv_a")
    d = g.conv("x", 8, "dilated", pad=2)
    g.nodes[-1].attribute.append(onnx.helper.make_attribute("dilations", [2, 2]))
    g.shapes[d] = g.shapes[a]  # GraphBuilder does not model dilation: same size as conv_a
    y = g.relu(g.binary("Add", a, d, "add"), "relu")
    return g.build(g.gemm(g.flatten(g.gap(y, "gap"), "flatten"), 4, "fc"))


def tied_branches() -> onnx.ModelProto:
    """builders.split_branches with conv_b reading conv_a's weight and bias (tied, as torch exports
    `conv_b.weight = conv_a.weight`): x -> conv_a -+-> concat -> split -> conv_l, conv_r -> add -> ...
                                                x -> conv_b -+ (same initializers)"""
    model = builders.split_branches()
    conv_b = next(n for n in model.graph.node if n.name == "conv_b")
    conv_b.input[1], conv_b.input[2] = "conv_a.weight", "conv_a.bias"
    return model


def outputs(model: onnx.ModelProto, seed: int = 0) -> list[np.ndarray]:
    """onnxruntime outputs of `model` on 8 seeded probes."""
    return run(session(model), probe_inputs(model, seed))


def assert_same_outputs(reference: onnx.ModelProto, candidate: onnx.ModelProto, seed: int = 0) -> None:
    for ref, new in zip(outputs(reference, seed), outputs(candidate, seed), strict=True):
        np.testing.assert_allclose(new, ref, rtol=RTOL, atol=ATOL)


def check(model: onnx.ModelProto) -> None:
    onnx.checker.check_model(model, full_check=True)


def run_pure(pass_fn, model: onnx.ModelProto, *args, **kwargs):
    """Run a pass, assert it left its input untouched (STYLE §2) and that its output checks."""
    before = model.SerializeToString()
    result = pass_fn(model, *args, **kwargs)
    assert model.SerializeToString() == before, "the input model was modified"
    check(result.model)
    return result


def plan_of(model: onnx.ModelProto, target: str) -> TargetPlan:
    return plan_for_target(model, get_target(target))


def mapping_of(plan: TargetPlan, searchable: AnyMapping[str, tuple[str, ...]]) -> Assignment:
    """A validated mapping: `searchable` gives the CUs of searched layers, fixed layers are implied."""
    target = plan.target
    return validate_mapping(
        Assignment(target.name, dict(searchable)), plan.analysis.geometries, target, plan.contiguous_layers
    )


def prefix(counts: AnyMapping[str, int]) -> tuple[str, ...]:
    """{'digital': 3, 'analog': 5} -> 3 x digital then 5 x analog."""
    return tuple(cu for cu, n in counts.items() for _ in range(n))


def random_mapping(plan: TargetPlan, rng: np.random.Generator) -> Assignment:
    """Any CU per channel for a free layer; a random per-CU prefix (CU order) for a contiguous one."""
    layers = {}
    for layer in plan.searchable:
        c_out, cus = layer.layer.geometry.c_out, layer.support.cus
        if layer.policy is Policy.FREE:
            layers[layer.name] = tuple(rng.choice(cus, size=c_out).tolist())
        else:
            cuts = np.sort(rng.integers(0, c_out + 1, size=len(cus) - 1))
            counts = np.diff([0, *cuts, c_out])
            layers[layer.name] = prefix(dict(zip(cus, counts.tolist())))
    return mapping_of(plan, layers)


def initializer(model: onnx.ModelProto, name: str) -> np.ndarray:
    return numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == name))


def node(model: onnx.ModelProto, name: str) -> onnx.NodeProto:
    return next(n for n in model.graph.node if n.name == name)
