"""Import: a path in, a validated canonical model out, or one precise OdimoError (onnx-io.md §1).

Checks run in the order of onnx-io.md §1.2 so each bad input is reported by the first check that can
name its real problem (a PyTorch zip is "not ONNX", not "corrupt protobuf").
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import numpy_helper
from onnx.external_data_helper import ExternalDataInfo, uses_external_data
from onnxruntime.capi.onnxruntime_pybind11_state import Fail as OrtFail
from onnxruntime.capi.onnxruntime_pybind11_state import RuntimeException as OrtRuntimeException

from odimo.compiler.canonicalize import canonicalize, fixed_batch
from odimo.ir.coupling import unsupported_nodes
from odimo.ir.errors import (
    CorruptProtobufError,
    DynamicInputShapeError,
    DynamicTensorShapeError,
    EmptyFileError,
    ExternalDataError,
    FixedBatchError,
    InputCountError,
    InputTypeError,
    InvalidModelError,
    MissingFileError,
    NonFiniteWeightsError,
    NotAFileError,
    NotOnnxError,
    OutputCountError,
    PreQuantizedError,
    ShapeInferenceError,
    TensorTooLargeError,
    UnreadableFileError,
    UnsupportedIrVersionError,
    UnsupportedOpError,
    UnsupportedOpsetError,
)
from odimo.ir.graph import opset_version, value_shape
from odimo.ir.records import ImportedModel
from odimo.ir.resources import available_memory, human_bytes
from odimo.ir.verify import DYNAMIC_BATCH_PROBE, compare, probe_inputs, require_equivalent

# The newest opset both onnx (1.23: 28) and onnxruntime (1.32 loads 28) know; opset 25 is the
# first whose DequantizeLinear takes INT2 (ternary weights at a quarter of the bytes).
MIN_OPSET, MAX_OPSET = 13, 28
MIN_IR = 7
MEMORY_SHARE = 16  # one image's largest tensor may take at most this share of the available memory
QUANTIZED_OPS = {
    "QuantizeLinear",
    "DequantizeLinear",
    "DynamicQuantizeLinear",
    "QLinearConv",
    "QLinearMatMul",
    "ConvInteger",
    "MatMulInteger",
    "QLinearAdd",
    "QLinearMul",
    "QLinearGlobalAveragePool",
}
_FOREIGN_MAGIC = {
    b"PK\x03\x04": "a zip archive (a PyTorch .pt/.pth checkpoint or a TorchScript file)",
    b"\x89HDF": "an HDF5 file (a Keras/TensorFlow model)",
    b"\x80\x02": "a Python pickle (a legacy PyTorch checkpoint)",
    b"\x80\x04": "a Python pickle (a legacy PyTorch checkpoint)",
}
_EXPORT_HINT = "export the network with torch.onnx.export(model, example, 'model.onnx') and pass the .onnx file"


def load_model(path: str | Path, verify_seed: int = 0) -> ImportedModel:
    """Read, check and canonicalize `path`; raise ModelImportError subclasses on bad input."""
    path = Path(path)
    raw = _read_bytes(path)
    model = _read_checked(raw, path)
    _reject_quantized(model, path)
    _check_interface(model, path)
    _require_memory(model.graph.input, path)
    _reject_unsupported(model, path, canonical=False)
    _reject_non_finite(model, path)
    canonical, rewrites = canonicalize(model)
    canonical = _infer_shapes_strict(canonical, path)
    _require_memory([*canonical.graph.value_info, *canonical.graph.output], path)
    _reject_unsupported(canonical, path, canonical=True)
    _require_canonical_equivalent(_runnable(model), canonical, probe_inputs(model, verify_seed, count=4), path)
    return ImportedModel(
        path=path,
        source_sha256=hashlib.sha256(raw).hexdigest(),
        original=model,
        model=canonical,
        rewrites=rewrites,
    )


def read_model(path: str | Path) -> onnx.ModelProto:
    """The file as a valid ONNX model, with the checks every reader needs (E101-E106) and none that
    depends on what the model computes: `odimo-inspect` reads odimo's own outputs through this."""
    path = Path(path)
    return _read_checked(_read_bytes(path), path)


def _read_checked(raw: bytes, path: Path) -> onnx.ModelProto:
    model = _parse(raw, path)
    _check_versions(model, path)
    _load_external_data(model, path)
    _check_full(model, path)
    return model


def _require_canonical_equivalent(
    model: onnx.ModelProto, canonical: onnx.ModelProto, probes: np.ndarray, path: Path
) -> None:
    """The canonical graph computes the model's function, at the model's batch and at any other.

    For a fixed batch N the canonical graph runs first at N (a difference there is odimo's bug), then
    at another batch: a difference there means the graph ties the images of a batch together (a
    batch-mixing Reshape, say), which no symbolic batch can express; that is the user's model (exit 2).
    """
    batch = fixed_batch(model)
    require_equivalent(model, canonical, probes, "import canonicalization", candidate_batch=batch)
    if batch is None:
        return
    other = DYNAMIC_BATCH_PROBE if batch != DYNAMIC_BATCH_PROBE else batch + 1
    try:
        at_other = compare(model, canonical, probes, candidate_batch=other)
        problem = None if at_other.passed else f"its outputs differ by {at_other.max_abs_diff:.3g}"
    except (OrtFail, OrtRuntimeException, ValueError) as exc:
        problem = f"it fails ({' '.join(str(exc).split())[:240]})"
    if problem:
        raise FixedBatchError(
            f"the model only computes its function at its exported batch {batch}: run at batch {other}, {problem}; "
            "a node bakes the batch in or mixes the images of a batch",
            str(path),
            "re-export with a dynamic batch: "
            "torch.onnx.export(..., dynamic_axes={'input': {0: 'batch'}, 'output': {0: 'batch'}}), "
            "or dynamic_shapes with dynamo=True",
        )


def _runnable(model: onnx.ModelProto) -> onnx.ModelProto:
    """`model` as onnxruntime loads it: ORT rejects duplicate node names, which canonicalize cures."""
    names = [n.name for n in model.graph.node if n.name]
    if len(names) == len(set(names)):
        return model
    unnamed = onnx.ModelProto()
    unnamed.CopyFrom(model)
    for node in unnamed.graph.node:
        node.name = ""
    return unnamed


def require_model_file(path: Path) -> None:
    """E101 when `path` is missing or a directory: checked first, so that a missing model is not
    reported as the missing folder of its default output."""
    if not path.exists():
        raise MissingFileError(
            "the model file does not exist",
            str(path),
            "check the path (relative paths start at the current directory)",
        )
    if path.is_dir():
        raise NotAFileError(
            "the model path is a directory, not a file",
            str(path),
            "pass the .onnx file inside it",
        )


def _read_bytes(path: Path) -> bytes:
    require_model_file(path)
    try:
        return path.read_bytes()
    except OSError as exc:
        raise UnreadableFileError(
            f"the model file cannot be read ({exc.strerror})", str(path), "check its permissions"
        ) from None


def _parse(raw: bytes, path: Path) -> onnx.ModelProto:
    if not raw:
        raise EmptyFileError(
            "the model file is empty (0 bytes)",
            str(path),
            "re-export the model; the write was probably interrupted",
        )
    for magic, kind in _FOREIGN_MAGIC.items():
        if raw.startswith(magic):
            raise NotOnnxError(f"the file is {kind}, not ONNX", str(path), _EXPORT_HINT)
    try:
        model = onnx.load_model_from_string(raw)
    except (DecodeError, ValueError, RuntimeError) as exc:
        text = _looks_like_text(raw)
        kind = "text, not a binary ONNX protobuf" if text else f"a corrupt or truncated protobuf ({exc})"
        error = NotOnnxError if text else CorruptProtobufError
        fix = _EXPORT_HINT if text else "re-export or re-download the model"
        raise error(
            f"the file is {kind}",
            f"{path} ({len(raw)} bytes)",
            fix,
        ) from None
    if not model.HasField("graph") or len(model.graph.node) == 0 or not model.ir_version:
        raise NotOnnxError(
            "the file parses but holds no ONNX graph (no ir_version or no nodes)",
            f"{path} ({len(raw)} bytes)",
            _EXPORT_HINT,
        )
    return model


def _looks_like_text(raw: bytes) -> bool:
    head = raw[:512]
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return all(32 <= b < 127 or b in (9, 10, 13) for b in head)


def _check_versions(model: onnx.ModelProto, path: Path) -> None:
    opset = opset_version(model)
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise UnsupportedOpsetError(
            f"default-domain opset {opset} is outside the supported range {MIN_OPSET}-{MAX_OPSET}",
            str(path),
            f"convert it: onnx.version_converter.convert_version(model, {min(max(opset, MIN_OPSET), MAX_OPSET)})",
        )
    if not MIN_IR <= model.ir_version <= onnx.IR_VERSION:
        raise UnsupportedIrVersionError(
            f"IR version {model.ir_version} is outside {MIN_IR}-{onnx.IR_VERSION}",
            str(path),
            "re-export with a current onnx/torch",
        )


def _load_external_data(model: onnx.ModelProto, path: Path) -> None:
    folder = path.parent.resolve()
    for tensor in onnx.external_data_helper._get_all_tensors(model):
        if not uses_external_data(tensor):
            continue
        location = ExternalDataInfo(tensor).location
        target = (folder / location).resolve()
        if folder not in target.parents and target != folder:
            raise ExternalDataError(
                f"initializer '{tensor.name}' points outside the model's folder",
                f"{path}: location '{location}'",
                "keep the .data file beside the .onnx file",
            )
        if not target.is_file():
            raise ExternalDataError(
                f"external data file '{location}' of initializer '{tensor.name}' is missing",
                f"{path}: expected {target}",
                "copy the .data file beside the .onnx file (they travel together)",
            )
    try:
        onnx.external_data_helper.load_external_data_for_model(model, str(folder))
    except (OSError, ValueError) as exc:
        raise ExternalDataError(
            f"external data cannot be read ({exc})",
            str(path),
            "re-export the model with its .data file",
        ) from None


def _check_full(model: onnx.ModelProto, path: Path) -> None:
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        text = " ".join(str(exc).split()) or type(exc).__name__  # one line; the node is on a later line
        raise InvalidModelError(
            f"onnx.checker rejects the model: {text}",
            str(path),
            "fix the exporter output (onnx.checker.check_model(path, full_check=True) shows the same)",
        ) from None


def _reject_quantized(model: onnx.ModelProto, path: Path) -> None:
    hits = [(k, n) for k, n in enumerate(model.graph.node) if n.op_type in QUANTIZED_OPS]
    if hits:
        where = ", ".join(f"node #{k} '{n.name}' ({n.op_type})" for k, n in hits[:5]) + (
            f" and {len(hits) - 5} more" if len(hits) > 5 else ""
        )
        raise PreQuantizedError(
            f"the model is already quantized ({len(hits)} quantization nodes)",
            f"{path}: {where}",
            "give odimo the float model; it chooses each channel's precision itself",
        )


def _check_interface(model: onnx.ModelProto, path: Path) -> None:
    initializers = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        names = ", ".join(f"'{i.name}'" for i in inputs) or "none"
        raise InputCountError(
            f"the model has {len(inputs)} graph inputs; odimo needs exactly one image input",
            f"{path}: inputs {names}",
            "fold the extra inputs into initializers or cut the graph with onnx.utils.extract_model",
        )
    if len(model.graph.output) != 1:
        names = ", ".join(f"'{o.name}'" for o in model.graph.output)
        raise OutputCountError(
            f"the model has {len(model.graph.output)} graph outputs; odimo needs exactly one",
            f"{path}: outputs {names}",
            "keep the classifier output only (onnx.utils.extract_model)",
        )
    tensor_type = inputs[0].type.tensor_type
    shape = value_shape(inputs[0])
    if tensor_type.elem_type != onnx.TensorProto.FLOAT or len(shape) != 4:
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type) if tensor_type.elem_type else "unknown"
        raise InputTypeError(
            f"input '{inputs[0].name}' is {dtype} of rank {len(shape)}; odimo needs float32 NCHW (rank 4)",
            str(path),
            "export with a float32 [N, C, H, W] example input",
        )
    if not all(isinstance(d, int) and d > 0 for d in shape[1:]):
        raise DynamicInputShapeError(
            f"input '{inputs[0].name}' has shape {list(shape)}: C, H and W must be static",
            str(path),
            "re-export with fixed C/H/W (only the batch may be dynamic), e.g. --input-shape x:1x3x32x32",
        )


def _require_memory(values: Iterable[onnx.ValueInfoProto], path: Path) -> None:
    """Refuse a tensor whose one image takes more than 1/MEMORY_SHARE of the available memory:
    verification, calibration and training hold a batch of such tensors at once, and allocating
    one first ends in MemoryError or the OOM killer instead of a message naming it."""
    budget = available_memory() // MEMORY_SHARE
    for info in values:
        shape = value_shape(info)
        dims = [d for d in shape[1:] if isinstance(d, int)]
        elem = info.type.tensor_type.elem_type
        itemsize = onnx.helper.tensor_dtype_to_np_dtype(elem).itemsize if elem else 4
        size = math.prod(dims) * itemsize
        if size > budget:
            raise TensorTooLargeError(
                f"tensor '{info.name}' of shape {list(shape)} takes {human_bytes(size)} per image, more than "
                f"this machine can hold in a batch ({human_bytes(available_memory())} available)",
                str(path),
                "export the model at the input size it is trained and deployed at (e.g. 1x3x32x32)",
            )


def _reject_unsupported(model: onnx.ModelProto, path: Path, canonical: bool) -> None:
    problems = unsupported_nodes(model, canonical)
    if problems:
        where = ", ".join(problems[:8]) + (f" and {len(problems) - 8} more" if len(problems) > 8 else "")
        raise UnsupportedOpError(
            f"{len(problems)} node(s) use operators odimo cannot import",
            f"{path.name}: {where}",
            "replace them, or cut the graph with onnx.utils.extract_model and map the supported part",
        )


def _infer_shapes_strict(model: onnx.ModelProto, path: Path) -> onnx.ModelProto:
    try:
        inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
    except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError) as exc:
        raise ShapeInferenceError(
            f"strict shape inference fails: {str(exc).strip().splitlines()[0]}",
            str(path),
            "re-export with static shapes (only the batch may be dynamic)",
        ) from None
    if _shape_group_norm_outputs(inferred):
        inferred = onnx.shape_inference.infer_shapes(inferred, check_type=True, strict_mode=True, data_prop=True)
    for info in inferred.graph.value_info:
        shape = value_shape(info)
        dynamic = [d for d in shape[1:] if not isinstance(d, int)]
        if dynamic:
            raise DynamicTensorShapeError(
                f"tensor '{info.name}' has shape {list(shape)}: every dim but the batch must be static",
                str(path),
                "re-export with fixed C/H/W so every intermediate shape is known",
            )
    return inferred


def _shape_group_norm_outputs(model: onnx.ModelProto) -> bool:
    """Give each GroupNormalization output its input's type: onnx infers no shape through this
    function op, and every value after it would silently lose its channels. True if any changed."""
    infos = {v.name: v for v in model.graph.value_info}
    known = {v.name: v for v in [*model.graph.input, *model.graph.value_info]}
    changed = False
    for node in model.graph.node:
        out = infos.get(node.output[0])
        if (
            node.op_type == "GroupNormalization"
            and node.input[0] in known
            and (out is None or not out.type.tensor_type.HasField("shape"))
        ):
            if out is None:
                out = model.graph.value_info.add()
                out.name = node.output[0]
            out.type.CopyFrom(known[node.input[0]].type)
            known[out.name] = out
            changed = True
    return changed


def _reject_non_finite(model: onnx.ModelProto, path: Path) -> None:
    bad = []
    for init in model.graph.initializer:
        values = numpy_helper.to_array(init)
        if np.issubdtype(values.dtype, np.floating):
            count = int(np.count_nonzero(~np.isfinite(values)))
            if count:
                bad.append(f"'{init.name}' ({count} of {values.size} values)")
    if bad:
        raise NonFiniteWeightsError(
            f"{len(bad)} initializer(s) hold NaN or Inf",
            f"{path.name}: {', '.join(bad[:8])}",
            "the training that produced the model diverged; export a checkpoint with finite weights",
        )
