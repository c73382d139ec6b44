"""Optional tools (Ray, Apache TVM, Debian's chromium for Netron): a test that needs one skips where
it is missing, except in CI (`CI=true`, as `.ci/run` runs). There `./setup.sh --test` installs every
one of them, so a missing tool means a broken install step, and the test fails instead of hiding it
behind a skip.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import NoReturn

import pytest

SETUP_HINT = "./setup.sh --test installs it"


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def require(missing: list[str]) -> None:
    """Skip (fail in CI) when `missing`, the reasons a tool is absent, is not empty."""
    if missing:
        _give_up("; ".join(missing))


def require_module(name: str) -> ModuleType:
    """`name` imported, as `pytest.importorskip` does, but failing in CI."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        reason = f"the '{name}' package does not import ({exc})"
    _give_up(reason)


def _give_up(reason: str) -> NoReturn:
    if in_ci():
        pytest.fail(f"CI must run this test, but {reason} ({SETUP_HINT})", pytrace=False)
    pytest.skip(f"{reason} ({SETUP_HINT})")
