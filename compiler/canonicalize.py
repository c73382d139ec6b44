"""Rewrite an exported graph into the small canonical dialect the analysis and passes understand.

Exporters spell the same network many ways (Constant nodes or initializers, `Reshape` with a shape
subgraph or `Flatten`, `ReduceMean` or `GlobalAveragePool`, `MatMul`+`Add` or `Gemm`, BatchNorm kept
or folded). Canonicalization makes one spelling of each, so the channel rules (coupling.py) stay a
short table. Every rewrite is function-preserving; the importer checks that in onnxruntime.

Choices (onnx-io.md §1.3):
- BatchNormalization folds into the Conv/Gemm whose only consumer it is: the reference flow folds BN
  before the search, and split sub-layers then carry their own bias. Other BNs stay (transparent).
- Identity and (inference) Dropout are removed unless they produce a graph output.
- Shape subgraphs are folded when equal at batch 1 and 2; a Reshape target that bakes in the batch
  gets 0 (copy) there, so the model keeps its dynamic batch.
- A fixed batch (`torch.onnx.export(model, torch.randn(1, 3, H, W))`, the usual export) becomes the
  symbolic dim BATCH_DIM, and every Reshape/Expand target that baked it in is freed the same way, so
  training and evaluation run at any batch. The emitted model gets the user's signature back
  (`restore_signature`); the importer proves by execution that the freed graph equals the original.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable

import numpy as np
import onnx
import onnx.inliner
from onnx import helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from odimo.ir import names
from odimo.ir.graph import GraphIndex, attr, drop_unused_initializers, put_initializer, set_attr

Step = Callable[[onnx.ModelProto], list[str]]

# Ops that never fold, even with constant inputs: their value is not a function of the inputs.
_NONDETERMINISTIC = {
    "RandomNormal",
    "RandomUniform",
    "RandomNormalLike",
    "RandomUniformLike",
    "Multinomial",
    "Bernoulli",
}
_PROBE_BATCHES = (1, 2)
BATCH_DIM = "batch"  # the dim_param a fixed batch becomes


def canonicalize(model: onnx.ModelProto) -> tuple[onnx.ModelProto, tuple[str, ...]]:
    """Return the canonical copy of `model` and a log line per rewrite made."""
    work = copy.deepcopy(model)
    log: list[str] = []
    for step in (
        _inline_functions,
        _name_nodes,
        _constants_to_initializers,
        _free_fixed_batch,
        _fold_constant_subgraphs,
        _drop_identities,
        _reshape_to_flatten,
        _reduce_mean_to_global_pool,
        _matmul_to_gemm,
        _normalize_gemm,
        _explicit_pads,
        _fold_zero_pad,
        _fold_batchnorm,
        _drop_unused_initializers,
    ):
        log.extend(step(work))
    return work, tuple(log)


# --- structure -------------------------------------------------------------------------------


def _inline_functions(model: onnx.ModelProto) -> list[str]:
    if not model.functions:
        return []
    names = [f.name for f in model.functions]
    inlined = onnx.inliner.inline_local_functions(model)
    model.CopyFrom(inlined)
    del model.functions[:]
    return [f"inlined local functions: {', '.join(names)}"]


def _name_nodes(model: onnx.ModelProto) -> list[str]:
    """Give every node a unique, deterministic name: later stages key everything by node name."""
    seen: dict[str, int] = {}
    renamed = 0
    for k, node in enumerate(model.graph.node):
        base = node.name or f"{node.op_type}_{k}"
        name = base
        while name in seen:  # `while`: an explicit 'conv#1' may already hold the first suffix
            seen[base] += 1
            name = f"{base}#{seen[base]}"
        seen.setdefault(name, 0)
        if name != node.name:
            node.name = name
            renamed += 1
    return [f"named {renamed} unnamed or duplicate nodes"] if renamed else []


def _replace_nodes(graph: onnx.GraphProto, nodes: Iterable[onnx.NodeProto]) -> None:
    kept = list(nodes)
    del graph.node[:]
    graph.node.extend(kept)


def _rename_value(graph: onnx.GraphProto, old: str, new: str) -> None:
    """Make every reader of `old` read `new` instead."""
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = new


def _set_initializer(graph: onnx.GraphProto, name: str, value: np.ndarray) -> None:
    tensor = numpy_helper.from_array(np.asarray(value, order="C"), name)  # ascontiguousarray makes 0-d 1-d
    put_initializer(graph, {init.name: init for init in graph.initializer}, tensor)


def _private_initializer(graph: onnx.GraphProto, index: GraphIndex, name: str, node: onnx.NodeProto) -> str:
    """Name under which `node` may rewrite initializer `name`: itself if no one else reads it."""
    if len(index.consumers.get(name, [])) <= 1 and name not in index.outputs:
        return name
    return names.private_copy(name, node.name)


# --- batch -----------------------------------------------------------------------------------


def fixed_batch(model: onnx.ModelProto) -> int | None:
    """The batch size the model's single input declares, or None when it is symbolic."""
    dims = _graph_input(model.graph).type.tensor_type.shape.dim
    return dims[0].dim_value if dims and dims[0].HasField("dim_value") and dims[0].dim_value > 0 else None


def _graph_input(graph: onnx.GraphProto) -> onnx.ValueInfoProto:
    initializers = {i.name for i in graph.initializer}
    return next(i for i in graph.input if i.name not in initializers)


def _free_fixed_batch(model: onnx.ModelProto) -> list[str]:
    """Make a fixed batch N symbolic, in the interface and in every target that baked it in.

    Why a symbolic working copy and not chunks of N: training at batch 1 would cost one interpreted
    forward pass per image, and every later stage (bridge, passes, verification) already handles a
    symbolic batch. A Reshape whose data keeps the batch in dim 0 and whose constant target starts
    with N gets 0 (copy) there; an Expand target, 1 (broadcast keeps the data's batch). Shape
    inference then carries the symbol one step further, so this repeats until nothing changes.
    A graph that mixes images of a batch cannot be freed this way; the importer's check at another
    batch size finds it and says so.
    """
    batch = fixed_batch(model)
    if batch is None:
        return []
    graph = model.graph
    for info in (_graph_input(graph), *graph.output):
        dims = info.type.tensor_type.shape.dim
        if dims and dims[0].HasField("dim_value") and dims[0].dim_value == batch:
            dims[0].dim_param = BATCH_DIM
    del graph.value_info[:]
    freed = folded = 0
    # Folding a shape subgraph (a chunk's Shape -> Gather -> Slice) lets inference see the symbol
    # past it, which may expose the next baked target: alternate until neither finds anything.
    while True:
        changed, more = _free_batch_targets(model, batch), _fold_once(model)
        freed, folded = freed + changed, folded + more
        if not changed and not more:
            break
    return [
        f"made the fixed batch {batch} symbolic ('{BATCH_DIM}'): "
        f"freed {freed} Reshape/Expand targets, folded {folded} shape nodes"
    ]


def _free_batch_targets(model: onnx.ModelProto, batch: int) -> int:
    inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    index = GraphIndex.of(inferred.graph)
    graph = model.graph
    changed = 0
    for node in graph.node:
        if node.op_type not in ("Reshape", "Expand") or len(node.input) < 2 or node.input[1] not in index.initializers:
            continue
        data = index.shapes.get(node.input[0])
        target = index.array(node.input[1])
        if not data or data[0] != BATCH_DIM or target.ndim != 1 or not len(target) or int(target[0]) != batch:
            continue
        freed = target.copy()
        freed[0] = 1 if node.op_type == "Expand" else _copy_dim(node, target)
        if freed[0] == target[0]:  # an Expand to batch 1 broadcasts already
            continue
        name = _private_initializer(graph, index, node.input[1], node)
        _set_initializer(graph, name, freed)
        node.input[1] = name
        changed += 1
    return changed


def _copy_dim(reshape: onnx.NodeProto, target: np.ndarray) -> int:
    """The Reshape target entry that keeps the data's dim 0: 0 (copy), unless `allowzero` makes 0
    literal (dynamo exports set it); then allowzero is dropped when no other entry is 0, else -1."""
    if not attr(reshape, "allowzero", 0):
        return 0
    if not np.any(target[1:] == 0):
        set_attr(reshape, "allowzero", 0)
        return 0
    return -1


def restore_signature(model: onnx.ModelProto, source: onnx.ModelProto) -> onnx.ModelProto:
    """`model` with the graph input and output types of `source` (a fixed batch stays fixed).

    The canonical graph may have freed the batch; its body runs at any batch, so declaring the
    user's own shapes on the interface is exact. Value infos that name the freed dim are dropped.
    """
    restored = onnx.ModelProto()
    restored.CopyFrom(model)
    graph = restored.graph
    _graph_input(graph).type.CopyFrom(_graph_input(source.graph).type)
    outputs = {o.name: o for o in source.graph.output}
    for output in graph.output:
        if output.name in outputs:
            output.type.CopyFrom(outputs[output.name].type)
    if fixed_batch(source) is not None:
        del graph.value_info[:]
    return restored


# --- constants -------------------------------------------------------------------------------


def _constants_to_initializers(model: onnx.ModelProto) -> list[str]:
    graph = model.graph
    kept, moved = [], 0
    for node in graph.node:
        if (
            node.op_type == "Constant"
            and node.domain in ("", "ai.onnx")
            and node.output[0] not in {o.name for o in graph.output}
        ):
            value = ReferenceEvaluator(node).run(None, {})[0]
            _set_initializer(graph, node.output[0], np.asarray(value))
            moved += 1
        else:
            kept.append(node)
    _replace_nodes(graph, kept)
    return [f"moved {moved} Constant nodes to initializers"] if moved else []


def _fold_constant_subgraphs(model: onnx.ModelProto) -> list[str]:
    """Fold until nothing changes: a folded Reshape target makes the next shape known (shuffles)."""
    total = 0
    while folded := _fold_once(model):
        total += folded
    return [f"folded {total} constant or shape nodes"] if total else []


def _fold_once(model: onnx.ModelProto) -> int:
    """Evaluate every node whose inputs are constant or batch-only shape facts; keep what differs.

    Each value is computed at batch 1 and batch 2. A value equal at both is a true constant. One that
    differs only in position 0 of a Reshape target (the batch baked in by the exporter) becomes 0;
    of an Expand target, 1 (Expand broadcasts, so 1 keeps the batch of its input).
    """
    inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    index = GraphIndex.of(inferred.graph)
    graph = model.graph
    known: dict[str, tuple[np.ndarray, ...]] = {n: (index.array(n),) * 2 for n in index.initializers}
    folded_nodes: set[int] = set()
    for k, node in enumerate(graph.node):
        values = _evaluate_at_probe_batches(node, known, index)
        if values is None:
            continue
        folded_nodes.add(k)
        for name, per_batch in zip(node.output, values):
            known[name] = per_batch
    if not folded_nodes:
        return 0
    still_needed = {
        name
        for k, node in enumerate(graph.node)
        if k not in folded_nodes
        for name in node.input
        if name in known and name not in index.initializers
    } | {o.name for o in graph.output if o.name in known}
    batch_free = {name: _batch_free_value(name, known[name], index) for name in sorted(still_needed)}
    # A value that depends on the batch keeps the nodes computing it; everything else folds.
    kept = _ancestors({name for name, value in batch_free.items() if value is None}, graph, folded_nodes)
    folded_nodes -= kept
    kept_outputs = {out for k in kept for out in graph.node[k].output}
    for name, value in batch_free.items():
        if value is not None and name not in kept_outputs:
            _set_initializer(graph, name, value)
    _replace_nodes(graph, (n for k, n in enumerate(graph.node) if k not in folded_nodes))
    return len(folded_nodes)


def _ancestors(values: set[str], graph: onnx.GraphProto, candidates: set[int]) -> set[int]:
    """Indices (among `candidates`) of the nodes that compute `values`, transitively."""
    producer = {out: k for k, node in enumerate(graph.node) for out in node.output}
    found: set[int] = set()
    pending = [producer[v] for v in values if v in producer]
    while pending:
        k = pending.pop()
        if k in found or k not in candidates:
            continue
        found.add(k)
        pending += [producer[name] for name in graph.node[k].input if name in producer]
    return found


def _evaluate_at_probe_batches(
    node: onnx.NodeProto, known: dict[str, tuple[np.ndarray, ...]], index: GraphIndex
) -> list[tuple[np.ndarray, ...]] | None:
    """Outputs of `node` at each probe batch, or None if they are not computable statically."""
    if node.op_type in _NONDETERMINISTIC or node.domain not in ("", "ai.onnx") or not node.output:
        return None
    if node.op_type == "Shape":
        shape = index.shapes.get(node.input[0])
        if shape is None or any(not isinstance(d, int) for d in shape[1:]) or not shape:
            return None
        start, end = attr(node, "start", 0), attr(node, "end", len(shape))
        per_batch = tuple(np.array((b, *shape[1:]), dtype=np.int64)[start:end] for b in _PROBE_BATCHES)
        return [per_batch]
    inputs = [name for name in node.input if name]
    if not inputs or any(name not in known for name in inputs):
        return None
    results = []
    for b in range(len(_PROBE_BATCHES)):
        feeds = {name: known[name][b] for name in inputs}
        results.append(ReferenceEvaluator(node).run(None, feeds))
    return [tuple(np.asarray(r[i]) for r in results) for i in range(len(node.output))]


def _batch_free_value(name: str, per_batch: tuple[np.ndarray, ...], index: GraphIndex) -> np.ndarray | None:
    first, second = per_batch
    if first.shape == second.shape and np.array_equal(first, second):
        return first
    readers = index.consumers.get(name, [])
    for op, batch_value in (("Reshape", 0), ("Expand", 1)):
        is_target = readers and all(n.op_type == op and n.input[1] == name for n in readers)
        if is_target and first.ndim == 1 and first.shape == second.shape:
            differs = np.nonzero(first != second)[0]
            if list(differs) == [0] and (first[0], second[0]) == _PROBE_BATCHES:
                target = first.copy()
                target[0] = batch_value
                return target
    return None


# --- cleanup -----------------------------------------------------------------------------------


def _drop_identities(model: onnx.ModelProto) -> list[str]:
    graph = model.graph
    outputs = {o.name for o in graph.output}
    kept, dropped = [], 0
    for node in graph.node:
        passthrough = node.op_type == "Identity" or (
            node.op_type == "Dropout" and len([o for o in node.output if o]) == 1
        )
        if passthrough and node.output[0] not in outputs:
            _rename_value(graph, node.output[0], node.input[0])
            dropped += 1
        else:
            kept.append(node)
    _replace_nodes(graph, kept)
    return [f"removed {dropped} Identity/Dropout nodes"] if dropped else []


def _drop_unused_initializers(model: onnx.ModelProto) -> list[str]:
    """Also drop graph inputs that only declared a dropped initializer (IR < 4 style models)."""
    graph = model.graph
    before = {init.name for init in graph.initializer}
    dropped = drop_unused_initializers(graph)
    gone = before - {init.name for init in graph.initializer}
    inputs = [i for i in graph.input if i.name not in gone]
    del graph.input[:]
    graph.input.extend(inputs)
    return [f"removed {dropped} unused initializers"] if dropped else []


# --- op spellings ------------------------------------------------------------------------------


def _reshape_to_flatten(model: onnx.ModelProto) -> list[str]:
    """A Reshape or Squeeze from [N, C, H, W] to [N, C*H*W] is a Flatten(axis=1)."""
    inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    index = GraphIndex.of(inferred.graph)
    count = 0
    for node in model.graph.node:
        if node.op_type not in ("Reshape", "Squeeze"):
            continue
        src, dst = index.shapes.get(node.input[0]), index.shapes.get(node.output[0])
        if not _is_flattening(src, dst):
            continue
        if node.op_type == "Squeeze" and not _squeezes_only_spatial(node, index, src):
            continue
        if node.op_type == "Reshape" and not _batch_free_target(node, index, src):
            continue
        node.op_type = "Flatten"
        del node.input[1:]
        del node.attribute[:]
        set_attr(node, "axis", 1)
        count += 1
    return [f"rewrote {count} flattening Reshape/Squeeze nodes as Flatten"] if count else []


def _is_flattening(src: tuple | None, dst: tuple | None) -> bool:
    if src is None or dst is None or len(src) < 3 or len(dst) != 2:
        return False
    tail = src[1:]
    if not all(isinstance(d, int) for d in tail) or not isinstance(dst[1], int):
        return False
    return int(np.prod(tail)) == dst[1] and (src[0] == dst[0] or not isinstance(src[0], int))


def _batch_free_target(node: onnx.NodeProto, index: GraphIndex, src: tuple) -> bool:
    """A constant Reshape target that flattens at every batch the Reshape accepts.

    Declared shapes cannot prove it (an exporter may label the output [batch, C*H*W]); the target
    can. [0, -1], [-1, C*H*W] and [k, C*H*W] (runs at batch k only) are Flatten. [k, -1] with a batch
    other than a static k is not: at batch 3, [1, -1] gives [1, 3*C*H*W].
    """
    target = index.array(node.input[1]).tolist() if index.is_constant(node.input[1]) else []
    if len(target) != 2:
        return False
    first, second = target
    return not (first > 0 and second == -1 and first != src[0])


def _squeezes_only_spatial(node: onnx.NodeProto, index: GraphIndex, src: tuple) -> bool:
    axes = attr(node, "axes")
    if axes is None and len(node.input) > 1 and index.is_constant(node.input[1]):
        axes = index.array(node.input[1]).tolist()
    axes = [a % len(src) for a in (axes or [])]
    return bool(axes) and 0 not in axes and 1 not in axes


def _reduce_mean_to_global_pool(model: onnx.ModelProto) -> list[str]:
    """ReduceMean over all spatial axes is GlobalAveragePool (+ Flatten when keepdims=0)."""
    index = GraphIndex.of(model.graph)
    inferred = GraphIndex.of(onnx.shape_inference.infer_shapes(model).graph)
    nodes, count = [], 0
    for node in model.graph.node:
        rank = len(inferred.shapes.get(node.input[0], ())) if node.op_type == "ReduceMean" else 0
        axes = _reduce_axes(node, index) if rank >= 3 else None
        if axes is None or sorted(a % rank for a in axes) != list(range(2, rank)):
            nodes.append(node)
            continue
        keepdims = attr(node, "keepdims", 1)
        pool = helper.make_node("GlobalAveragePool", [node.input[0]], [node.output[0]], name=node.name)
        if not keepdims:
            pooled = f"{node.output[0]}/pooled"
            pool.output[0] = pooled
            nodes += [
                pool,
                helper.make_node("Flatten", [pooled], [node.output[0]], name=f"{node.name}/flatten", axis=1),
            ]
        else:
            nodes.append(pool)
        count += 1
    _replace_nodes(model.graph, nodes)
    return [f"rewrote {count} spatial ReduceMean as GlobalAveragePool"] if count else []


def _reduce_axes(node: onnx.NodeProto, index: GraphIndex) -> list[int] | None:
    axes = attr(node, "axes")
    if axes is None and len(node.input) > 1 and node.input[1]:
        if not index.is_constant(node.input[1]):
            return None
        axes = index.array(node.input[1]).tolist()
    return list(axes) if axes else None


def _matmul_to_gemm(model: onnx.ModelProto) -> list[str]:
    """`MatMul(x, W)` with rank-2 x and constant W (+ `Add(b)`) is a fully connected Gemm."""
    graph = model.graph
    index = GraphIndex.of(graph)
    inferred = GraphIndex.of(onnx.shape_inference.infer_shapes(model).graph)
    removed: set[str] = set()
    count = 0
    for node in graph.node:
        if node.op_type != "MatMul" or not index.is_constant(node.input[1]):
            continue
        if len(inferred.shapes.get(node.input[0], ())) != 2 or index.array(node.input[1]).ndim != 2:
            continue
        weight = index.array(node.input[1])
        w_name = _private_initializer(graph, index, node.input[1], node)
        _set_initializer(graph, w_name, weight.T)
        inputs = [node.input[0], w_name]
        add = index.sole_consumer(node.output[0])
        bias = _bias_operand(add, node.output[0], index, weight.shape[1]) if add is not None else None
        if bias is not None:
            b_name = f"{node.name}/bias"
            _set_initializer(graph, b_name, bias)
            inputs.append(b_name)
            node.output[0] = add.output[0]
            removed.add(add.name)
        node.op_type = "Gemm"
        del node.input[:]
        node.input.extend(inputs)
        set_attr(node, "transB", 1)
        count += 1
    _replace_nodes(graph, (n for n in graph.node if n.name not in removed))
    return [f"rewrote {count} MatMul(+Add) as Gemm"] if count else []


def _bias_operand(add: onnx.NodeProto, value: str, index: GraphIndex, width: int) -> np.ndarray | None:
    if add.op_type != "Add":
        return None
    other = add.input[1] if add.input[0] == value else add.input[0]
    if not index.is_constant(other):
        return None
    bias = index.array(other)
    if bias.size != width or bias.ndim > 2:
        return None
    return bias.reshape(width).astype(np.float32)


def _normalize_gemm(model: onnx.ModelProto) -> list[str]:
    """Gemm with constant B becomes alpha=beta=1, transB=1, a 1-D bias: one form for the passes."""
    graph = model.graph
    index = GraphIndex.of(graph)
    count = 0
    for node in graph.node:
        if node.op_type != "Gemm" or attr(node, "transA", 0) or not index.is_constant(node.input[1]):
            continue
        alpha, beta, trans_b = attr(node, "alpha", 1.0), attr(node, "beta", 1.0), attr(node, "transB", 0)
        has_bias = len(node.input) > 2 and node.input[2] != ""
        bias_ok = not has_bias or (
            index.is_constant(node.input[2])
            and index.array(node.input[2]).ndim <= 1
            and index.array(node.input[2]).size > 1
        )
        if alpha == 1.0 and beta == 1.0 and trans_b == 1 and bias_ok:
            continue
        weight = index.array(node.input[1])
        weight = alpha * (weight if trans_b else weight.T)
        w_name = _private_initializer(graph, index, node.input[1], node)
        _set_initializer(graph, w_name, weight.astype(np.float32))
        node.input[1] = w_name
        if has_bias and index.is_constant(node.input[2]):
            bias = beta * np.broadcast_to(index.array(node.input[2]), (1, weight.shape[0])).reshape(-1)
            b_name = _private_initializer(graph, index, node.input[2], node)
            _set_initializer(graph, b_name, bias.astype(np.float32))
            node.input[2] = b_name
        for name in ("alpha", "beta", "transB"):
            set_attr(node, name, 1 if name == "transB" else 1.0)
        count += 1
    return [f"normalized {count} Gemm nodes to alpha=beta=1, transB=1"] if count else []


def _explicit_pads(model: onnx.ModelProto) -> list[str]:
    """auto_pad is resolved against the static input shape, so pads are data the passes can copy."""
    inferred = GraphIndex.of(onnx.shape_inference.infer_shapes(model).graph)
    index = GraphIndex.of(model.graph)
    count = 0
    for node in model.graph.node:
        mode = attr(node, "auto_pad", b"NOTSET")
        mode = mode.decode() if isinstance(mode, bytes) else mode
        if node.op_type not in ("Conv", "MaxPool", "AveragePool", "LpPool") or mode == "NOTSET":
            continue
        shape = inferred.shapes.get(node.input[0])
        if shape is None or not all(isinstance(d, int) for d in shape[2:]):
            continue
        spatial = shape[2:]
        kernel = attr(node, "kernel_shape") or list(index.array(node.input[1]).shape[2:])
        strides = attr(node, "strides") or [1] * len(spatial)
        dilations = attr(node, "dilations") or [1] * len(spatial)
        begins, ends = [], []
        for size, k, s, d in zip(spatial, kernel, strides, dilations):
            total = 0 if mode == "VALID" else max(0, (-(-size // s) - 1) * s + (k - 1) * d + 1 - size)
            small, large = total // 2, total - total // 2
            begins.append(small if mode != "SAME_LOWER" else large)
            ends.append(large if mode != "SAME_LOWER" else small)
        set_attr(node, "auto_pad", "NOTSET")
        set_attr(node, "pads", begins + ends)
        count += 1
    return [f"resolved auto_pad on {count} nodes"] if count else []


def _fold_zero_pad(model: onnx.ModelProto) -> list[str]:
    """A constant-zero spatial Pad read only by a Conv becomes part of the Conv's pads."""
    graph = model.graph
    index = GraphIndex.of(graph)
    removed: set[str] = set()
    for node in graph.node:
        conv = index.sole_consumer(node.output[0]) if node.op_type == "Pad" else None
        if conv is None or conv.op_type != "Conv" or conv.input[0] != node.output[0]:
            continue
        spatial = _zero_spatial_pads(node, index)
        if spatial is None:
            continue
        rank = len(spatial) // 2
        current = attr(conv, "pads") or [0] * (2 * rank)
        set_attr(conv, "pads", [a + b for a, b in zip(current, spatial)])
        conv.input[0] = node.input[0]
        removed.add(node.name)
    _replace_nodes(graph, (n for n in graph.node if n.name not in removed))
    return [f"folded {len(removed)} zero Pad nodes into Conv pads"] if removed else []


def _zero_spatial_pads(node: onnx.NodeProto, index: GraphIndex) -> list[int] | None:
    """Spatial [begins..., ends...] of a constant-zero Pad on N and C untouched, else None."""
    mode = attr(node, "mode", b"constant")
    if (mode.decode() if isinstance(mode, bytes) else mode) != "constant":
        return None
    pads = attr(node, "pads")
    if pads is None:
        if len(node.input) < 2 or not index.is_constant(node.input[1]):
            return None
        pads = index.array(node.input[1]).tolist()
    if len(node.input) > 3 and node.input[3]:
        return None  # explicit axes: rare, keep the Pad
    value = attr(node, "value", 0.0)
    if len(node.input) > 2 and node.input[2]:
        if not index.is_constant(node.input[2]):
            return None
        value = float(index.array(node.input[2]).reshape(-1)[0]) if index.array(node.input[2]).size else 0.0
    rank = len(pads) // 2
    if value != 0.0 or rank < 3 or any(p < 0 for p in pads):
        return None
    if pads[0] or pads[1] or pads[rank] or pads[rank + 1]:
        return None
    return list(pads[2:rank]) + list(pads[rank + 2 :])


def _fold_batchnorm(model: onnx.ModelProto) -> list[str]:
    """Fold an inference BatchNormalization into the Conv/Gemm whose only consumer it is."""
    graph = model.graph
    index = GraphIndex.of(graph)
    removed: set[str] = set()
    for bn in graph.node:
        if bn.op_type != "BatchNormalization" or len([o for o in bn.output if o]) != 1:
            continue
        layer = index.producer.get(bn.input[0])
        if layer is None or layer.op_type not in ("Conv", "Gemm") or index.sole_consumer(bn.input[0]) is not bn:
            continue
        if not all(index.is_constant(n) for n in (*bn.input[1:5], *layer.input[1:])):
            continue
        if layer.op_type == "Gemm" and attr(layer, "transB", 0) != 1:
            continue
        gamma, beta, mean, var = (index.array(n).astype(np.float64) for n in bn.input[1:5])
        scale = gamma / np.sqrt(var + attr(bn, "epsilon", 1e-5))
        weight = index.array(layer.input[1]).astype(np.float64)
        bias = (
            index.array(layer.input[2]).astype(np.float64)
            if len(layer.input) > 2 and layer.input[2]
            else np.zeros(weight.shape[0])
        )
        w_name = _private_initializer(graph, index, layer.input[1], layer)
        _set_initializer(graph, w_name, (weight * scale.reshape(-1, *[1] * (weight.ndim - 1))).astype(np.float32))
        b_name = layer.input[2] if len(layer.input) > 2 and layer.input[2] else f"{layer.name}/bias"
        b_name = _private_initializer(graph, index, b_name, layer) if b_name in index.initializers else b_name
        _set_initializer(graph, b_name, ((bias - mean) * scale + beta).astype(np.float32))
        del layer.input[1:]
        layer.input.extend([w_name, b_name])
        layer.output[0] = bn.output[0]
        removed.add(bn.name)
    _replace_nodes(graph, (n for n in graph.node if n.name not in removed))
    return [f"folded {len(removed)} BatchNormalization nodes into their Conv/Gemm"] if removed else []
