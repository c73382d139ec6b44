"""ONNX -> PyTorch: a trainable module that interprets a canonical graph node by node.

Our own converter for exactly the op set the importer accepts (onnx2torch is unmaintained and fails on
current opsets). Conv/Gemm nodes become `LayerModule`s in `layers`, so the search can wrap them and
the trainer can write their weights back into the *same* ONNX nodes (passes/set_weights.py); every
other constant is a buffer. Kept BatchNormalizations run with their running statistics (inference
form) and train only their affine parameters: the reference flow folds BN before the search.

`TORCH_OPS` must equal the importer's op table (`coupling.SUPPORTED_OPS`, tests/compiler/test_op_table.py):
an op the importer accepts but the bridge cannot run would fail minutes into training. Attribute values
an op here does not compute exactly are refused at import too (coupling.ATTRIBUTE_LIMITS).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper
from torch import nn

from odimo.ir.coupling import index_tail
from odimo.ir.errors import UnsupportedOpError
from odimo.ir.graph import attr


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
        self.bias = nn.Parameter(
            torch.from_numpy(bias.copy() if bias is not None else np.zeros(weight.shape[0], np.float32)),
            requires_grad=bias is not None,
        )
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
    """Runs a canonical ONNX graph in torch. `layers[module_key(node)]` holds each Conv/Gemm.

    `forward` returns the logits, what the loss and top-1 accuracy read: the graph output, or for a
    graph that ends in ArgMax/ArgMin (class indices, no gradient) the value that tail reads,
    `logits_name`. `graph_output` runs the whole graph, tail included, as onnxruntime does.
    """

    def __init__(self, model: onnx.ModelProto) -> None:
        super().__init__()
        graph = model.graph
        initializers = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
        self.input_name = next(i.name for i in graph.input if i.name not in initializers)
        self.output_name = graph.output[0].name
        tail = index_tail(graph)
        self.logits_name = tail.logits if tail else self.output_name
        self.tail_nodes = tail.nodes if tail else frozenset()
        self.specs = [
            NodeSpec(n.name, n.op_type, tuple(n.input), tuple(n.output), {a.name: attr(n, a.name) for a in n.attribute})
            for n in graph.node
        ]
        self.layers = nn.ModuleDict()
        # node name -> {input index: module}: that input is read through the module (a quantizer);
        # the modules belong to whoever registers them (`read_through`), so they are not our state
        self.input_maps: dict[str, dict[int, nn.Module]] = {}
        self.const_names: dict[str, str] = {}
        for spec in self.specs:
            if spec.op_type not in TORCH_OPS:
                raise UnsupportedOpError(
                    f"the torch bridge has no implementation of {spec.op_type}",
                    f"node '{spec.name}'",
                    "report the op; odimo-compile --mapping <baseline> works without training",
                )
            if spec.op_type in ("Conv", "Gemm") and spec.inputs[1] in initializers:
                bias = initializers.get(spec.inputs[2]) if len(spec.inputs) > 2 and spec.inputs[2] else None
                self.layers[module_key(spec.name)] = LayerModule(spec, initializers[spec.inputs[1]], bias)
        layer_inputs = {
            s.inputs[k] for s in self.specs if module_key(s.name) in self.layers for k in (1, 2) if k < len(s.inputs)
        }
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

    def read_through(self, node_name: str, index: int, module: nn.Module) -> None:
        """Input `index` of node `node_name` reads `module(value)` instead of the value.

        How the supernet quantizes what a non-layer node reads (the inputs of a residual Add) without
        a rewrite of the graph; the caller registers `module` so that it trains and is saved.
        """
        self.input_maps.setdefault(node_name, {})[index] = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The logits (see the class docstring): the graph without its ArgMax/ArgMin tail."""
        return self._run(x, self.tail_nodes)[self.logits_name]

    def graph_output(self, x: torch.Tensor) -> torch.Tensor:
        """The graph's own output (class indices for an ArgMax tail), to compare with onnxruntime."""
        return self._run(x, frozenset())[self.output_name]

    def _run(self, x: torch.Tensor, skipped: frozenset[str]) -> dict[str, torch.Tensor]:
        env: dict[str, torch.Tensor] = {self.input_name: x}
        for spec in self.specs:
            if spec.name in skipped:
                continue
            key = module_key(spec.name)
            if key in self.layers:
                env[spec.outputs[0]] = self.layers[key](env[spec.inputs[0]])
                continue
            args = [self._value(env, name) for name in spec.inputs]
            maps = self.input_maps.get(spec.name)
            if maps:
                args = [maps[k](a) if k in maps else a for k, a in enumerate(args)]
            results = _OPS[spec.op_type](spec, args)
            for name, value in zip(spec.outputs, results if isinstance(results, (list, tuple)) else [results]):
                if name:
                    env[name] = value
        return env

    def _value(self, env: dict[str, torch.Tensor], name: str) -> torch.Tensor | None:
        if not name:
            return None
        if name in env:
            return env[name]
        return getattr(self, self.const_names[name])


def _is_affine_param(name: str, specs: list[NodeSpec]) -> bool:
    """Norm scale/bias and PRelu slopes train; statistics and structural constants do not."""
    for s in specs:
        if s.op_type in ("BatchNormalization", "InstanceNormalization", "GroupNormalization") and name in s.inputs[1:3]:
            return True
        if s.op_type == "PRelu" and len(s.inputs) > 1 and s.inputs[1] == name:
            return True
    return False


# --- op table ----------------------------------------------------------------------------------

Op = Callable[[NodeSpec, list], torch.Tensor | list[torch.Tensor]]

# The Cast targets the bridge computes; the importer allows the integer ones only after an ArgMax/ArgMin.
CAST_DTYPES = {
    onnx.TensorProto.FLOAT: torch.float32,
    onnx.TensorProto.INT32: torch.int32,
    onnx.TensorProto.INT64: torch.int64,
}
SELU_ALPHA, SELU_GAMMA = 1.67326319217681884765625, 1.05070102214813232421875  # ONNX's float32 defaults
PAD_MODES = {"reflect": "reflect", "edge": "replicate", "wrap": "circular"}  # ONNX mode -> F.pad mode


def _unary(fn: Callable[[torch.Tensor], torch.Tensor]) -> Op:
    return lambda spec, a: fn(a[0])


def _ints(t: torch.Tensor | None) -> list[int] | None:
    return None if t is None else [int(v) for v in t.reshape(-1).tolist()]


def _text(spec: NodeSpec, name: str, default: str) -> str:
    value = spec.attrs.get(name, default)
    return value.decode() if isinstance(value, bytes) else value


def _clip(spec: NodeSpec, a: list) -> torch.Tensor:
    low = a[1] if len(a) > 1 and a[1] is not None else spec.attrs.get("min")
    high = a[2] if len(a) > 2 and a[2] is not None else spec.attrs.get("max")
    low = float(low) if low is not None else None
    high = float(high) if high is not None else None
    return torch.clamp(a[0], low, high)


def _shrink(spec: NodeSpec, a: list) -> torch.Tensor:
    x, lambd, bias = a[0], spec.attrs.get("lambd", 0.5), spec.attrs.get("bias", 0.0)
    return torch.where(x < -lambd, x + bias, torch.where(x > lambd, x - bias, torch.zeros_like(x)))


def _hardmax(spec: NodeSpec, a: list) -> torch.Tensor:
    """One-hot of the first maximum along `axis` (default -1 since opset 13; torch.argmax picks the first)."""
    axis = spec.attrs.get("axis", -1) % a[0].dim()
    return torch.zeros_like(a[0]).scatter_(axis, a[0].argmax(dim=axis, keepdim=True), 1.0)


def _arg_index(fn: Callable[..., torch.Tensor]) -> Op:
    """ArgMax/ArgMin: torch returns the first extreme; select_last_index searches the flipped axis."""

    def run(spec: NodeSpec, a: list) -> torch.Tensor:
        x = a[0]
        axis, keep = spec.attrs.get("axis", 0) % x.dim(), bool(spec.attrs.get("keepdims", 1))
        if spec.attrs.get("select_last_index", 0):
            return x.shape[axis] - 1 - fn(x.flip(axis), dim=axis, keepdim=keep)
        return fn(x, dim=axis, keepdim=keep)

    return run


def _cast(spec: NodeSpec, a: list) -> torch.Tensor:
    return a[0].to(CAST_DTYPES[spec.attrs["to"]])


def _pads_for_torch(pads: list[int]) -> list[int]:
    """ONNX [b1, b2, ..., e1, e2, ...] over spatial dims -> F.pad's last-dim-first pairs."""
    rank = len(pads) // 2
    out = []
    for axis in reversed(range(rank)):
        out += [pads[axis], pads[axis + rank]]
    return out


# --- pooling -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Window:
    """A pooling window resolved against one input, in F.pad order: `pads` are the model's, `room` the
    zeros beyond them that a ceil_mode window reaches. With both applied, a floor-mode torch pool gives
    ONNX's output shape."""

    kernel: tuple[int, ...]
    strides: tuple[int, ...]
    dilations: tuple[int, ...]
    pads: tuple[int, ...]
    room: tuple[int, ...]

    @property
    def total(self) -> tuple[int, ...]:
        """Pads and room together, for a pool that pads both with the same value."""
        return tuple(p + r for p, r in zip(self.pads, self.room))


def _pool_output_size(size: int, kernel: int, stride: int, dilation: int, begin: int, end: int, ceil: bool) -> int:
    """One spatial output length. With ceil_mode, a window that would start in the right padding is
    dropped (the ONNX spec and onnxruntime; ONNX shape inference keeps it, so the importer refuses
    models where that matters)."""
    total = size + begin + end - dilation * (kernel - 1) - 1
    out = (-(-total // stride) if ceil else total // stride) + 1
    return out - 1 if ceil and (out - 1) * stride >= size + begin else out


def _window(spec: NodeSpec, x: torch.Tensor) -> _Window:
    kernel = tuple(spec.attrs["kernel_shape"])
    n = len(kernel)
    strides = tuple(spec.attrs.get("strides") or [1] * n)
    dilations = tuple(spec.attrs.get("dilations") or [1] * n)
    pads = list(spec.attrs.get("pads") or [0] * 2 * n)
    ceil = bool(spec.attrs.get("ceil_mode", 0))
    room = []
    for i in range(n):
        padded = x.shape[2 + i] + pads[i] + pads[n + i]
        out = _pool_output_size(x.shape[2 + i], kernel[i], strides[i], dilations[i], pads[i], pads[n + i], ceil)
        room.append(max(0, (out - 1) * strides[i] + dilations[i] * (kernel[i] - 1) + 1 - padded))
    return _Window(kernel, strides, dilations, tuple(_pads_for_torch(pads)), tuple(_pads_for_torch([0] * n + room)))


def _window_sum(x: torch.Tensor, w: _Window) -> torch.Tensor:
    """Sum over each window of an already padded `x` (avg_pool2d has no dilation; a ones conv does)."""
    if all(d == 1 for d in w.dilations):
        return F.avg_pool2d(x, w.kernel, w.strides, divisor_override=1)
    ones = torch.ones((x.shape[1], 1, *w.kernel), dtype=x.dtype, device=x.device)
    return F.conv2d(x, ones, stride=w.strides, dilation=w.dilations, groups=x.shape[1])


def _maxpool(spec: NodeSpec, a: list) -> torch.Tensor:
    w = _window(spec, a[0])
    x = F.pad(a[0], w.total, value=-math.inf) if any(w.total) else a[0]
    return F.max_pool2d(x, w.kernel, w.strides, 0, w.dilations)


def _own_padding(w: _Window) -> tuple[int, int] | None:
    """The (H, W) padding for F.avg_pool2d itself (the fast path) when it computes ONNX's pool: pads
    symmetric and at most half a kernel, no ceil_mode room, no dilation."""
    padding = (w.pads[2], w.pads[0])
    own = not any(w.room) and all(d == 1 for d in w.dilations) and w.pads[0::2] == w.pads[1::2]
    return padding if own and all(p <= k // 2 for p, k in zip(padding, w.kernel)) else None


def _avgpool(spec: NodeSpec, a: list) -> torch.Tensor:
    """Window sum / count. The count is a pooled mask: ones on the input, and on the model's pads when
    count_include_pad=1; never on the room a ceil_mode window reaches beyond them (as onnxruntime)."""
    x, w = a[0], _window(spec, a[0])
    include = bool(spec.attrs.get("count_include_pad", 0))
    padding = _own_padding(w)
    if padding is not None:
        return F.avg_pool2d(x, w.kernel, w.strides, padding, False, include)
    mask = F.pad(torch.ones((1, 1, *x.shape[2:]), dtype=x.dtype, device=x.device), w.pads, value=float(include))
    return _window_sum(F.pad(x, w.total), w) / _window_sum(F.pad(mask, w.room), w)


def _root(total: torch.Tensor, p: int) -> torch.Tensor:
    """total^(1/p) for total >= 0, with gradient 0 at 0: the exact root's is infinite there, and a
    window of zeros (after a ReLU) would turn every gradient upstream into NaN."""
    if p == 1:
        return total
    positive = total > 0
    safe = torch.where(positive, total, torch.ones_like(total))
    return torch.where(positive, safe.pow(1.0 / p), torch.zeros_like(total))


def _lppool(spec: NodeSpec, a: list) -> torch.Tensor:
    """(sum |x|^p)^(1/p) per window, padding counted as 0. Not F.lp_pool2d: it takes no abs, no pads."""
    p, w = spec.attrs.get("p", 2), _window(spec, a[0])
    return _root(_window_sum(F.pad(a[0].abs().pow(p), w.total), w), p)


def _global_lppool(spec: NodeSpec, a: list) -> torch.Tensor:
    p = spec.attrs.get("p", 2)
    return _root(a[0].abs().pow(p).sum(dim=tuple(range(2, a[0].dim())), keepdim=True), p)


# --- normalization -----------------------------------------------------------------------------


def _batchnorm(spec: NodeSpec, a: list) -> torch.Tensor:
    x, gamma, beta, mean, var = a[:5]
    shape = (1, -1) + (1,) * (x.dim() - 2)
    scale = gamma / torch.sqrt(var + spec.attrs.get("epsilon", 1e-5))
    return x * scale.reshape(shape) + (beta - mean * scale).reshape(shape)


def _instancenorm(spec: NodeSpec, a: list) -> torch.Tensor:
    return F.instance_norm(a[0], weight=a[1], bias=a[2], eps=spec.attrs.get("epsilon", 1e-5))


def _groupnorm(spec: NodeSpec, a: list) -> torch.Tensor:
    """Scale and bias are per channel (opset 21) or per group (opset 18, deprecated since): told
    apart by their size, as the two cannot be confused unless groups == channels, where they agree."""
    x, scale, bias = a[:3]
    groups, channels = spec.attrs["num_groups"], x.shape[1]
    if scale.numel() != channels:
        scale, bias = scale.repeat_interleave(channels // groups), bias.repeat_interleave(channels // groups)
    return F.group_norm(x, groups, scale, bias, spec.attrs.get("epsilon", 1e-5))


def _lrn(spec: NodeSpec, a: list) -> torch.Tensor:
    """ONNX sums squares over channels [c - floor((size-1)/2), c + ceil((size-1)/2)];
    F.local_response_norm centres an even window the other way."""
    x, size = a[0], spec.attrs["size"]
    alpha, beta, bias = spec.attrs.get("alpha", 1e-4), spec.attrs.get("beta", 0.75), spec.attrs.get("bias", 1.0)
    squares = F.pad(x.pow(2), [0, 0] * (x.dim() - 2) + [(size - 1) // 2, size // 2])
    return x / (bias + alpha / size * squares.unfold(1, size, 1).sum(-1)).pow(beta)


def _softmax(fn: Callable) -> Op:
    return lambda spec, a: fn(a[0], dim=spec.attrs.get("axis", -1))


# --- shape ops ---------------------------------------------------------------------------------


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
    """Python's slice clamping is ONNX's; a negative step gathers (torch views step forward only)."""
    x = a[0]
    starts, ends = _ints(a[1]), _ints(a[2])
    axes = _ints(a[3]) if len(a) > 3 and a[3] is not None else list(range(len(starts)))
    steps = _ints(a[4]) if len(a) > 4 and a[4] is not None else [1] * len(starts)
    for start, end, axis, step in zip(starts, ends, axes, steps):
        axis %= x.dim()
        picked = range(*slice(start, end, step).indices(x.shape[axis]))
        if step > 0:
            x = x[(slice(None),) * axis + (slice(picked.start, picked.stop, step),)]
        else:
            x = x.index_select(axis, torch.arange(picked.start, picked.stop, step, device=x.device))
    return x


def _flatten(spec: NodeSpec, a: list) -> torch.Tensor:
    axis = spec.attrs.get("axis", 1)
    axis = axis + a[0].dim() if axis < 0 else axis
    return a[0].reshape(math.prod(a[0].shape[:axis]), -1)


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


def _gather(spec: NodeSpec, a: list) -> torch.Tensor:
    axis = spec.attrs.get("axis", 0) % a[0].dim()
    index = a[1].long()
    index = torch.where(index < 0, index + a[0].shape[axis], index)  # ONNX counts negative indices from the end
    out = torch.index_select(a[0], axis, index.reshape(-1))
    return out.reshape(a[0].shape[:axis] + index.shape + a[0].shape[axis + 1 :])


def _pad(spec: NodeSpec, a: list) -> torch.Tensor:
    """Reflect, edge and wrap pad spatial axes only (F.pad); the importer refuses them elsewhere."""
    x = a[0]
    pads = _ints(a[1]) if len(a) > 1 and a[1] is not None else list(spec.attrs["pads"])
    axes = _ints(a[3]) if len(a) > 3 and a[3] is not None else None
    if axes is not None:  # opset 18: pads for the listed axes only
        full = [0] * 2 * x.dim()
        for k, axis in enumerate(axes):
            full[axis % x.dim()], full[axis % x.dim() + x.dim()] = pads[k], pads[k + len(axes)]
        pads = full
    mode = _text(spec, "mode", "constant")
    value = float(a[2]) if len(a) > 2 and a[2] is not None and a[2].numel() else float(spec.attrs.get("value", 0.0))
    torch_pads = _pads_for_torch(pads)
    if mode == "constant":
        return F.pad(x, torch_pads, value=value)
    return F.pad(x, torch_pads[: 2 * (x.dim() - 2)], mode=PAD_MODES[mode])


def _depth_to_space(spec: NodeSpec, a: list) -> torch.Tensor:
    mode = _text(spec, "mode", "DCR")
    if mode == "CRD":
        return F.pixel_shuffle(a[0], spec.attrs["blocksize"])
    n, c, h, w = a[0].shape
    b = spec.attrs["blocksize"]
    x = a[0].reshape(n, b, b, c // (b * b), h, w).permute(0, 3, 4, 1, 5, 2)
    return x.reshape(n, c // (b * b), h * b, w * b)


def _space_to_depth(spec: NodeSpec, a: list) -> torch.Tensor:
    """Output channel (i * b + j) * C + c: the block position outermost (F.pixel_unshuffle puts c first)."""
    n, c, h, w = a[0].shape
    b = spec.attrs["blocksize"]
    x = a[0].reshape(n, c, h // b, b, w // b, b).permute(0, 3, 5, 1, 2, 4)
    return x.reshape(n, c * b * b, h // b, w // b)


# --- Resize ------------------------------------------------------------------------------------


def _resize(spec: NodeSpec, a: list) -> torch.Tensor:
    """Nearest and (n-)linear Resize, one axis at a time with onnxruntime's coordinate formulas, for every
    coordinate_transformation_mode but tf_crop_and_resize and every nearest_mode. Linear is exact for any
    scale; nearest where no coordinate falls within rounding error of a tie, which the importer ensures
    (integer and 1/2^k scales only). Cubic, antialias and keep_aspect_ratio_policy are refused there too."""
    x = a[0]
    axes = [ax % x.dim() for ax in spec.attrs.get("axes") or range(x.dim())]
    sizes = _ints(a[3]) if len(a) > 3 and a[3] is not None and a[3].numel() else None
    scales = None if sizes is not None else [float(s) for s in a[2].reshape(-1).tolist()]
    transform = _text(spec, "coordinate_transformation_mode", "half_pixel")
    linear, nearest_mode = _text(spec, "mode", "nearest") == "linear", _text(spec, "nearest_mode", "round_prefer_floor")
    for k, axis in enumerate(axes):
        length = x.shape[axis]
        scale = np.float32(sizes[k]) / np.float32(length) if sizes is not None else np.float32(scales[k])
        if scale == 1:
            continue
        out = sizes[k] if sizes is not None else int(np.float32(length) * scale)  # float32 product, as onnxruntime
        coords = torch.from_numpy(_source_coords(out, length, scale, transform)).to(x.device)
        x = _linear_along(x, axis, coords) if linear else x.index_select(axis, _nearest(coords, nearest_mode, length))
    return x


def _source_coords(out: int, length: int, scale: np.float32, transform: str) -> np.ndarray:
    """onnxruntime's GetOriginalCoordinateFromResizedCoordinate: float32 inputs, the sums in float64
    (as its half_pixel_symmetric; within an ulp of its float32 for the others), rounded to float32."""
    x = np.arange(out, dtype=np.float64)
    if transform == "asymmetric":
        coords = x / scale
    elif transform == "align_corners":
        coords = np.zeros(out) if out == 1 else x * (length - 1) / (out - 1)
    elif transform == "pytorch_half_pixel" and out == 1:
        coords = np.zeros(out)
    elif transform == "half_pixel_symmetric":
        adjustment = np.float32(out) / (scale * np.float32(length))
        offset = np.float32(length / 2) * (np.float32(1) - adjustment)
        coords = offset + (x + 0.5) / scale - 0.5
    else:  # half_pixel, and pytorch_half_pixel for out > 1
        coords = (x + 0.5) / scale - 0.5
    return coords.astype(np.float32)


def _nearest(coords: torch.Tensor, mode: str, length: int) -> torch.Tensor:
    floor = coords.floor()
    if mode == "floor":
        index = floor
    elif mode == "ceil":
        index = coords.ceil()
    else:  # round half down or half up, decided on the exact fraction
        frac = coords - floor
        index = floor + (frac > 0.5 if mode == "round_prefer_floor" else frac >= 0.5).to(coords.dtype)
    return index.long().clamp(0, length - 1)


def _linear_along(x: torch.Tensor, axis: int, coords: torch.Tensor) -> torch.Tensor:
    length = x.shape[axis]
    coords = coords.clamp(0, length - 1)
    low = coords.floor().long()
    high = (low + 1).clamp(max=length - 1)
    shape = [1] * x.dim()
    shape[axis] = len(coords)
    weight = (coords - low.to(coords.dtype)).reshape(shape).to(x.dtype)
    return x.index_select(axis, low) * (1 - weight) + x.index_select(axis, high) * weight


# --- reductions --------------------------------------------------------------------------------

Reduction = Callable[[torch.Tensor, list[int], bool], torch.Tensor]


def _prod(x: torch.Tensor, dims: list[int], keep: bool) -> torch.Tensor:
    for dim in sorted(dims, reverse=True):  # torch.prod takes one dim; the highest first keeps the rest valid
        x = x.prod(dim=dim, keepdim=keep)
    return x


_REDUCTIONS: dict[str, Reduction] = {
    "ReduceMean": lambda x, d, k: x.mean(dim=d, keepdim=k),
    "ReduceSum": lambda x, d, k: x.sum(dim=d, keepdim=k),
    "ReduceMax": lambda x, d, k: torch.amax(x, dim=d, keepdim=k),
    "ReduceMin": lambda x, d, k: torch.amin(x, dim=d, keepdim=k),
    "ReduceL1": lambda x, d, k: x.abs().sum(dim=d, keepdim=k),
    "ReduceL2": lambda x, d, k: x.pow(2).sum(dim=d, keepdim=k).sqrt(),
    "ReduceSumSquare": lambda x, d, k: x.pow(2).sum(dim=d, keepdim=k),
    "ReduceLogSum": lambda x, d, k: x.sum(dim=d, keepdim=k).log(),
    "ReduceLogSumExp": lambda x, d, k: torch.logsumexp(x, dim=d, keepdim=k),
    "ReduceProd": _prod,
}


def _reduce(fn: Reduction) -> Op:
    """Axes from the input (ReduceSum 13, all at 18) or the attribute; none means every axis, unless
    noop_with_empty_axes (opset 18): then no axis is reduced, but the elementwise steps still run
    (ReduceSumSquare gives x², ReduceLogSum log x), as a reduction over a new axis of length 1 does."""

    def run(spec: NodeSpec, a: list) -> torch.Tensor:
        axes = _ints(a[1]) if len(a) > 1 and a[1] is not None else spec.attrs.get("axes")
        if not axes and spec.attrs.get("noop_with_empty_axes", 0):
            return fn(a[0].unsqueeze(-1), [a[0].dim()], False)
        dims = list(range(a[0].dim())) if not axes else sorted(ax % a[0].dim() for ax in axes)
        return fn(a[0], dims, bool(spec.attrs.get("keepdims", 1)))

    return run


# --- elementwise -------------------------------------------------------------------------------


def _variadic(fn: Callable) -> Op:
    def run(spec: NodeSpec, a: list) -> torch.Tensor:
        out = a[0]
        for t in a[1:]:
            out = fn(out, t)
        return out

    return run


def _prelu(spec: NodeSpec, a: list) -> torch.Tensor:
    return torch.where(a[0] >= 0, a[0], a[0] * a[1])


_OPS: dict[str, Op] = {
    "Relu": _unary(F.relu),
    "LeakyRelu": lambda s, a: F.leaky_relu(a[0], s.attrs.get("alpha", 0.01)),
    "Clip": _clip,
    "Sigmoid": _unary(torch.sigmoid),
    "HardSigmoid": lambda s, a: torch.clamp(s.attrs.get("alpha", 0.2) * a[0] + s.attrs.get("beta", 0.5), 0, 1),
    "HardSwish": _unary(F.hardswish),
    "Tanh": _unary(torch.tanh),
    "Elu": lambda s, a: F.elu(a[0], s.attrs.get("alpha", 1.0)),
    "Selu": lambda s, a: s.attrs.get("gamma", SELU_GAMMA) * F.elu(a[0], s.attrs.get("alpha", SELU_ALPHA)),
    "Celu": lambda s, a: F.celu(a[0], s.attrs.get("alpha", 1.0)),
    "Softplus": _unary(F.softplus),
    "Softsign": _unary(F.softsign),
    "Mish": _unary(F.mish),
    "Gelu": lambda s, a: F.gelu(a[0], approximate=_text(s, "approximate", "none")),
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
    "ThresholdedRelu": lambda s, a: torch.where(a[0] > s.attrs.get("alpha", 1.0), a[0], torch.zeros_like(a[0])),
    "Shrink": _shrink,
    "Cast": _cast,
    "Identity": _unary(lambda x: x),
    "Dropout": lambda s, a: a[0],
    "Softmax": _softmax(torch.softmax),
    "LogSoftmax": _softmax(torch.log_softmax),
    "Hardmax": _hardmax,
    "ArgMax": _arg_index(torch.argmax),
    "ArgMin": _arg_index(torch.argmin),
    "MaxPool": _maxpool,
    "AveragePool": _avgpool,
    "LpPool": _lppool,
    "GlobalAveragePool": lambda s, a: a[0].mean(dim=tuple(range(2, a[0].dim())), keepdim=True),
    "GlobalMaxPool": lambda s, a: torch.amax(a[0], dim=tuple(range(2, a[0].dim())), keepdim=True),
    "GlobalLpPool": _global_lppool,
    "BatchNormalization": _batchnorm,
    "InstanceNormalization": _instancenorm,
    "GroupNormalization": _groupnorm,
    "LRN": _lrn,
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
    "Flatten": _flatten,
    "Reshape": _reshape,
    "Transpose": lambda s, a: a[0].permute(*(s.attrs.get("perm") or reversed(range(a[0].dim())))),
    "Squeeze": _squeeze,
    "Unsqueeze": _unsqueeze,
    "Gather": _gather,
    "Expand": lambda s, a: torch.broadcast_to(a[0], torch.broadcast_shapes(a[0].shape, tuple(_ints(a[1])))),
    "Tile": lambda s, a: a[0].repeat(*_ints(a[1])),
    "Pad": _pad,
    "Resize": _resize,
    **{op: _reduce(fn) for op, fn in _REDUCTIONS.items()},
    "DepthToSpace": _depth_to_space,
    "SpaceToDepth": _space_to_depth,
}
# What the bridge runs: the table above, and the Conv/Gemm nodes that become LayerModules.
TORCH_OPS = frozenset(_OPS) | {"Conv", "Gemm"}
