"""Hooks for the whole suite.

The suite runs on several worker processes (pytest-xdist, ``-n`` in ``pyproject.toml``), which
send each test's report to the main process as UTF-8. Hostile-input tests put lone surrogates
(``"\\ud800"``) in log lines and assertion messages on purpose; such a string cannot be
encoded, and the worker crashed the whole run. A report's strings are escaped
(``backslashreplace``) before it is sent, so the report reads ``\\ud800`` instead.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest


def _encodable(value: Any) -> Any:
    """``value`` with every string in it made encodable as UTF-8 (lists and dicts walked)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return value.encode("utf-8", "backslashreplace").decode("utf-8")
        return value
    if isinstance(value, dict):
        return {_encodable(k): _encodable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_encodable(v) for v in value)
    return value


@pytest.hookimpl(wrapper=True)
def pytest_report_to_serializable(report: Any) -> Generator[None, Any, Any]:
    serialized = yield
    return _encodable(serialized)
