"""One error hierarchy for everything a user can get wrong.

Every error carries a stable code (onnx-io.md §6), what went wrong, where, and what to do, so that
the CLI can print one message and exit with code 2 (3 for odimo's own bug: a failed self-check or a
crash). The code and slug are a promise to users, so each leaf class below states its pair once, as
class attributes, and a raise site names the class and passes only what, where and fix; the family
classes (ModelImportError, PassError...) are bases to catch, not to raise.
"""

from __future__ import annotations

from typing import ClassVar

from odimo.ir.text import printable

BUG_FIX = "this is a bug in odimo; please report it with the model (no output file was written)"


class OdimoError(Exception):
    """Base class: a problem the user can act on.

    `code` is the stable identifier of onnx-io.md §6 (E101...E901); `slug` a short name for it. A
    class without both is a family: constructing it raises TypeError. `default_fix` is the fix when
    the raise site gives none.
    """

    code: ClassVar[str] = ""
    slug: ClassVar[str] = ""
    exit_code: ClassVar[int] = 2
    default_fix: ClassVar[str] = ""

    def __init__(self, what: str, where: str = "", fix: str = "") -> None:
        if not (self.code and self.slug):
            raise TypeError(f"{type(self).__name__} is a family of errors; raise one of its leaf classes")
        self.what = what
        self.where = where
        self.fix = fix or self.default_fix
        super().__init__(self.render())

    def render(self) -> str:
        """The message as the CLI prints it: first line what, then where and fix, indented, then a
        note of what was kept (a checkpoint) if any. Each field is escaped and bounded (ir/text.py):
        they quote names and files the user gave, which may hold escape codes or megabytes."""
        lines = [f"error {self.code} {self.slug}: {printable(self.what)}"]
        if self.where:
            lines.append(f"  where: {printable(self.where)}")
        if self.fix:
            lines.append(f"  fix: {printable(self.fix)}")
        lines += [f"  {printable(note)}" for note in getattr(self, "__notes__", ())]
        return "\n".join(lines)


class ModelImportError(OdimoError):
    """The file is not a valid, complete, float ONNX model odimo can read (E101-E117)."""


class MissingFileError(ModelImportError):
    """The model path does not exist."""

    code = "E101"
    slug = "missing-file"


class NotAFileError(ModelImportError):
    """The model path is a directory."""

    code = "E101"
    slug = "not-a-file"


class UnreadableFileError(ModelImportError):
    """The model file exists but cannot be read (permissions, I/O)."""

    code = "E101"
    slug = "unreadable"


class EmptyFileError(ModelImportError):
    """The model file has 0 bytes."""

    code = "E102"
    slug = "empty-file"


class CorruptProtobufError(ModelImportError):
    """The model file is binary but not a parsable protobuf (truncated or corrupt)."""

    code = "E102"
    slug = "corrupt-protobuf"


class NotOnnxError(ModelImportError):
    """The file is something else: a PyTorch checkpoint, HDF5, text, a protobuf with no graph."""

    code = "E103"
    slug = "not-onnx"


class InvalidModelError(ModelImportError):
    """onnx.checker (full check) rejects the model."""

    code = "E104"
    slug = "invalid-model"


class ExternalDataError(ModelImportError):
    """External data is missing, unreadable or outside the model's folder."""

    code = "E105"
    slug = "external-data"


class UnsupportedOpsetError(ModelImportError):
    """The default-domain opset is outside the supported range."""

    code = "E106"
    slug = "opset"


class UnsupportedIrVersionError(ModelImportError):
    """The IR version is outside the supported range."""

    code = "E106"
    slug = "ir-version"


class ShapeInferenceError(ModelImportError):
    """Strict shape inference fails."""

    code = "E107"
    slug = "shape-inference"


class DynamicTensorShapeError(ModelImportError):
    """An intermediate tensor has a dynamic dim other than the batch."""

    code = "E107"
    slug = "dynamic-shape"


class UnsupportedOpError(ModelImportError):
    """A node uses an operator or attribute odimo has no rule for."""

    code = "E110"
    slug = "unsupported-op"


class DynamicInputShapeError(ModelImportError):
    """The input's C, H or W is not static."""

    code = "E111"
    slug = "dynamic-shape"


class InputCountError(ModelImportError):
    """The model has not exactly one (non-initializer) graph input."""

    code = "E112"
    slug = "inputs"


class OutputCountError(ModelImportError):
    """The model has not exactly one graph output."""

    code = "E113"
    slug = "outputs"


class InputTypeError(ModelImportError):
    """The input is not float32 of rank 4 (NCHW)."""

    code = "E114"
    slug = "input-type"


class PreQuantizedError(ModelImportError):
    """The model already holds quantization nodes (Q/DQ, QLinear*, *Integer)."""

    code = "E115"
    slug = "pre-quantized"


class BadOdimoMetadataError(ModelImportError):
    """A model odimo wrote whose odimo.* labels are unreadable, incomplete or contradict its report."""

    code = "E115"
    slug = "bad-odimo-metadata"


class NonFiniteWeightsError(ModelImportError):
    """Initializers hold NaN or Inf."""

    code = "E116"
    slug = "non-finite"


class FixedBatchError(ModelImportError):
    """The model computes its function only at its exported batch size."""

    code = "E117"
    slug = "fixed-batch"


class TensorTooLargeError(ModelImportError):
    """A declared tensor of one image is too large for this machine's memory."""

    code = "E118"
    slug = "too-large"


class NoSearchableLayerError(OdimoError):
    """The model has nothing to map."""

    code = "E120"
    slug = "no-searchable-layer"


class OutputPathError(OdimoError):
    """The output options are unusable (E130)."""


class UnusableOutputPathError(OutputPathError):
    """The output path is the input, a directory, or in a folder that does not exist."""

    code = "E130"
    slug = "output-path"


class OutputCollisionError(OutputPathError):
    """Two paths odimo would write are the same file, or one is the input or its external data."""

    code = "E130"
    slug = "output-collision"


class UnwritableOutputError(OutputPathError):
    """An output cannot be written: read-only folder, no permission, a full disk."""

    code = "E130"
    slug = "unwritable"


class OutputLockedError(OutputPathError):
    """Another odimo-compile is writing the same output."""

    code = "E130"
    slug = "output-locked"


class UnknownEmitModeError(OutputPathError):
    """The emission mode is not one odimo knows."""

    code = "E130"
    slug = "emit-mode"


class UnusableQdqOpsetError(OutputPathError):
    """--qdq-opset asks for an opset the QDQ output cannot have."""

    code = "E130"
    slug = "qdq-opset"


class DataError(OdimoError):
    """A dataset is missing, malformed, or does not fit the model."""

    code = "E140"
    slug = "bad-data"


class BadOptionError(OdimoError):
    """An option value outside what odimo accepts (λ, epochs, batch size, seed, device...)."""

    code = "E160"
    slug = "bad-option"


class TargetError(OdimoError):
    """An unknown target, a layer a target cannot run, or a missing runner for the targets (E150)."""


class BadTargetError(TargetError):
    """An unknown target, CU or baseline, or a layer or split a target cannot run."""

    code = "E150"
    slug = "bad-target"


class NoRayError(TargetError):
    """--ray is given but the 'ray' package is not installed."""

    code = "E150"
    slug = "no-ray"


class BadLambdasError(OdimoError):
    """--lambdas is not a comma-separated list of non-negative numbers."""

    code = "E150"
    slug = "bad-lambdas"


class MappingError(OdimoError):
    """A mapping file is malformed or not emittable for this model and target."""

    code = "E310"
    slug = "bad-mapping"


class PassError(OdimoError):
    """A graph pass met a precondition it cannot satisfy (E320)."""


class UnknownLayerError(PassError):
    """Weights are written back to a node the graph does not have."""

    code = "E320"
    slug = "unknown-layer"


class WeightShapeMismatchError(PassError):
    """A written-back weight or bias has another shape than the graph's."""

    code = "E320"
    slug = "shape-mismatch"


class UnknownInitializerError(PassError):
    """A written-back constant names no initializer of that shape."""

    code = "E320"
    slug = "unknown-initializer"


class NotContiguousError(PassError):
    """A layer of a contiguous group has channels that are not a per-CU prefix."""

    code = "E320"
    slug = "not-contiguous"


class NotQuantizedError(PassError):
    """The QDQ pass met weights that are not integer multiples of their step."""

    code = "E320"
    slug = "not-quantized"


class TrainingError(OdimoError):
    """Training diverged (NaN/Inf) or cannot resume (E330)."""


class NonFiniteLossError(TrainingError):
    """The training loss became NaN or Inf."""

    code = "E330"
    slug = "non-finite-loss"


class BadCheckpointError(TrainingError):
    """A checkpoint to resume from cannot be read."""

    code = "E330"
    slug = "bad-checkpoint"


class ForeignCheckpointError(TrainingError):
    """The checkpoint to resume from was made for another model or other settings."""

    code = "E330"
    slug = "foreign-checkpoint"


class VerificationError(OdimoError):
    """odimo's own output fails its own checks: a bug in odimo, hence exit code 3 (E900, E901)."""

    exit_code = 3
    default_fix = BUG_FIX


class ReferenceMismatchError(VerificationError):
    """A graph odimo produced computes a different function than its reference."""

    code = "E900"
    slug = "verification-failed"


class InvalidOutputError(VerificationError):
    """An emitted file fails the checker, strict inference or an onnxruntime load."""

    code = "E901"
    slug = "invalid-output"


class InternalError(OdimoError):
    """An unexpected exception inside a stage: a bug in odimo, exit code 3.

    Kept apart from VerificationError: that one is a wrong result odimo caught itself, this one a
    crash; the message names the stage and the stages that completed before it.
    """

    code = "E900"
    slug = "internal-error"
    exit_code = 3
    default_fix = BUG_FIX

    def __init__(self, stage: str, completed: tuple[str, ...], exc: BaseException) -> None:
        after = f" (after {', '.join(completed)})" if completed else ""
        super().__init__(f"stage '{stage}' failed{after}: {type(exc).__name__}: {exc}")
