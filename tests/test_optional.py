"""The helper that makes a missing optional part a failure under CI."""

from __future__ import annotations

import pytest

from tests.optional import require


def test_require_fails_under_ci_when_a_module_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="required under CI=true"):
        require("pipeline_state_no_such_module")
    monkeypatch.setenv("CI", "false")
    with pytest.raises(pytest.skip.Exception):
        require("pipeline_state_no_such_module")
    assert require("json").__name__ == "json"
