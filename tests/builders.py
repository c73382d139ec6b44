"""Tiny ONNX graphs built with onnx.helper, one per coupling kind; each draws its graph.

`GraphBuilder` tracks each value's shape so the fixtures read like the network they describe.
Weights are seeded random; BatchNormalization statistics are random too, so folding is exercised.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


@dataclass
class GraphBuilder:
    """Append nodes to one graph; every method returns the new value's name."""

    channels: int = 3
    size: int = 8
    seed: int = 0
    batch: int | str = "batch"
    nodes: list[onnx.NodeProto] = field(default_factory=list)
    inits: list[onnx.TensorProto] = field(default_factory=list)
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.seed)
        self.shapes["x"] = (self.channels, self.size, self.size)

    def _const(self, name: str, value: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def _node(
        self, op: str, inputs: list[str], name: str, shape: tuple[int, ...], outputs: int = 1, **attrs
    ) -> list[str]:
        outs = [name if k == 0 else f"{name}:{k}" for k in range(outputs)]
        self.nodes.append(helper.make_node(op, inputs, outs, name=name, **attrs))
        for out in outs:
            self.shapes[out] = shape
        return outs

    def conv(
        self, x: str, c_out: int, name: str, k: int = 3, stride: int = 1, group: int = 1, pad: int | None = None
    ) -> str:
        c, h, w = self.shapes[x]
        pad = k // 2 if pad is None else pad
        weight = self.rng.normal(0, (2 / (c // group * k * k)) ** 0.5, (c_out, c // group, k, k)).astype(np.float32)
        bias = self.rng.normal(0, 0.1, c_out).astype(np.float32)
        inputs = [x, self._const(f"{name}.weight", weight), self._const(f"{name}.bias", bias)]
        out_hw = (h + 2 * pad - k) // stride + 1
        return self._node(
            "Conv",
            inputs,
            name,
            (c_out, out_hw, out_hw),
            kernel_shape=[k, k],
            strides=[stride, stride],
            pads=[pad] * 4,
            group=group,
        )[0]

    def bn(self, x: str, name: str) -> str:
        c = self.shapes[x][0]
        params = [
            self.rng.uniform(0.5, 1.5, c),
            self.rng.normal(0, 0.1, c),
            self.rng.normal(0, 0.1, c),
            self.rng.uniform(0.5, 1.5, c),
        ]
        inputs = [x] + [
            self._const(f"{name}.{p}", v.astype(np.float32)) for p, v in zip(("scale", "bias", "mean", "var"), params)
        ]
        return self._node("BatchNormalization", inputs, name, self.shapes[x])[0]

    def unary(self, op: str, x: str, name: str, **attrs) -> str:
        return self._node(op, [x], name, self.shapes[x], **attrs)[0]

    def relu(self, x: str, name: str) -> str:
        return self.unary("Relu", x, name)

    def relu6(self, x: str, name: str) -> str:
        bounds = [
            self._const(f"{name}.min", np.array(0, np.float32)),
            self._const(f"{name}.max", np.array(6, np.float32)),
        ]
        return self._node("Clip", [x, *bounds], name, self.shapes[x])[0]

    def binary(self, op: str, a: str, b: str, name: str) -> str:
        shape = tuple(max(p, q) for p, q in zip(self.shapes[a], self.shapes[b]))
        return self._node(op, [a, b], name, shape)[0]

    def channel_const(self, x: str, op: str, name: str) -> str:
        c = self.shapes[x][0]
        value = self._const(f"{name}.value", self.rng.uniform(0.5, 1.5, (c, 1, 1)).astype(np.float32))
        return self._node(op, [x, value], name, self.shapes[x])[0]

    def concat(self, xs: list[str], name: str) -> str:
        c = sum(self.shapes[x][0] for x in xs)
        return self._node("Concat", xs, name, (c, *self.shapes[xs[0]][1:]), axis=1)[0]

    def split(self, x: str, sizes: list[int], name: str) -> list[str]:
        split = self._const(f"{name}.split", np.array(sizes, dtype=np.int64))
        outs = self._node("Split", [x, split], name, self.shapes[x], outputs=len(sizes), axis=1)
        for out, size in zip(outs, sizes):
            self.shapes[out] = (size, *self.shapes[x][1:])
        return outs

    def slice(self, x: str, start: int, end: int, name: str) -> str:
        inputs = [
            x,
            self._const(f"{name}.starts", np.array([start])),
            self._const(f"{name}.ends", np.array([end])),
            self._const(f"{name}.axes", np.array([1])),
        ]
        return self._node("Slice", inputs, name, (end - start, *self.shapes[x][1:]))[0]

    def gap(self, x: str, name: str) -> str:
        return self._node("GlobalAveragePool", [x], name, (self.shapes[x][0], 1, 1))[0]

    def maxpool(self, x: str, name: str) -> str:
        c, h, w = self.shapes[x]
        return self._node("MaxPool", [x], name, (c, h // 2, w // 2), kernel_shape=[2, 2], strides=[2, 2])[0]

    def flatten(self, x: str, name: str) -> str:
        return self._node("Flatten", [x], name, (int(np.prod(self.shapes[x])),), axis=1)[0]

    def gemm(self, x: str, n: int, name: str) -> str:
        k = self.shapes[x][0]
        inputs = [
            x,
            self._const(f"{name}.weight", self.rng.normal(0, k**-0.5, (n, k)).astype(np.float32)),
            self._const(f"{name}.bias", self.rng.normal(0, 0.1, n).astype(np.float32)),
        ]
        return self._node("Gemm", inputs, name, (n,), transB=1)[0]

    def channel_shuffle(self, x: str, groups: int, name: str) -> str:
        c, h, w = self.shapes[x]
        r1 = self._node(
            "Reshape",
            [x, self._const(f"{name}.shape1", np.array([0, groups, c // groups, h, w]))],
            f"{name}/reshape1",
            (groups, c // groups, h, w),
        )[0]
        t = self._node("Transpose", [r1], f"{name}/transpose", (c // groups, groups, h, w), perm=[0, 2, 1, 3, 4])[0]
        return self._node(
            "Reshape", [t, self._const(f"{name}.shape2", np.array([0, c, h, w]))], f"{name}/reshape2", (c, h, w)
        )[0]

    def build(self, output: str, opset: int = OPSET, ir_version: int = 8) -> onnx.ModelProto:
        inp = helper.make_tensor_value_info("x", TensorProto.FLOAT, [self.batch, *self.shapes["x"]])
        out = helper.make_tensor_value_info(output, TensorProto.FLOAT, [self.batch, *self.shapes[output]])
        graph = helper.make_graph(self.nodes, "test", [inp], [out], self.inits)
        model = helper.make_model(
            graph, opset_imports=[helper.make_operatorsetid("", opset)], producer_name="odimo-tests"
        )
        model.ir_version = ir_version
        onnx.checker.check_model(model, full_check=True)
        return model


def conv_bn_relu() -> onnx.ModelProto:
    """x -> conv1 -> bn1 -> relu -> conv2 -> gap -> flatten -> fc"""
    g = GraphBuilder()
    y = g.relu(g.bn(g.conv("x", 8, "conv1"), "bn1"), "relu1")
    y = g.conv(y, 8, "conv2")
    return g.build(g.gemm(g.flatten(g.gap(y, "gap"), "flatten"), 4, "fc"))


def residual_add() -> onnx.ModelProto:
    """x -> stem -> relu -+-> conv1 -> relu -> conv2 -> add -> relu -> gap -> flatten -> fc
    +------------------------------^ (identity)"""
    g = GraphBuilder()
    s = g.relu(g.conv("x", 8, "stem"), "stem_relu")
    y = g.conv(g.relu(g.conv(s, 8, "conv1"), "relu1"), 8, "conv2")
    y = g.relu(g.binary("Add", y, s, "add"), "relu2")
    return g.build(g.gemm(g.flatten(g.gap(y, "gap"), "flatten"), 4, "fc"))


def residual_shortcut() -> onnx.ModelProto:
    """A ResNet stage pair: an identity block, then a strided block with a 1x1 shortcut conv.

    x -> stem -> relu -+-> conv1 -> relu1 -> conv2 -> add1 -> relu2 -+-> conv3 (s2) -> relu3 -> conv4 -> add2 -> relu4
                       +---------------------------------^          +-> short (1x1, s2) -----------------^
    relu4 -> gap -> flatten -> fc
    """
    g = GraphBuilder()
    s = g.relu(g.conv("x", 8, "stem"), "stem_relu")
    y = g.conv(g.relu(g.conv(s, 8, "conv1"), "relu1"), 8, "conv2")
    r = g.relu(g.binary("Add", y, s, "add1"), "relu2")
    y = g.conv(g.relu(g.conv(r, 16, "conv3", stride=2), "relu3"), 16, "conv4")
    y = g.relu(g.binary("Add", y, g.conv(r, 16, "short", k=1, stride=2), "add2"), "relu4")
    return g.build(g.gemm(g.flatten(g.gap(y, "gap"), "flatten"), 4, "fc"))


def relu6_chain() -> onnx.ModelProto:
    """x -> stem -> relu6 -> conv1 -> relu6 -> gap -> flatten -> fc (MobileNetV2's activations)"""
    g = GraphBuilder()
    y = g.relu6(g.conv(g.relu6(g.conv("x", 8, "stem"), "stem_relu6"), 8, "conv1"), "relu6")
    return g.build(g.gemm(g.flatten(g.gap(y, "gap"), "flatten"), 4, "fc"))


def concat_branches() -> onnx.ModelProto:
    """x -> squeeze -> relu -+-> e1 (1x1) -+-> concat -> relu -> head (1x1) -> gap -> flatten -> fc
    +-> e3 (3x3) -+"""
    g = GraphBuilder()
    s = g.relu(g.conv("x", 4, "squeeze", k=1), "squeeze_relu")
    y = g.concat([g.conv(s, 6, "e1", k=1), g.conv(s, 10, "e3")], "concat")
    y = g.conv(g.relu(y, "relu"), 8, "head", k=1)
    return g.build(g.gemm(g.flatten(g.gap(y, "gap"), "flatten"), 4, "fc"))


def split_branches(cut: int = 8) -> onnx.ModelProto:
    """x -> conv_a (8) -+-> concat(conv_a, conv_b) -> split [cut, 16-cut] -> left: conv_l; right: conv_r -> add...
    conv_a (8 ch) and conv_b (8 ch) are concatenated, then split at `cut`; each half feeds a conv,
    whose outputs are added. cut=8 splits on the space boundary (no rigidity); cut=5 cuts inside."""
    g = GraphBuilder()
    y = g.concat([g.conv("x", 8, "conv_a"), g.conv("x", 8, "conv_b")], "concat")
    left, right = g.split(y, [cut, 16 - cut], "split")
    y = g.binary("Add", g.conv(left, 8, "conv_l"), g.conv(right, 8, "conv_r"), "add")
    return g.build(g.gemm(g.flatten(g.gap(y, "gap"), "flatten"), 4, "fc"))


def se_block() -> onnx.ModelProto:
    """x -> conv1 -> relu -+-> gap -> se_reduce -> relu -> se_expand -> sigmoid -> mul -> conv2 -> gap -> flatten -> fc
    +-----------------------------------------------------^"""
    g = GraphBuilder()
    y = g.relu(g.conv("x", 8, "conv1"), "relu1")
    gate = g.conv(g.relu(g.conv(g.gap(y, "se_pool"), 4, "se_reduce", k=1), "se_relu"), 8, "se_expand", k=1)
    y = g.binary("Mul", y, g.unary("Sigmoid", gate, "se_sigmoid"), "se_mul")
    y = g.conv(y, 8, "conv2")
    return g.build(g.gemm(g.flatten(g.gap(y, "gap"), "flatten"), 4, "fc"))


def channel_shuffle() -> onnx.ModelProto:
    """x -> conv1 -> shuffle (reshape-transpose-reshape, 2 groups) -> conv2 -> gap -> flatten -> fc"""
    g = GraphBuilder()
    y = g.channel_shuffle(g.conv("x", 8, "conv1"), 2, "shuffle")
    y = g.conv(y, 8, "conv2")
    return g.build(g.gemm(g.flatten(g.gap(y, "gap"), "flatten"), 4, "fc"))


def depthwise_grouped() -> onnx.ModelProto:
    """x -> pw1 -> bn1 -> relu -> dw (3x3, group=8) -> relu -> pw2 -> grouped (group=2) -> gap -> flatten -> fc"""
    g = GraphBuilder()
    y = g.relu(g.bn(g.conv("x", 8, "pw1", k=1), "bn1"), "relu1")
    y = g.relu(g.conv(y, 8, "dw", group=8), "relu2")
    y = g.conv(g.conv(y, 8, "pw2", k=1), 8, "grouped", group=2)
    return g.build(g.gemm(g.flatten(g.gap(y, "gap"), "flatten"), 4, "fc"))


def flatten_gemm() -> onnx.ModelProto:
    """x -> conv1 -> relu -> maxpool (4x4 map) -> flatten (8x16 features) -> fc1 -> relu -> fc2"""
    g = GraphBuilder()
    y = g.maxpool(g.relu(g.conv("x", 8, "conv1"), "relu1"), "pool")
    y = g.relu(g.gemm(g.flatten(y, "flatten"), 16, "fc1"), "relu2")
    return g.build(g.gemm(y, 4, "fc2"))


def per_channel_constants() -> onnx.ModelProto:
    """x -> conv1 -> mul(c) -> add(c) -> relu -> conv2 -> gap -> flatten -> fc  (per-channel affine)"""
    g = GraphBuilder()
    y = g.channel_const(g.channel_const(g.conv("x", 8, "conv1"), "Mul", "scale"), "Add", "shift")
    y = g.conv(g.relu(y, "relu"), 8, "conv2")
    return g.build(g.gemm(g.flatten(g.gap(y, "gap"), "flatten"), 4, "fc"))


SMALL_GRAPHS = {
    "conv_bn_relu": conv_bn_relu,
    "residual_add": residual_add,
    "concat_branches": concat_branches,
    "split_branches": split_branches,
    "se_block": se_block,
    "channel_shuffle": channel_shuffle,
    "depthwise_grouped": depthwise_grouped,
    "flatten_gemm": flatten_gemm,
    "per_channel_constants": per_channel_constants,
}


def save(model: onnx.ModelProto, path) -> str:
    onnx.save(model, str(path))
    return str(path)


def tensor_info(name: str, shape: list[int | str], elem_type: int = TensorProto.FLOAT) -> onnx.ValueInfoProto:
    """A graph input or output of `elem_type` and `shape` (ints static, strings dim_params)."""
    return helper.make_tensor_value_info(name, elem_type, shape)


def make_model(
    nodes: list[onnx.NodeProto],
    initializers: list[onnx.TensorProto],
    inputs: list[onnx.ValueInfoProto],
    outputs: list[onnx.ValueInfoProto],
    opset: int = OPSET,
    ir_version: int = 8,
    domains: dict[str, int] | None = None,
    functions: list[onnx.FunctionProto] | None = None,
) -> onnx.ModelProto:
    """A model around hand-written nodes, for what `GraphBuilder.build` cannot declare (several or
    non-float inputs, custom domains, local functions). Not checked: bad-input tests need bad models."""
    opsets = [helper.make_operatorsetid("", opset)] + [
        helper.make_operatorsetid(d, v) for d, v in (domains or {}).items()
    ]
    graph = helper.make_graph(nodes, "test", inputs, outputs, initializers)
    model = helper.make_model(graph, opset_imports=opsets, functions=functions or [], producer_name="odimo-tests")
    model.ir_version = ir_version
    return model


def append_node(g: GraphBuilder, op: str, inputs: list[str], name: str, shape: tuple[int, ...], **attrs) -> str:
    """Append a hand-written node to `g` (one output, named after the node, of per-sample `shape`)."""
    g.nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
    g.shapes[name] = shape
    return name
