"""The SQL adapter's public surface: one curated ``__all__`` that matches what it exports."""

from __future__ import annotations

import importlib
import pkgutil

import pipeline_state_sql
from pipeline_state_sql import SqlStore

from pipeline_state.ports import Outbox, Store

EXPECTED = {
    "Settings",
    "SqlResultsStore",
    "SqlSettingsError",
    "SqlStore",
    "create_engine",
    "create_or_upgrade",
    "open",
    "open_results",
    "open_results_store",
    "open_store",
}


def test_all_is_curated_and_importable() -> None:
    # Each name is also checked to be the object it claims: tests/sql/test_sql_settings.py.
    assert set(pipeline_state_sql.__all__) == EXPECTED
    for name in pipeline_state_sql.__all__:
        assert getattr(pipeline_state_sql, name) is not None


def test_every_module_declares_all_and_a_docstring() -> None:
    for info in pkgutil.walk_packages(pipeline_state_sql.__path__, "pipeline_state_sql."):
        if ".migrations" in info.name:
            continue
        module = importlib.import_module(info.name)
        assert module.__doc__, info.name
        assert isinstance(getattr(module, "__all__", None), list), info.name


def test_sql_store_implements_both_ports() -> None:
    for port in (Store, Outbox):
        missing = [name for name in dir(port) if not name.startswith("_") and not hasattr(SqlStore, name)]
        assert missing == [], (port.__name__, missing)
