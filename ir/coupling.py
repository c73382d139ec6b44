"""Channel coupling: which tensors' channel axes must share one permutation (onnx-io.md §1.5).

Every value with channels on axis 1 gets a *view*: the sequence of segments of *channel spaces* it
holds, in order. A space is born where channels are defined (a Conv/Gemm output, the graph input, a
reshape that scrambles channels). Transparent ops pass views through; Concat concatenates them;
Split/Slice cut them; elementwise ops with several channel operands *merge* spaces. Merged spaces form
a *group*: permuting one permutes all. A group is *rigid* when something pins its order (graph
input/output, a cut inside a space, a channel shuffle...), and the node responsible is recorded.

The result is data: passes read the views, the per-channel parameters and the sinks listed here and
never re-derive coupling themselves. Like Torch-Pruning's DependencyGraph, but on ONNX values.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Container, Iterable
from dataclasses import dataclass, field

import networkx as nx
import numpy as np
import onnx

from odimo.ir.graph import GraphIndex, attr, describe_node


@dataclass(frozen=True)
class Segment:
    """Channels [offset, offset + length) of `space`, each spread over `inner` flat features."""

    space: str
    offset: int
    length: int
    inner: int = 1


View = tuple[Segment, ...]


@dataclass(frozen=True)
class ChannelParam:
    """A constant input of a node whose `axis` is indexed by the channels of `view`."""

    node: str
    input_index: int
    axis: int
    view: View


@dataclass(frozen=True)
class SinkInput:
    """A Conv/Gemm reading channels: its weight axis 1 is indexed by `view` (flattened with inner)."""

    node: str
    view: View


@dataclass(frozen=True)
class ChannelGroup:
    """Spaces that share one order. `rigid_because` names the node that pins the order, if any."""

    id: str
    spaces: tuple[str, ...]
    producers: tuple[str, ...]
    channels: int
    rigid_because: str | None
    merged_by: tuple[str, ...] = ()  # the nodes where spaces of this group meet (e.g. a residual Add)

    @property
    def rigid(self) -> bool:
        return self.rigid_because is not None


@dataclass(frozen=True)
class Dependents:
    """What must follow when a layer's output channels are permuted, and whether that is exact."""

    group: ChannelGroup
    params: tuple[ChannelParam, ...]
    sinks: tuple[SinkInput, ...]

    @property
    def exact(self) -> bool:
        """A permutation is realizable by re-indexing weights only when the group is not rigid."""
        return not self.group.rigid


@dataclass(frozen=True)
class Coupling:
    """The coupling analysis of one canonical graph."""

    views: dict[str, View]
    groups: tuple[ChannelGroup, ...]
    group_of_space: dict[str, str]
    params: tuple[ChannelParam, ...]
    sinks: tuple[SinkInput, ...]

    def group(self, group_id: str) -> ChannelGroup:
        return next(g for g in self.groups if g.id == group_id)

    def group_of_layer(self, layer: str) -> ChannelGroup:
        """The group of the space a Conv/Gemm node produces."""
        return self.group(self.group_of_space[layer])

    def group_of_value(self, value: str) -> ChannelGroup:
        """The group of a value's first channel segment (a depthwise conv passes its input's)."""
        return self.group(self.group_of_space[self.views[value][0].space])

    def dependents(self, layer: str) -> Dependents:
        group = self.group_of_layer(layer)
        spaces = {space for space, owner in self.group_of_space.items() if owner == group.id}
        return Dependents(
            group=group,
            params=tuple(p for p in self.params if touches(p.view, spaces)),
            sinks=tuple(s for s in self.sinks if touches(s.view, spaces)),
        )

    def nodes_reading(self, spaces: Container[str]) -> set[str]:
        """Nodes with a parameter or a sink input whose channels lie in one of `spaces`."""
        return {p.node for p in self.params if touches(p.view, spaces)} | {
            s.node for s in self.sinks if touches(s.view, spaces)
        }


def touches(view: View, spaces: Container[str]) -> bool:
    """Whether a channel segment of `view` lies in one of `spaces`."""
    return any(seg.space in spaces for seg in view)


def view_positions(view: View, perms: dict[str, np.ndarray]) -> np.ndarray:
    """Index map of a view under per-space permutations: new position p reads old position map[p].

    `perms[space][q]` is the original channel stored at position q of that space (identity when the
    space is absent). Features after Flatten expand each channel into `inner` consecutive columns.
    """
    old_start = 0
    parts = []
    for seg in view:
        perm = perms.get(seg.space)
        channels = (
            np.arange(seg.offset, seg.offset + seg.length)
            if perm is None
            else perm[seg.offset : seg.offset + seg.length]
        )
        local = channels - seg.offset
        cols = (local[:, None] * seg.inner + np.arange(seg.inner)[None, :]).reshape(-1)
        parts.append(old_start + cols)
        old_start += seg.length * seg.inner
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


# --- the rule table ----------------------------------------------------------------------------

UNARY_OPS = frozenset(
    {
        "Relu",
        "LeakyRelu",
        "Clip",
        "Sigmoid",
        "HardSigmoid",
        "HardSwish",
        "Tanh",
        "Elu",
        "Selu",
        "Celu",
        "Softplus",
        "Softsign",
        "Mish",
        "Gelu",
        "Erf",
        "Exp",
        "Log",
        "Sqrt",
        "Neg",
        "Abs",
        "Reciprocal",
        "Sin",
        "Cos",
        "Floor",
        "Ceil",
        "Round",
        "Sign",
        "Cast",
        "ThresholdedRelu",
        "Shrink",
        "Identity",
        "Dropout",
        "Softmax",
        "LogSoftmax",
        "Hardmax",
    }
)
POOL_OPS = frozenset({"MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "LpPool", "GlobalLpPool"})
ELEMENTWISE_OPS = frozenset({"Add", "Sub", "Mul", "Div", "Max", "Min", "Sum", "Mean", "Pow", "PRelu"})
REDUCE_OPS = frozenset(
    {
        "ReduceMean",
        "ReduceMax",
        "ReduceMin",
        "ReduceSum",
        "ReduceL1",
        "ReduceL2",
        "ReduceLogSumExp",
        "ReduceProd",
        "ReduceSumSquare",
        "ReduceLogSum",
    }
)
RESHAPING_OPS = frozenset(
    {
        "Reshape",
        "Transpose",
        "Gather",
        "DepthToSpace",
        "SpaceToDepth",
        "Unsqueeze",
        "Squeeze",
        "Expand",
        "Tile",
        "ArgMax",
        "ArgMin",
    }
)
PER_CHANNEL_NORMS = {"BatchNormalization": (1, 2, 3, 4), "InstanceNormalization": (1, 2)}
NEVER_SUPPORTED = {
    "If": "control flow",
    "Loop": "control flow",
    "Scan": "control flow",
    "ConvTranspose": "transposed convolution",
    "ConvInteger": "integer convolution",
}
INDEX_OPS = frozenset({"ArgMax", "ArgMin"})
# What may follow an ArgMax/ArgMin to the graph output: ops that move indices, never compute with them.
INDEX_TAIL_OPS = frozenset({"Reshape", "Squeeze", "Unsqueeze", "Cast", "Identity", "Flatten"})
FLOAT = onnx.TensorProto.FLOAT
INDEX_CASTS = frozenset({FLOAT, onnx.TensorProto.INT32, onnx.TensorProto.INT64})  # what a final ArgMax may cast to
RESIZE_MODES = frozenset({"nearest", "linear"})
PAD_MODES = frozenset({"constant", "reflect", "edge", "wrap"})


@dataclass(frozen=True)
class IndexTail:
    """A graph ending in ArgMax/ArgMin: training reads `logits` and skips `nodes` (indices have no
    gradient); evaluation compares class indices."""

    logits: str
    nodes: frozenset[str]


def index_tail(graph: onnx.GraphProto) -> IndexTail | None:
    """The ArgMax/ArgMin (and the shape-only ops after it) that produce the graph output, if any."""
    producer = {out: node for node in graph.node for out in node.output}
    value, nodes = graph.output[0].name, []
    while value in producer and producer[value].op_type in INDEX_TAIL_OPS:
        nodes.append(producer[value].name)
        value = producer[value].input[0]
    node = producer.get(value)
    if node is None or node.op_type not in INDEX_OPS:
        return None
    return IndexTail(node.input[0], frozenset([*nodes, node.name]))


def unsupported_nodes(model: onnx.ModelProto, canonical: bool = True) -> list[str]:
    """Describe every node odimo cannot import; empty when the graph is fine.

    Before canonicalization only the rejections canonicalization cannot cure are listed (custom
    domains, control flow, 1-D/3-D convs, training-mode BN); after it, every op outside the table.
    """
    index = GraphIndex.of(model.graph)
    local_functions = {(f.domain, f.name) for f in model.functions}  # inlined by canonicalize, body checked then
    problems = []
    for k, node in enumerate(model.graph.node):
        if (node.domain, node.op_type) in local_functions:
            continue
        reason = _unsupported_reason(node, index, canonical)
        if reason:
            problems.append(f"{describe_node(k, node)}: {reason}")
    return problems


def _unsupported_reason(node: onnx.NodeProto, index: GraphIndex, canonical: bool) -> str | None:
    if node.domain not in ("", "ai.onnx"):
        return f"custom domain '{node.domain}'"
    if node.op_type in NEVER_SUPPORTED:
        return NEVER_SUPPORTED[node.op_type]
    if node.op_type == "Conv":
        rank = len(index.shapes.get(node.input[0], ())) or (
            index.array(node.input[1]).ndim if index.is_constant(node.input[1]) else 4
        )
        if rank != 4:
            return f"Conv{rank - 2}d (odimo maps 2-D convolutions only)"
        if not index.is_constant(node.input[1]):
            return "weight is computed, not an initializer"
    if node.op_type == "BatchNormalization" and (
        attr(node, "training_mode", 0) or len([o for o in node.output if o]) > 1
    ):
        return "training-mode BatchNormalization (export with model.eval())"
    if not canonical:
        return None
    if node.op_type == "MatMul":
        return "MatMul of two activations (or of a non-2-D activation)"
    if node.op_type == "Gemm" and (not index.is_constant(node.input[1]) or attr(node, "transA", 0)):
        return "Gemm with a computed weight or transA=1"
    computed_bias = len(node.input) > 2 and node.input[2] and not index.is_constant(node.input[2])
    if node.op_type in ("Conv", "Gemm") and computed_bias:
        return f"{node.op_type} with a computed bias"
    if node.op_type not in _HANDLERS:
        return "no channel rule for this op"
    limit = ATTRIBUTE_LIMITS.get(node.op_type)
    return limit(node, index) if limit else None


# --- attribute limits: what the torch bridge (retrain/bridge.py) does not compute exactly -----------

Limit = Callable[[onnx.NodeProto, GraphIndex], str | None]
_BRIDGE = "the training bridge"


def _text(node: onnx.NodeProto, name: str, default: str) -> str:
    value = attr(node, name, default)
    return value.decode() if isinstance(value, bytes) else value


def _constant_ints(node: onnx.NodeProto, position: int, index: GraphIndex) -> list[int] | None:
    """A constant int input as a list; None when absent or computed."""
    if position >= len(node.input) or not node.input[position] or not index.is_constant(node.input[position]):
        return None
    return [int(v) for v in index.array(node.input[position]).reshape(-1)]


def _index_op_limit(node: onnx.NodeProto, index: GraphIndex) -> str | None:
    """ArgMax/ArgMin ends the graph, over the class axis: odimo trains on the logits it reads."""
    value = node.output[0]
    while True:
        users = index.consumers.get(value, [])
        if value in index.outputs and not users:
            break
        if value in index.outputs or len(users) != 1 or users[0].op_type not in INDEX_TAIL_OPS:
            feeds = ", ".join(f"'{u.name}' ({u.op_type})" for u in users) or "no node"
            tail_ops = ", ".join(sorted(INDEX_TAIL_OPS))
            return (
                f"{node.op_type} inside the network (its indices feed {feeds}): odimo trains on logits, so "
                f"{node.op_type} may only end the graph, followed by nothing but {tail_ops}"
            )
        value = users[0].output[0]
    rank = len(index.shapes.get(node.input[0], ()))
    axis = attr(node, "axis", 0)
    if rank and axis % rank != 1:
        return f"axis={axis}: odimo reads class scores on axis 1, so a final {node.op_type} must run over axis 1"
    return None


def _after_index_op(node: onnx.NodeProto, index: GraphIndex) -> bool:
    """Whether `node` is in the shape-only tail of an ArgMax/ArgMin (it moves class indices)."""
    producer = index.producer.get(node.input[0])
    while producer is not None and producer.op_type in INDEX_TAIL_OPS:
        producer = index.producer.get(producer.input[0])
    return producer is not None and producer.op_type in INDEX_OPS


def _cast_limit(node: onnx.NodeProto, index: GraphIndex) -> str | None:
    to = attr(node, "to")
    if to == FLOAT or (to in INDEX_CASTS and _after_index_op(node, index)):
        return None
    name = onnx.TensorProto.DataType.Name(to)
    return f"to={name}: {_BRIDGE} trains float32 networks (integer casts only after a final ArgMax)"


def _gelu_limit(node: onnx.NodeProto, index: GraphIndex) -> str | None:
    approximate = _text(node, "approximate", "none")
    return None if approximate in ("none", "tanh") else f"approximate='{approximate}' (ONNX defines 'none' and 'tanh')"


def _dropout_limit(node: onnx.NodeProto, index: GraphIndex) -> str | None:
    mask = node.output[1] if len(node.output) > 1 else ""
    read = mask and (index.consumers.get(mask) or mask in index.outputs)
    return f"the mask output is read: {_BRIDGE} computes the data output only" if read else None


def _pool_limit(node: onnx.NodeProto, index: GraphIndex) -> str | None:
    kernel = list(attr(node, "kernel_shape", []))
    if len(kernel) != 2:
        return f"kernel_shape={kernel}: odimo pools over 2 spatial axes only"
    auto_pad = _text(node, "auto_pad", "NOTSET")
    if auto_pad != "NOTSET":
        return f"auto_pad='{auto_pad}': {_BRIDGE} reads explicit pads (re-export with explicit padding)"
    if node.op_type == "MaxPool" and len(node.output) > 1 and node.output[1]:
        return f"the Indices output: {_BRIDGE} computes the values only"
    if attr(node, "ceil_mode", 0) and _window_starts_in_right_pad(node, index):
        return (
            "ceil_mode=1 with a last window that starts in the right padding: onnxruntime drops that "
            "window and ONNX shape inference keeps it (pad less or use ceil_mode=0)"
        )
    return None


def _window_starts_in_right_pad(node: onnx.NodeProto, index: GraphIndex) -> bool:
    shape = index.shapes.get(node.input[0], ())
    kernel = list(attr(node, "kernel_shape"))
    strides = list(attr(node, "strides", [1, 1]))
    dilations = list(attr(node, "dilations", [1, 1]))
    pads = list(attr(node, "pads", [0, 0, 0, 0]))
    for i, size in enumerate(shape[2:]):
        if not isinstance(size, int):
            return True
        total = size + pads[i] + pads[i + 2] - dilations[i] * (kernel[i] - 1) - 1
        if -(-total // strides[i]) * strides[i] >= size + pads[i]:
            return True
    return False


def _pad_limit(node: onnx.NodeProto, index: GraphIndex) -> str | None:
    """Reflect, edge and wrap run as F.pad, which pads (never crops) the spatial axes of a 4-D tensor."""
    mode = _text(node, "mode", "constant")
    if mode not in PAD_MODES:
        return f"mode='{mode}'"
    if mode == "constant":
        return None
    pads = list(attr(node, "pads", [])) or _constant_ints(node, 1, index)
    axes = _constant_ints(node, 3, index) if len(node.input) > 3 and node.input[3] else None
    rank = len(index.shapes.get(node.input[0], ()))
    if pads is None or (len(node.input) > 3 and node.input[3] and axes is None) or rank != 4:
        return f"mode='{mode}' with computed pads or axes, or on a tensor of rank {rank}: {_BRIDGE} pads 4-D tensors"
    axes = [a % rank for a in axes] if axes is not None else list(range(rank))
    touched = {a for k, a in enumerate(axes) if pads[k] or pads[k + len(axes)]}
    if touched & {0, 1} or any(p < 0 for p in pads):
        return f"mode='{mode}' pads={pads}: {_BRIDGE} pads only spatial axes in this mode, and never crops"
    return None


def _resize_limit(node: onnx.NodeProto, index: GraphIndex) -> str | None:
    mode = _text(node, "mode", "nearest")
    if mode not in RESIZE_MODES:
        return f"mode='{mode}': {_BRIDGE} resizes with 'nearest' and 'linear' only"
    transform = _text(node, "coordinate_transformation_mode", "half_pixel")
    if transform == "tf_crop_and_resize":
        return f"coordinate_transformation_mode='{transform}': {_BRIDGE} does not crop"
    if attr(node, "antialias", 0):
        return f"antialias=1: {_BRIDGE} does not antialias"
    policy = _text(node, "keep_aspect_ratio_policy", "stretch")
    sizes = node.input[3] if len(node.input) > 3 else ""
    if policy != "stretch" and sizes and (not index.is_constant(sizes) or index.array(sizes).size):
        return f"keep_aspect_ratio_policy='{policy}': {_BRIDGE} stretches to the given sizes"
    return _nearest_scale_limit(node, index) if mode == "nearest" else None


def _nearest_scale_limit(node: onnx.NodeProto, index: GraphIndex) -> str | None:
    """Nearest picks a pixel by rounding a coordinate. With an integer or 1/2^k scale every coordinate
    is exact or far from a tie; with another (4/7, 1.5) some land within float error of a tie, where
    onnxruntime's rounding depends on its internal precision and the bridge's may differ."""
    scales = _resize_scales(node, index)
    if scales is None:
        return f"mode='nearest' with computed scales or sizes: odimo cannot check that {_BRIDGE} rounds as onnxruntime"
    for axis, scale in scales.items():
        if scale != 1 and not (float(scale).is_integer() or (scale < 1 and math.frexp(float(scale))[0] == 0.5)):
            return (
                f"mode='nearest' with scale {float(scale):.4g} on axis {axis}: only integer and 1/2^k scales round "
                f"exactly as onnxruntime does (use mode='linear', or an integer scale)"
            )
    return None


def _resize_scales(node: onnx.NodeProto, index: GraphIndex) -> dict[int, np.float32] | None:
    """The float32 scale of each axis of known length, as onnxruntime computes it (sizes: out / in);
    None when scales or sizes are computed."""
    shape = index.shapes.get(node.input[0], ())
    rank = len(shape)
    axes = [a % rank for a in attr(node, "axes", range(rank))]
    scales = _constant_floats(node, 2, index)
    if scales is not None:
        return {axis: np.float32(s) for axis, s in zip(axes, scales)}
    sizes = _constant_ints(node, 3, index)
    if not sizes:
        return None
    return {a: np.float32(n) / np.float32(shape[a]) for a, n in zip(axes, sizes) if isinstance(shape[a], int)}


def _constant_floats(node: onnx.NodeProto, position: int, index: GraphIndex) -> list[float] | None:
    """A constant, non-empty float input as a list; None when absent, empty or computed."""
    if position >= len(node.input) or not node.input[position] or not index.is_constant(node.input[position]):
        return None
    return [float(v) for v in index.array(node.input[position]).reshape(-1)] or None


ATTRIBUTE_LIMITS: dict[str, Limit] = {
    "ArgMax": _index_op_limit,
    "ArgMin": _index_op_limit,
    "Cast": _cast_limit,
    "Gelu": _gelu_limit,
    "Dropout": _dropout_limit,
    "MaxPool": _pool_limit,
    "AveragePool": _pool_limit,
    "LpPool": _pool_limit,
    "Pad": _pad_limit,
    "Resize": _resize_limit,
}


# --- the builder -------------------------------------------------------------------------------


@dataclass
class _Builder:
    index: GraphIndex
    merge_io: frozenset[str]
    views: dict[str, View] = field(default_factory=dict)
    space_length: dict[str, int] = field(default_factory=dict)
    space_producer: dict[str, str] = field(default_factory=dict)
    merges: nx.Graph = field(default_factory=nx.Graph)
    rigid: dict[str, str] = field(default_factory=dict)
    params: list[ChannelParam] = field(default_factory=list)
    sinks: list[SinkInput] = field(default_factory=list)

    # spaces ---------------------------------------------------------------------------------
    def new_space(self, name: str, producer: str, length: int, rigid_because: str | None = None) -> View:
        self.space_length[name] = length
        self.space_producer[name] = producer
        self.merges.add_node(name)
        if rigid_because:
            self.rigid.setdefault(name, rigid_because)
        return (Segment(name, 0, length),)

    def make_rigid(self, view: View, reason: str) -> None:
        for seg in view:
            self.rigid.setdefault(seg.space, reason)

    def merge(self, a: View, b: View, reason: str) -> View:
        """Spaces of two views meeting channel-by-channel share one order."""
        shape = lambda v: [(s.offset, s.length, s.inner) for s in v]  # noqa: E731
        if shape(a) == shape(b):
            for x, y in zip(a, b):
                self.merges.add_edge(x.space, y.space, by=reason)
            return a
        spaces = [s.space for s in (*a, *b)]
        for x, y in zip(spaces, spaces[1:]):
            self.merges.add_edge(x, y, by=reason)
        self.make_rigid((*a, *b), f"{reason}: operands split channels differently")
        return a

    # values ---------------------------------------------------------------------------------
    def view(self, name: str) -> View | None:
        return self.views.get(name)

    def channels(self, name: str) -> int | None:
        shape = self.index.shapes.get(name)
        if shape is None or len(shape) < 2 or not isinstance(shape[1], int):
            return None
        return shape[1]

    def rank(self, name: str) -> int:
        return len(self.index.shapes.get(name, ()))

    def set_output(self, node: onnx.NodeProto, view: View | None, output: int = 0) -> None:
        if view is not None and output < len(node.output) and node.output[output]:
            self.views[node.output[output]] = view

    def rigid_output(self, node: onnx.NodeProto, reason: str) -> None:
        """Every activation input pinned; every channel-carrying output a new rigid space."""
        for name in node.input:
            if self.view(name):
                self.make_rigid(self.views[name], reason)
        for k, out in enumerate(node.output):
            channels = self.channels(out) if out else None
            if channels:
                space = node.name if k == 0 else f"{node.name}:{k}"
                self.set_output(node, self.new_space(space, node.name, channels, reason), k)


def analyse_coupling(model: onnx.ModelProto, merge_io: Iterable[str] = ()) -> Coupling:
    """Build the coupling of a canonical, shape-inferred model.

    `merge_io` names Conv nodes whose output channel c reads input channel c after mapping (Darkside:
    a DWE depthwise substitute), so their input and output spaces merge.
    """
    graph = model.graph
    builder = _Builder(GraphIndex.of(graph), frozenset(merge_io))
    for inp in graph.input:
        if inp.name not in builder.index.initializers and builder.channels(inp.name):
            builder.views[inp.name] = builder.new_space(
                f"input:{inp.name}", inp.name, builder.channels(inp.name), f"graph input '{inp.name}'"
            )
    for k, node in enumerate(graph.node):
        where = describe_node(k, node)
        flattened = [
            builder.views[n] for n in node.input if n in builder.views and any(s.inner > 1 for s in builder.views[n])
        ]
        if flattened and not (node.op_type in ("Gemm",) or node.op_type in UNARY_OPS):
            for view in flattened:
                builder.make_rigid(view, f"{where} reads flattened features")
        _HANDLERS[node.op_type](builder, node, where)
    for out in graph.output:
        if out.name in builder.views:
            builder.make_rigid(builder.views[out.name], f"graph output '{out.name}'")
    return _finish(builder)


def _finish(builder: _Builder) -> Coupling:
    order = {space: k for k, space in enumerate(builder.space_length)}
    components = sorted(
        (sorted(c, key=order.__getitem__) for c in nx.connected_components(builder.merges)), key=lambda c: order[c[0]]
    )
    groups, group_of_space = [], {}
    for k, spaces in enumerate(components):
        gid = f"g{k}"
        reasons = [builder.rigid[s] for s in spaces if s in builder.rigid]
        merged_by = tuple(dict.fromkeys(data["by"] for _, _, data in builder.merges.subgraph(spaces).edges(data=True)))
        groups.append(
            ChannelGroup(
                id=gid,
                spaces=tuple(spaces),
                producers=tuple(builder.space_producer[s] for s in spaces),
                channels=builder.space_length[spaces[0]],
                rigid_because=reasons[0] if reasons else None,
                merged_by=merged_by,
            )
        )
        group_of_space.update({s: gid for s in spaces})
    return Coupling(dict(builder.views), tuple(groups), group_of_space, tuple(builder.params), tuple(builder.sinks))


# --- handlers ----------------------------------------------------------------------------------

Handler = Callable[[_Builder, onnx.NodeProto, str], None]


def _first_view(b: _Builder, node: onnx.NodeProto) -> View | None:
    return next((b.views[n] for n in node.input if n in b.views), None)


def _transparent(b: _Builder, node: onnx.NodeProto, where: str) -> None:
    view = _first_view(b, node)
    b.set_output(node, view)
    if view is not None:
        for idx in PER_CHANNEL_NORMS.get(node.op_type, ()):
            if idx < len(node.input) and node.input[idx]:
                b.params.append(ChannelParam(node.name, idx, 0, view))


def _conv(b: _Builder, node: onnx.NodeProto, where: str) -> None:
    view = b.view(node.input[0])
    weight = b.index.array(node.input[1])
    c_out, c_in_per_group = weight.shape[:2]
    c_in = b.channels(node.input[0]) or c_in_per_group
    groups = attr(node, "group", 1)
    if groups > 1 and groups == c_in == c_out:
        _transparent(b, node, where)
        b.params.append(ChannelParam(node.name, 1, 0, view))
        # The bias too when there is none yet: the passes give a quantized layer one (set_weights
        # writes its calibrated shift), and it must follow the channels like the weight.
        b.params.append(ChannelParam(node.name, 2, 0, view))
        return
    if groups > 1:
        b.rigid_output(node, f"{where} is a grouped convolution (group={groups})")
        b.sinks.append(SinkInput(node.name, view))
        return
    _layer(b, node, where, view, c_out)
    if node.name in b.merge_io:
        b.merge(view, b.views[node.output[0]], f"{where} (a depthwise substitute reads channel c for output c)")


def _gemm(b: _Builder, node: onnx.NodeProto, where: str) -> None:
    c_out = b.index.array(node.input[1]).shape[0]
    _layer(b, node, where, b.view(node.input[0]), c_out)


def _layer(b: _Builder, node: onnx.NodeProto, where: str, view: View | None, c_out: int) -> None:
    """Conv g=1 / Gemm: a sink of its input's channels and the producer of a new space."""
    if view is not None:
        b.sinks.append(SinkInput(node.name, view))
    b.set_output(node, b.new_space(node.name, node.name, c_out))


def _elementwise(b: _Builder, node: onnx.NodeProto, where: str) -> None:
    out_rank = b.rank(node.output[0])
    channels = b.channels(node.output[0])
    merged: View | None = None
    for name in node.input:
        if not name:
            continue
        if name in b.views:
            if b.channels(name) != channels or b.rank(name) != out_rank:
                continue  # broadcast along channels (e.g. a spatial attention map): no coupling
            merged = b.views[name] if merged is None else b.merge(merged, b.views[name], where)
    if merged is None:
        if channels:
            b.rigid_output(node, f"{where} creates channels from constants")
        return
    for k, name in enumerate(node.input):
        if name and b.index.is_constant(name):
            value = b.index.array(name)
            axis = value.ndim - (out_rank - 1)
            if axis >= 0 and value.shape[axis] == channels and channels > 1:
                b.params.append(ChannelParam(node.name, k, axis, merged))
    b.set_output(node, merged)


def _concat(b: _Builder, node: onnx.NodeProto, where: str) -> None:
    rank = b.rank(node.output[0])
    axis = attr(node, "axis") % rank
    parts: list[View] = []
    for k, name in enumerate(node.input):
        if name in b.views:
            parts.append(b.views[name])
        elif b.channels(name):
            parts.append(
                b.new_space(f"{node.name}/const{k}", node.name, b.channels(name), f"{where} concatenates a constant")
            )
    if axis != 1:
        merged = parts[0]
        for part in parts[1:]:
            merged = b.merge(merged, part, where)
        b.set_output(node, merged)
        return
    b.set_output(node, tuple(seg for part in parts for seg in part))


def _slice_view(b: _Builder, view: View, start: int, stop: int, where: str) -> View:
    """Channels [start, stop) of a view; a cut inside a space pins that space."""
    out, pos = [], 0
    for seg in view:
        lo, hi = max(start, pos), min(stop, pos + seg.length)
        if lo < hi:
            part = Segment(seg.space, seg.offset + lo - pos, hi - lo, seg.inner)
            if part.length != seg.length:
                b.make_rigid((seg,), f"{where} takes channels {start}:{stop}, cutting inside '{seg.space}'")
            out.append(part)
        pos += seg.length
    return tuple(out)


def _split(b: _Builder, node: onnx.NodeProto, where: str) -> None:
    view = _first_view(b, node)
    rank = b.rank(node.input[0])
    if view is None:
        return
    if attr(node, "axis", 0) % rank != 1:
        for k in range(len(node.output)):
            b.set_output(node, view, k)
        return
    start = 0
    for k, out in enumerate(node.output):
        size = b.channels(out)
        b.set_output(node, _slice_view(b, view, start, start + size, where), k)
        start += size


def _slice(b: _Builder, node: onnx.NodeProto, where: str) -> None:
    view = b.view(node.input[0])
    if view is None:
        return
    rank = b.rank(node.input[0])
    operands = [node.input[i] if i < len(node.input) else "" for i in range(1, 5)]
    if not all(b.index.is_constant(n) for n in operands if n):
        b.rigid_output(node, f"{where} has computed slice bounds")
        return
    starts, ends, axes, steps = (b.index.array(n).tolist() if n else None for n in operands)
    axes = axes if axes is not None else list(range(len(starts)))
    steps = steps if steps is not None else [1] * len(starts)
    for start, end, axis, step in zip(starts, ends, axes, steps):
        if axis % rank != 1:
            continue
        picked = range(view_width_channels(view))[slice(start, end, step)]
        if step != 1 or not picked:
            b.rigid_output(node, f"{where} takes channels with step {step}")
            return
        view = _slice_view(b, view, picked[0], picked[-1] + 1, where)
    b.set_output(node, view)


def view_width_channels(view: View) -> int:
    return sum(s.length for s in view)


def _flatten(b: _Builder, node: onnx.NodeProto, where: str) -> None:
    view = b.view(node.input[0])
    shape = b.index.shapes.get(node.input[0], ())
    if view is None:
        return
    if attr(node, "axis", 1) != 1 or not all(isinstance(d, int) for d in shape[2:]):
        b.rigid_output(node, f"{where} flattens across the channel axis")
        return
    inner = int(np.prod(shape[2:])) if len(shape) > 2 else 1
    b.set_output(node, tuple(Segment(s.space, s.offset, s.length, s.inner * inner) for s in view))


def _pad(b: _Builder, node: onnx.NodeProto, where: str) -> None:
    pads = attr(node, "pads")
    if pads is None and len(node.input) > 1 and b.index.is_constant(node.input[1]):
        pads = b.index.array(node.input[1]).tolist()
    axes_given = len(node.input) > 3 and node.input[3]
    rank = b.rank(node.input[0])
    touches_channels = pads is None or axes_given or pads[1] != 0 or pads[rank + 1] != 0
    if touches_channels:
        b.rigid_output(node, f"{where} pads the channel axis (or pads are computed)")
    else:
        _transparent(b, node, where)


def _same_channels(b: _Builder, node: onnx.NodeProto, where: str) -> None:
    """Resize and similar: transparent when the channel dim is untouched."""
    if b.channels(node.input[0]) == b.channels(node.output[0]) and b.rank(node.input[0]) == b.rank(node.output[0]):
        _transparent(b, node, where)
    else:
        b.rigid_output(node, f"{where} changes the channel dim")


def _reduce(b: _Builder, node: onnx.NodeProto, where: str) -> None:
    rank = b.rank(node.input[0])
    axes = attr(node, "axes")
    if axes is None and len(node.input) > 1 and node.input[1]:
        axes = b.index.array(node.input[1]).tolist() if b.index.is_constant(node.input[1]) else None
    if axes is None or 1 in [a % rank for a in axes]:
        return  # reduction over channels: invariant to their order, no view
    _transparent(b, node, where)


def _reshaping(b: _Builder, node: onnx.NodeProto, where: str) -> None:
    """Reshape/Transpose/...: transparent if axes 0-1 stay put, else a channel shuffle (rigid)."""
    src, dst = b.index.shapes.get(node.input[0], ()), b.index.shapes.get(node.output[0], ())
    keeps_channels = len(src) >= 2 and len(dst) >= 2 and src[1] == dst[1]
    if node.op_type == "Transpose":
        keeps_channels = keeps_channels and list(attr(node, "perm", []))[:2] == [0, 1]
    elif node.op_type in ("Reshape", "Squeeze", "Unsqueeze"):
        keeps_channels = keeps_channels and _leading_dims_kept(node, b)
    elif node.op_type == "Gather":
        keeps_channels = keeps_channels and attr(node, "axis", 0) % len(src) > 1
    elif node.op_type in ("Expand", "Tile"):
        keeps_channels = keeps_channels and len(src) == len(dst)
    else:
        keeps_channels = False
    if keeps_channels:
        _transparent(b, node, where)
    else:
        b.rigid_output(node, f"{where} moves or mixes the channel axis (e.g. a channel shuffle)")


def _leading_dims_kept(node: onnx.NodeProto, b: _Builder) -> bool:
    """A reshape keeps channels when [N, C] lead both shapes and only trailing dims change."""
    if node.op_type == "Reshape":
        return True  # callers already compared dims 0-1; the target only regroups trailing dims
    axes = attr(node, "axes")
    if axes is None and len(node.input) > 1 and b.index.is_constant(node.input[1]):
        axes = b.index.array(node.input[1]).tolist()
    rank = max(b.rank(node.input[0]), b.rank(node.output[0]))
    return axes is not None and all(a % rank >= 2 for a in axes)


def _rigid(b: _Builder, node: onnx.NodeProto, where: str) -> None:
    b.rigid_output(node, f"{where} mixes channels")


def _lrn(b: _Builder, node: onnx.NodeProto, where: str) -> None:
    view = _first_view(b, node)
    if view is not None:
        b.make_rigid(view, f"{where} mixes neighbouring channels")
    b.set_output(node, view)


_HANDLERS: dict[str, Handler] = {
    **{op: _transparent for op in UNARY_OPS | POOL_OPS | set(PER_CHANNEL_NORMS)},
    **{op: _elementwise for op in ELEMENTWISE_OPS},
    **{op: _reduce for op in REDUCE_OPS},
    **{op: _reshaping for op in RESHAPING_OPS},
    "Conv": _conv,
    "Gemm": _gemm,
    "Concat": _concat,
    "Split": _split,
    "Slice": _slice,
    "Flatten": _flatten,
    "Pad": _pad,
    "Resize": _same_channels,
    "LRN": _lrn,
    "GroupNormalization": _rigid,
}
# Every op the importer accepts on a canonical graph; the training bridge runs exactly these (bridge.TORCH_OPS).
SUPPORTED_OPS = frozenset(_HANDLERS)
