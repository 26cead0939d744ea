"""Hooks for the whole suite.

The suite runs on several worker processes (pytest-xdist, ``-n`` in ``pyproject.toml``), which
send each test's report to the main process as UTF-8. Hostile-input tests put lone surrogates
(``"\\ud800"``) in log lines and assertion messages on purpose; such a string cannot be
encoded, and the worker crashed the whole run. A report's strings are escaped
(``backslashreplace``) before it is sent, so the report reads ``\\ud800`` instead.

schemathesis gives all API operations of one test the test's node id. xdist's schedulers by
file, scope or group key tests by node id and ran one operation of each such test, silently;
``worksteal`` (the suite's) and ``load`` hand out tests by index and run them all. Asked for
a scheduler keyed by node id while tests share one, the run stops with a usage error.
"""

from __future__ import annotations

from collections import Counter
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
def pytest_report_to_serializable() -> Generator[None, Any, Any]:
    """A worker's report as xdist serialized it, its strings made encodable."""
    serialized = yield
    return _encodable(serialized)


_BY_NODE_ID = frozenset({"loadscope", "loadfile", "loadgroup"})
"""xdist's schedulers that key tests by node id (one test of several sharing an id runs)."""


def pytest_xdist_node_collection_finished(node: Any, ids: list[str]) -> None:
    """On the controller, as each worker reports what it collected."""
    dist = node.config.option.dist
    if dist not in _BY_NODE_ID:
        return
    shared = sorted(nodeid for nodeid, n in Counter(ids).items() if n > 1)
    if shared:
        pytest.exit(
            f"--dist {dist} would run one test of each group sharing a node id "
            f"(use --dist worksteal): {shared}",
            returncode=pytest.ExitCode.USAGE_ERROR,
        )
