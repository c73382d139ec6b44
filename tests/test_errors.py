"""The error table (ir/errors.py): each leaf class owns one (code, slug) pair, families only group.

Codes and slugs are a promise to users (onnx-io.md §6), so they are written once, on the class, and
a raise site names the class; the last test holds the sources to that.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from odimo.ir import errors
from odimo.ir.errors import (
    BUG_FIX,
    CorruptProtobufError,
    EmptyFileError,
    InternalError,
    InvalidOutputError,
    ModelImportError,
    NotOnnxError,
    OdimoError,
    ReferenceMismatchError,
    VerificationError,
)

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("compiler", "ir", "passes", "retrain", "targets", "models", "scripts", "bench")
ERRORS_FILE = ROOT / "ir" / "errors.py"


def _subclasses(cls: type) -> list[type]:
    found = []
    for sub in cls.__subclasses__():
        found += [sub, *_subclasses(sub)]
    return found


CLASSES = _subclasses(OdimoError)
LEAVES = [cls for cls in CLASSES if not cls.__subclasses__()]
FAMILIES = [OdimoError] + [cls for cls in CLASSES if cls.__subclasses__()]


def test_the_table_lives_in_one_module() -> None:
    assert {cls.__module__ for cls in CLASSES} == {"odimo.ir.errors"}
    assert all(getattr(errors, cls.__name__) is cls for cls in CLASSES)


@pytest.mark.parametrize("cls", LEAVES, ids=lambda cls: cls.__name__)
def test_every_leaf_has_a_code_a_slug_and_its_exit_code(cls: type[OdimoError]) -> None:
    assert re.fullmatch(r"E\d{3}", cls.code), cls.code
    assert re.fullmatch(r"[a-z]+(-[a-z]+)*", cls.slug), cls.slug
    assert cls.exit_code == (3 if cls.code.startswith("E9") else 2)


def test_no_two_leaves_share_a_code_and_slug() -> None:
    pairs = Counter((cls.code, cls.slug) for cls in LEAVES)
    assert [pair for pair, n in pairs.items() if n > 1] == []


@pytest.mark.parametrize("cls", FAMILIES, ids=lambda cls: cls.__name__)
def test_a_family_has_no_slug_and_cannot_be_raised(cls: type[OdimoError]) -> None:
    assert not cls.slug
    with pytest.raises(TypeError, match="is a family of errors"):
        cls("what")


def test_an_error_renders_its_class_pair_and_the_site_text() -> None:
    err = EmptyFileError("the model file is empty (0 bytes)", "m.onnx", "re-export the model")
    assert (err.code, err.slug, err.what, err.where, err.fix) == (
        "E102",
        "empty-file",
        "the model file is empty (0 bytes)",
        "m.onnx",
        "re-export the model",
    )
    assert (
        str(err)
        == err.render()
        == ("error E102 empty-file: the model file is empty (0 bytes)\n  where: m.onnx\n  fix: re-export the model")
    )
    assert isinstance(err, ModelImportError) and err.exit_code == 2
    bare = CorruptProtobufError("the file is a corrupt protobuf", fix="re-download it")
    assert bare.render() == "error E102 corrupt-protobuf: the file is a corrupt protobuf\n  fix: re-download it"
    assert NotOnnxError("no graph").render() == "error E103 not-onnx: no graph"


def test_odimo_bugs_exit_3_with_the_one_bug_fix_by_default() -> None:
    for cls in (ReferenceMismatchError, InvalidOutputError):
        err = cls("the emitted file differs", where="out.onnx")
        assert isinstance(err, VerificationError) and err.exit_code == 3 and err.fix == BUG_FIX
    assert (ReferenceMismatchError.code, InvalidOutputError.code) == ("E900", "E901")
    assert ReferenceMismatchError("x", fix="another fix").fix == "another fix"
    crash = InternalError("emit", ("import", "search"), ValueError("boom"))
    assert not isinstance(crash, VerificationError) and crash.exit_code == 3
    assert crash.render() == (
        f"error E900 internal-error: stage 'emit' failed (after import, search): ValueError: boom\n  fix: {BUG_FIX}"
    )


def _source_lines() -> list[tuple[str, str]]:
    """(path:line, text) of every line of the package, script and bench sources."""
    lines = []
    for folder in SOURCES:
        for path in sorted((ROOT / folder).rglob("*.py")):
            for n, text in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                lines.append((f"{path.relative_to(ROOT)}:{n}", text))
    return lines


def test_no_raise_site_names_a_code_and_the_bug_text_exists_once() -> None:
    errors_file = str(ERRORS_FILE.relative_to(ROOT))
    quoted_codes = [
        f"{where}: {text.strip()}"
        for where, text in _source_lines()
        if re.search(r"""["']E\d{3}["']""", text) and not where.startswith(f"{errors_file}:")
    ]
    assert quoted_codes == []
    assert [where.split(":")[0] for where, text in _source_lines() if BUG_FIX in text] == [errors_file]
