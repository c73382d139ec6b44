"""One error hierarchy for everything a user can get wrong.

Every error carries a stable code (onnx-io.md §6), what went wrong, where, and what to do, so that
the CLI can print one message and exit with code 2 (3 for a failed self-verification, which is our
bug, not the user's).
"""

from __future__ import annotations

BUG_FIX = "this is a bug in odimo; please report it with the model (nothing was written)"


class OdimoError(Exception):
    """Base class: a problem the user can act on.

    `code` is the stable identifier of onnx-io.md §6 (E101...E310); `slug` a short name for it.
    """

    exit_code = 2

    def __init__(self, code: str, slug: str, what: str, where: str = "", fix: str = "") -> None:
        self.code = code
        self.slug = slug
        self.what = what
        self.where = where
        self.fix = fix
        super().__init__(self.render())

    def render(self) -> str:
        """The message as the CLI prints it: first line what, then where and fix, indented."""
        lines = [f"error {self.code} {self.slug}: {self.what}"]
        if self.where:
            lines.append(f"  where: {self.where}")
        if self.fix:
            lines.append(f"  fix: {self.fix}")
        return "\n".join(lines)


class ModelImportError(OdimoError):
    """The file is not a valid, complete, float ONNX model odimo can read (E101-E116)."""


class UnsupportedOpError(ModelImportError):
    """A node uses an operator or attribute odimo has no rule for (E110)."""


class NoSearchableLayerError(OdimoError):
    """The model has nothing to map (E120)."""


class OutputPathError(OdimoError):
    """The output path is unusable or would overwrite the input (E130)."""


class DataError(OdimoError):
    """A dataset is missing, malformed, or does not fit the model (E140)."""


class TargetError(OdimoError):
    """An unknown target, or a layer a target cannot run (E150)."""


class MappingError(OdimoError):
    """A mapping file is malformed or not emittable for this model and target (E310)."""


class PassError(OdimoError):
    """A graph pass met a precondition it cannot satisfy (E320)."""


class TrainingError(OdimoError):
    """Training diverged (NaN/Inf) or cannot resume (E330)."""


class VerificationError(OdimoError):
    """odimo's own output does not match the reference: a bug in odimo, hence exit code 3."""

    exit_code = 3


class InternalError(OdimoError):
    """An unexpected exception inside a stage (E900 internal-error): a bug in odimo, exit code 3.

    Kept apart from VerificationError: that one is a wrong result odimo caught itself, this one a
    crash; the message names the stage and the stages that completed before it.
    """

    exit_code = 3

    def __init__(self, stage: str, completed: tuple[str, ...], exc: BaseException) -> None:
        after = f" (after {', '.join(completed)})" if completed else ""
        super().__init__(
            "E900", "internal-error", f"stage '{stage}' failed{after}: {type(exc).__name__}: {exc}", fix=BUG_FIX
        )
