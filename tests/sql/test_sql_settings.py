"""The SQL adapter's shape: its settings from the old variables, its error, ``open`` against
real SQLite and PostgreSQL, and its documented public names."""

from __future__ import annotations

from pathlib import Path

import pipeline_state_sql
import pytest
from pipeline_state_sql import (
    Settings,
    SqlSettingsError,
    SqlStore,
    migrate,
    open,
    open_results,
    resources,
    results_store,
    store,
)
from pipeline_state_sql import errors as sql_errors
from pipeline_state_sql import settings as sql_settings
from sqlalchemy import text

from pipeline_state._service import PipelineService
from pipeline_state.errors import PipelineStateError, StoreError
from pipeline_state.testing import Envelopes
from tests.public_names import assert_public_names

from .conftest import Database

README = Path(pipeline_state_sql.__file__).parent / "README.md"


def test_sql_settings_read_the_variables_deployments_set() -> None:
    settings = Settings.from_environ(
        {
            "PIPELINE_STATE_STORE_UPGRADE": "0",
            "PIPELINE_STATE_STORE_SCHEMA": "tenant_a",
            "PIPELINE_STATE_SQLITE_SYNCHRONOUS": "normal",
            "PIPELINE_STATE_OUTBOX_LEASE_SECONDS": "12.5",
            "PIPELINE_STATE_STORE": "postgresql+asyncpg://app@db/pipelines",
            "PIPELINE_STATE_UNRELATED": "ignored",
        }
    )
    assert settings.store_options() == {
        "upgrade": False,
        "schema": "tenant_a",
        "lease": 12.5,
        "synchronous": "NORMAL",
    }
    assert settings.store == "postgresql+asyncpg://app@db/pipelines"
    defaults = Settings.from_environ({"PIPELINE_STATE_STORE_SCHEMA": ""})  # empty: unset
    assert (defaults.store, defaults.store_upgrade, defaults.store_schema) == (
        "sqlite+aiosqlite:///pipeline_state.db",
        True,
        None,
    )
    # a keyword argument wins over the variable
    assert (
        Settings.from_environ(
            {"PIPELINE_STATE_OUTBOX_LEASE_SECONDS": "5"}, outbox_lease_seconds=7
        ).outbox_lease_seconds
        == 7
    )


def test_sql_settings_read_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIPELINE_STATE_OUTBOX_LEASE_SECONDS", "3")
    assert Settings().outbox_lease_seconds == 3.0
    assert Settings.from_environ().outbox_lease_seconds == 3.0
    monkeypatch.setenv("PIPELINE_STATE_OUTBOX_LEASE_SECONDS", "0")
    with pytest.raises(SqlSettingsError, match=r"^PIPELINE_STATE_OUTBOX_LEASE_SECONDS: "):
        Settings()
    with pytest.raises(SqlSettingsError, match=r"^PIPELINE_STATE_STORE_UPGRADE: expected a boolean"):
        Settings(outbox_lease_seconds=1, store_upgrade="sometimes")


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("PIPELINE_STATE_STORE_UPGRADE", "maybe", "expected a boolean, got 'maybe'"),
        ("PIPELINE_STATE_SQLITE_SYNCHRONOUS", "fast", "'OFF', 'NORMAL', 'FULL' or 'EXTRA'"),
        ("PIPELINE_STATE_OUTBOX_LEASE_SECONDS", "-1", "greater than or equal to 1"),
        ("PIPELINE_STATE_OUTBOX_LEASE_SECONDS", "0.5", "greater than or equal to 1"),
        ("PIPELINE_STATE_OUTBOX_LEASE_SECONDS", "soon", "got 'soon'"),
    ],
)
def test_a_wrong_sql_value_is_the_adapters_error_naming_the_variable(
    variable: str, value: str, says: str
) -> None:
    with pytest.raises(SqlSettingsError) as caught:
        Settings.from_environ({variable: value})
    assert str(caught.value).startswith(f"{variable}: ")
    assert says in str(caught.value)
    assert isinstance(caught.value, PipelineStateError)
    assert isinstance(caught.value, ValueError)  # callers catching ValueError keep working


async def _closed(store: SqlStore) -> bool:
    """Whether the store's engine was disposed: its pool holds no connection any more."""
    return store.engine.pool.checkedin() == 0 and store.engine.pool.checkedout() == 0


async def _service_round_trip(store: SqlStore) -> None:
    service = PipelineService(store)
    envelopes = Envelopes()
    await service.handle_message(*envelopes.register("b1", items=2))
    assert (await store.load("b1")) is not None


async def test_sql_open_creates_uses_and_closes_a_sqlite_store(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'state.db'}"
    async with open(Settings.from_environ({}, store=url)) as opened:
        assert isinstance(opened, SqlStore)
        await _service_round_trip(opened)
        assert await migrate.current_revision(opened.engine) == migrate.head_revision()
        assert opened.engine.pool.checkedin() + opened.engine.pool.checkedout() > 0  # connections kept
    assert await _closed(opened)
    # the rows outlive the store: a new one reads them
    async with open(store=url, store_upgrade=False) as again:
        assert (await again.load("b1")) is not None


async def test_sql_open_closes_the_store_when_the_block_fails(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'state.db'}"
    used: list[SqlStore] = []

    async def failing() -> None:
        async with open(store=url) as opened:
            await _service_round_trip(opened)
            used.append(opened)
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        await failing()
    assert await _closed(used[0])


async def test_sql_open_against_postgres_uses_the_schema_and_closes(pg: Database) -> None:
    settings = Settings.from_environ(
        {"PIPELINE_STATE_STORE_SCHEMA": pg.schema, "PIPELINE_STATE_STORE_UPGRADE": "1"}, store=pg.url
    )
    async with open(settings) as opened:
        await _service_round_trip(opened)
        async with opened.engine.connect() as connection:
            path = (await connection.execute(text("show search_path"))).scalar_one()
            assert pg.schema in path
        assert opened.engine.pool.checkedin() + opened.engine.pool.checkedout() > 0
    assert await _closed(opened)
    async with open_results(settings) as results:
        assert isinstance(results, results_store.SqlResultsStore)
    assert results.engine.pool.checkedin() == 0


async def test_sql_open_without_upgrade_finds_no_tables(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"
    async with open(store=url, store_upgrade=False) as opened:
        with pytest.raises(StoreError):
            await opened.load("b1")


def test_sql_public_names_are_the_documented_ones() -> None:
    assert_public_names(
        "pipeline_state_sql",
        README,
        {
            "Settings": sql_settings.Settings,
            "SqlResultsStore": results_store.SqlResultsStore,
            "SqlSettingsError": sql_errors.SqlSettingsError,
            "SqlStore": store.SqlStore,
            "create_engine": pipeline_state_sql.engine.create_engine,
            "create_or_upgrade": migrate.create_or_upgrade,
            "open": resources.open,
            "open_results": resources.open_results,
            "open_results_store": results_store.open_results_store,
            "open_store": store.open_store,
        },
    )
    assert issubclass(SqlSettingsError, PipelineStateError)
