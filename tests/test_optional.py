"""The optional-tool gate: skip on a developer's machine, fail in CI, pass when the tool is there."""

from __future__ import annotations

import pytest
from optional import require, require_module


def test_a_missing_tool_skips_outside_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="setup.sh --test"):
        require_module("odimo_no_such_module")


@pytest.mark.parametrize("value", ["true", "1"])
def test_a_missing_tool_fails_in_ci(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("CI", value)
    with pytest.raises(pytest.fail.Exception, match="CI must run this test, but 'chromium' is missing"):
        require(["'chromium' is missing"])


def test_a_present_tool_is_returned(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    assert require_module("json").dumps([]) == "[]"
    require([])
