"""ONNX -> PyTorch: a trainable module that interprets a canonical graph node by node.

Our own converter for exactly the op set the importer accepts (onnx2torch is unmaintained and fails on
current opsets). Conv/Gemm nodes become `LayerModule`s in `layers`, so the search can wrap them and
the trainer can write their weights back into the *same* ONNX nodes (passes/set_weights.py); every
other constant is a buffer. Kept BatchNormalizations run with their running statistics (inference
form) and train only their affine parameters: the reference flow folds BN before the search.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper
from torch import nn

from odimo.compiler.errors import UnsupportedOpError
from odimo.compiler.onnx_graph import attr


@dataclass(frozen=True)
class NodeSpec:
    """One graph node, decoupled from protobuf so the module pickles and deep-copies cheaply."""

    name: str
    op_type: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attrs: dict


class LayerModule(nn.Module):
    """A Conv or Gemm with trainable weight and bias; `apply` runs it with any weight and bias."""

    def __init__(self, node: NodeSpec, weight: np.ndarray, bias: np.ndarray | None) -> None:
        super().__init__()
        self.node_name = node.name
        self.op_type = node.op_type
        self.weight = nn.Parameter(torch.from_numpy(weight.copy()))
        # A node without a bias keeps a frozen zero one: the write-back (Supernet.float_layers) gives
        # a float layer a bias only where the node has one, so a trained bias would be lost.
        self.bias = nn.Parameter(torch.from_numpy(bias.copy() if bias is not None else np.zeros(weight.shape[0], np.float32)), requires_grad=bias is not None)
        self.has_bias = bias is not None
        if node.op_type == "Conv":
            pads = list(node.attrs.get("pads", [0, 0, 0, 0]))
            self.stride = tuple(node.attrs.get("strides", [1, 1]))
            self.dilation = tuple(node.attrs.get("dilations", [1, 1]))
            self.groups = int(node.attrs.get("group", 1))
            self.symmetric = pads[:2] == pads[2:]
            self.padding = tuple(pads[:2]) if self.symmetric else (0, 0)
            self.pre_pad = (0, 0, 0, 0) if self.symmetric else (pads[1], pads[3], pads[0], pads[2])

    def apply(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        if self.op_type == "Gemm":
            return F.linear(x, weight, bias)
        if not self.symmetric:
            x = F.pad(x, self.pre_pad)
        return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, self.groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.apply(x, self.weight, self.bias)


def module_key(node_name: str) -> str:
    """ModuleDict keys may not contain '.'; node names may."""
    return node_name.replace(".", "\u2024")


class OnnxModule(nn.Module):
    """Runs a canonical ONNX graph in torch. `layers[module_key(node)]` holds each Conv/Gemm."""

    def __init__(self, model: onnx.ModelProto) -> None:
        super().__init__()
        graph = model.graph
        initializers = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
        self.input_name = next(i.name for i in graph.input if i.name not in initializers)
        self.output_name = graph.output[0].name
        self.specs = [NodeSpec(n.name, n.op_type, tuple(n.input), tuple(n.output), {a.name: attr(n, a.name) for a in n.attribute}) for n in graph.node]
        self.layers = nn.ModuleDict()
        self.const_names: dict[str, str] = {}
        for spec in self.specs:
            if spec.op_type not in _OPS and spec.op_type not in ("Conv", "Gemm"):
                raise UnsupportedOpError("E110", "unsupported-op", f"the torch bridge has no implementation of {spec.op_type}", f"node '{spec.name}'", "report the op; odimo-compile --mapping <baseline> works without training")
            if spec.op_type in ("Conv", "Gemm") and spec.inputs[1] in initializers:
                bias = initializers.get(spec.inputs[2]) if len(spec.inputs) > 2 and spec.inputs[2] else None
                self.layers[module_key(spec.name)] = LayerModule(spec, initializers[spec.inputs[1]], bias)
        layer_inputs = {s.inputs[k] for s in self.specs if module_key(s.name) in self.layers for k in (1, 2) if k < len(s.inputs)}
        for k, (name, value) in enumerate(sorted(initializers.items())):
            if name in layer_inputs and not self._used_elsewhere(name):
                continue
            attr_name = f"const_{k}"
            tensor = torch.from_numpy(np.array(value))
            if _is_affine_param(name, self.specs):
                self.register_parameter(attr_name, nn.Parameter(tensor))
            else:
                self.register_buffer(attr_name, tensor)
            self.const_names[name] = attr_name

    def _used_elsewhere(self, name: str) -> bool:
        return any(name in s.inputs for s in self.specs if module_key(s.name) not in self.layers)

    def layer(self, node_name: str) -> nn.Module:
        return self.layers[module_key(node_name)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        env: dict[str, torch.Tensor] = {self.input_name: x}
        for spec in self.specs:
            key = module_key(spec.name)
            if key in self.layers:
                env[spec.outputs[0]] = self.layers[key](env[spec.inputs[0]])
                continue
            args = [self._value(env, name) for name in spec.inputs]
            results = _OPS[spec.op_type](spec, args)
            for name, value in zip(spec.outputs, results if isinstance(results, (list, tuple)) else [results]):
                if name:
                    env[name] = value
        return env[self.output_name]

    def _value(self, env: dict[str, torch.Tensor], name: str) -> torch.Tensor | None:
        if not name:
            return None
        if name in env:
            return env[name]
        return getattr(self, self.const_names[name])


def _is_affine_param(name: str, specs: list[NodeSpec]) -> bool:
    """BN scale/bias and PRelu slopes train; statistics and structural constants do not."""
    for s in specs:
        if s.op_type in ("BatchNormalization", "InstanceNormalization") and name in s.inputs[1:3]:
            return True
        if s.op_type == "PRelu" and len(s.inputs) > 1 and s.inputs[1] == name:
            return True
    return False


# --- op table ----------------------------------------------------------------------------------

Op = Callable[[NodeSpec, list], torch.Tensor | list[torch.Tensor]]


def _unary(fn: Callable[[torch.Tensor], torch.Tensor]) -> Op:
    return lambda spec, a: fn(a[0])


def _ints(t: torch.Tensor | None) -> list[int] | None:
    return None if t is None else [int(v) for v in t.reshape(-1).tolist()]


def _clip(spec: NodeSpec, a: list) -> torch.Tensor:
    low = a[1] if len(a) > 1 and a[1] is not None else spec.attrs.get("min")
    high = a[2] if len(a) > 2 and a[2] is not None else spec.attrs.get("max")
    low = float(low) if low is not None else None
    high = float(high) if high is not None else None
    return torch.clamp(a[0], low, high)


def _pads_for_torch(pads: list[int]) -> list[int]:
    """ONNX [b1, b2, ..., e1, e2, ...] over spatial dims -> F.pad's last-dim-first pairs."""
    rank = len(pads) // 2
    out = []
    for axis in reversed(range(rank)):
        out += [pads[axis], pads[axis + rank]]
    return out


def _maxpool(spec: NodeSpec, a: list) -> torch.Tensor:
    kernel = spec.attrs["kernel_shape"]
    pads = list(spec.attrs.get("pads", [0] * 2 * len(kernel)))
    x = F.pad(a[0], _pads_for_torch(pads), value=float("-inf")) if any(pads) else a[0]
    return F.max_pool2d(x, kernel, spec.attrs.get("strides", [1] * len(kernel)), 0, spec.attrs.get("dilations", [1] * len(kernel)), bool(spec.attrs.get("ceil_mode", 0)))


def _avgpool(spec: NodeSpec, a: list) -> torch.Tensor:
    kernel = spec.attrs["kernel_shape"]
    pads = list(spec.attrs.get("pads", [0] * 2 * len(kernel)))
    include = bool(spec.attrs.get("count_include_pad", 0))
    half = len(kernel)
    if pads[:half] == pads[half:]:
        return F.avg_pool2d(a[0], kernel, spec.attrs.get("strides", [1] * half), pads[:half], bool(spec.attrs.get("ceil_mode", 0)), include)
    x = F.pad(a[0], _pads_for_torch(pads))
    return F.avg_pool2d(x, kernel, spec.attrs.get("strides", [1] * half), 0, bool(spec.attrs.get("ceil_mode", 0)), True)


def _batchnorm(spec: NodeSpec, a: list) -> torch.Tensor:
    x, gamma, beta, mean, var = a[:5]
    shape = (1, -1) + (1,) * (x.dim() - 2)
    scale = gamma / torch.sqrt(var + spec.attrs.get("epsilon", 1e-5))
    return x * scale.reshape(shape) + (beta - mean * scale).reshape(shape)


def _instancenorm(spec: NodeSpec, a: list) -> torch.Tensor:
    return F.instance_norm(a[0], weight=a[1], bias=a[2], eps=spec.attrs.get("epsilon", 1e-5))


def _softmax(fn: Callable) -> Op:
    return lambda spec, a: fn(a[0], dim=spec.attrs.get("axis", -1))


def _concat(spec: NodeSpec, a: list) -> torch.Tensor:
    return torch.cat([t for t in a if t is not None], dim=spec.attrs["axis"])


def _split(spec: NodeSpec, a: list) -> list[torch.Tensor]:
    axis = spec.attrs.get("axis", 0)
    sizes = _ints(a[1]) if len(a) > 1 and a[1] is not None else spec.attrs.get("split")
    if sizes is None:
        count = len(spec.outputs)
        total = a[0].shape[axis]
        chunk = -(-total // count)
        sizes = [min(chunk, total - k * chunk) for k in range(count)]
    return list(torch.split(a[0], list(sizes), dim=axis))


def _slice(spec: NodeSpec, a: list) -> torch.Tensor:
    x = a[0]
    starts, ends = _ints(a[1]), _ints(a[2])
    axes = _ints(a[3]) if len(a) > 3 and a[3] is not None else list(range(len(starts)))
    steps = _ints(a[4]) if len(a) > 4 and a[4] is not None else [1] * len(starts)
    index = [slice(None)] * x.dim()
    for start, end, axis, step in zip(starts, ends, axes, steps):
        size = x.shape[axis]
        if step < 0:
            raise UnsupportedOpError("E110", "unsupported-op", "Slice with a negative step", f"node '{spec.name}'", "reverse the tensor another way")
        index[axis] = slice(*slice(start, end, step).indices(size))
    return x[tuple(index)]


def _reshape(spec: NodeSpec, a: list) -> torch.Tensor:
    target = _ints(a[1])
    shape = [a[0].shape[k] if d == 0 and not spec.attrs.get("allowzero", 0) else d for k, d in enumerate(target)]
    return a[0].reshape(shape)


def _squeeze(spec: NodeSpec, a: list) -> torch.Tensor:
    axes = _ints(a[1]) if len(a) > 1 and a[1] is not None else spec.attrs.get("axes")
    x = a[0]
    if axes is None:
        return x.squeeze()
    for axis in sorted((ax % x.dim() for ax in axes), reverse=True):
        x = x.squeeze(axis)
    return x


def _unsqueeze(spec: NodeSpec, a: list) -> torch.Tensor:
    axes = _ints(a[1]) if len(a) > 1 and a[1] is not None else spec.attrs.get("axes")
    x = a[0]
    rank = x.dim() + len(axes)
    for axis in sorted(ax % rank for ax in axes):
        x = x.unsqueeze(axis)
    return x


def _pad(spec: NodeSpec, a: list) -> torch.Tensor:
    pads = _ints(a[1]) if len(a) > 1 and a[1] is not None else list(spec.attrs["pads"])
    mode = spec.attrs.get("mode", b"constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    value = float(a[2]) if len(a) > 2 and a[2] is not None and a[2].numel() else float(spec.attrs.get("value", 0.0))
    rank = len(pads) // 2
    torch_pads = _pads_for_torch(pads)
    if mode == "constant":
        return F.pad(a[0], torch_pads, value=value)
    spatial = torch_pads[: 2 * (rank - 2)]
    return F.pad(a[0], spatial, mode={"reflect": "reflect", "edge": "replicate"}[mode])


def _resize(spec: NodeSpec, a: list) -> torch.Tensor:
    x = a[0]
    mode = spec.attrs.get("mode", b"nearest")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    transform = spec.attrs.get("coordinate_transformation_mode", b"half_pixel")
    transform = transform.decode() if isinstance(transform, bytes) else transform
    sizes = _ints(a[3]) if len(a) > 3 and a[3] is not None and a[3].numel() else None
    if sizes is None:
        scales = a[2] if len(a) > 2 and a[2] is not None and a[2].numel() else a[1]
        sizes = [int(np.floor(d * float(s))) for d, s in zip(x.shape, scales.tolist())]
    if mode == "nearest":
        return F.interpolate(x, size=sizes[2:], mode="nearest")
    return F.interpolate(x, size=sizes[2:], mode="bilinear", align_corners=transform == "align_corners")


def _reduce(fn: str) -> Op:
    def run(spec: NodeSpec, a: list) -> torch.Tensor:
        axes = _ints(a[1]) if len(a) > 1 and a[1] is not None else spec.attrs.get("axes")
        keep = bool(spec.attrs.get("keepdims", 1))
        dims = list(range(a[0].dim())) if not axes else [ax % a[0].dim() for ax in axes]
        x = a[0]
        if fn == "mean":
            return x.mean(dim=dims, keepdim=keep)
        if fn == "sum":
            return x.sum(dim=dims, keepdim=keep)
        if fn == "l2":
            return x.pow(2).sum(dim=dims, keepdim=keep).sqrt()
        return torch.amax(x, dim=dims, keepdim=keep) if fn == "max" else torch.amin(x, dim=dims, keepdim=keep)

    return run


def _gather(spec: NodeSpec, a: list) -> torch.Tensor:
    axis = spec.attrs.get("axis", 0) % a[0].dim()
    index = a[1].long()
    out = torch.index_select(a[0], axis, index.reshape(-1))
    return out.reshape(a[0].shape[:axis] + index.shape + a[0].shape[axis + 1 :])


def _variadic(fn: Callable) -> Op:
    def run(spec: NodeSpec, a: list) -> torch.Tensor:
        out = a[0]
        for t in a[1:]:
            out = fn(out, t)
        return out

    return run


def _prelu(spec: NodeSpec, a: list) -> torch.Tensor:
    return torch.where(a[0] >= 0, a[0], a[0] * a[1])


def _depth_to_space(spec: NodeSpec, a: list) -> torch.Tensor:
    mode = spec.attrs.get("mode", b"DCR")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    if mode == "CRD":
        return F.pixel_shuffle(a[0], spec.attrs["blocksize"])
    n, c, h, w = a[0].shape
    b = spec.attrs["blocksize"]
    x = a[0].reshape(n, b, b, c // (b * b), h, w).permute(0, 3, 4, 1, 5, 2)
    return x.reshape(n, c // (b * b), h * b, w * b)


_OPS: dict[str, Op] = {
    "Relu": _unary(F.relu),
    "LeakyRelu": lambda s, a: F.leaky_relu(a[0], s.attrs.get("alpha", 0.01)),
    "Clip": _clip,
    "Sigmoid": _unary(torch.sigmoid),
    "HardSigmoid": lambda s, a: torch.clamp(s.attrs.get("alpha", 0.2) * a[0] + s.attrs.get("beta", 0.5), 0, 1),
    "HardSwish": _unary(F.hardswish),
    "Tanh": _unary(torch.tanh),
    "Elu": lambda s, a: F.elu(a[0], s.attrs.get("alpha", 1.0)),
    "Selu": _unary(F.selu),
    "Celu": lambda s, a: F.celu(a[0], s.attrs.get("alpha", 1.0)),
    "Softplus": _unary(F.softplus),
    "Softsign": _unary(F.softsign),
    "Mish": _unary(F.mish),
    "Gelu": lambda s, a: F.gelu(a[0], approximate="tanh" if s.attrs.get("approximate", b"none") in (b"tanh", "tanh") else "none"),
    "Erf": _unary(torch.erf),
    "Exp": _unary(torch.exp),
    "Log": _unary(torch.log),
    "Sqrt": _unary(torch.sqrt),
    "Neg": _unary(torch.neg),
    "Abs": _unary(torch.abs),
    "Reciprocal": _unary(torch.reciprocal),
    "Sin": _unary(torch.sin),
    "Cos": _unary(torch.cos),
    "Floor": _unary(torch.floor),
    "Ceil": _unary(torch.ceil),
    "Round": _unary(torch.round),
    "Sign": _unary(torch.sign),
    "Cast": _unary(lambda x: x.float()),
    "Identity": _unary(lambda x: x),
    "Dropout": lambda s, a: a[0],
    "Softmax": _softmax(torch.softmax),
    "LogSoftmax": _softmax(torch.log_softmax),
    "MaxPool": _maxpool,
    "AveragePool": _avgpool,
    "GlobalAveragePool": lambda s, a: a[0].mean(dim=tuple(range(2, a[0].dim())), keepdim=True),
    "GlobalMaxPool": lambda s, a: torch.amax(a[0], dim=tuple(range(2, a[0].dim())), keepdim=True),
    "BatchNormalization": _batchnorm,
    "InstanceNormalization": _instancenorm,
    "Add": lambda s, a: a[0] + a[1],
    "Sub": lambda s, a: a[0] - a[1],
    "Mul": lambda s, a: a[0] * a[1],
    "Div": lambda s, a: a[0] / a[1],
    "Pow": lambda s, a: torch.pow(a[0], a[1]),
    "Max": _variadic(torch.maximum),
    "Min": _variadic(torch.minimum),
    "Sum": _variadic(torch.add),
    "Mean": lambda s, a: sum(a) / len(a),
    "PRelu": _prelu,
    "Concat": _concat,
    "Split": _split,
    "Slice": _slice,
    "Flatten": lambda s, a: a[0].flatten(s.attrs.get("axis", 1)) if s.attrs.get("axis", 1) > 0 else a[0].reshape(1, -1),
    "Reshape": _reshape,
    "Transpose": lambda s, a: a[0].permute(*(s.attrs.get("perm") or reversed(range(a[0].dim())))),
    "Squeeze": _squeeze,
    "Unsqueeze": _unsqueeze,
    "Gather": _gather,
    "Expand": lambda s, a: torch.broadcast_to(a[0], torch.broadcast_shapes(a[0].shape, tuple(_ints(a[1])))),
    "Tile": lambda s, a: a[0].repeat(*_ints(a[1])),
    "Pad": _pad,
    "Resize": _resize,
    "ReduceMean": _reduce("mean"),
    "ReduceSum": _reduce("sum"),
    "ReduceMax": _reduce("max"),
    "ReduceMin": _reduce("min"),
    "ReduceL2": _reduce("l2"),
    "LRN": lambda s, a: F.local_response_norm(a[0], s.attrs["size"], s.attrs.get("alpha", 1e-4), s.attrs.get("beta", 0.75), s.attrs.get("bias", 1.0)),
    "DepthToSpace": _depth_to_space,
    "SpaceToDepth": lambda s, a: F.pixel_unshuffle(a[0], s.attrs["blocksize"]),
}
