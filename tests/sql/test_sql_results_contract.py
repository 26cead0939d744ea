"""The shipped results store contract against SQL: a SQLite file and a PostgreSQL schema."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pipeline_state_sql.results_store import SqlResultsStore, open_results_store
from pipeline_state_sql.schema import RESULTS_BATCHES
from sqlalchemy import update

from pipeline_state.errors import CorruptStateError
from pipeline_state.ports import Outbox
from pipeline_state.profiles.huleedu.results import (
    BatchResults,
    ClassDelta,
    ClassResults,
    ResultsChange,
    ResultsStore,
)
from pipeline_state.profiles.huleedu.testing.results_contract import (
    T0,
    ContractResultsStore,
    ResultsStoreContract,
    sample_batch,
)


class TestSqliteResultsStoreContract(ResultsStoreContract):
    @pytest.fixture
    async def store(self, sqlite_url: str) -> AsyncIterator[ContractResultsStore]:
        store = await open_results_store(sqlite_url)
        yield store
        await store.close()


@pytest.mark.postgres
class TestPostgresResultsStoreContract(ResultsStoreContract):
    @pytest.fixture
    async def store(self, pg: Any) -> AsyncIterator[ContractResultsStore]:
        store = await open_results_store(pg.url, schema=pg.schema)
        yield store
        await store.close()


# -- beyond the contract: what only a real database can show -----------------------------------


@pytest.fixture
async def results_stores(database: Any) -> AsyncIterator[list[SqlResultsStore]]:
    """Two stores, each on its own engine, on one migrated database (SQLite or PostgreSQL)."""
    stores = [await open_results_store(database.url, schema=database.schema) for _ in range(2)]
    yield stores
    for store in stores:
        await store.close()


async def test_concurrent_class_deltas_are_all_counted(results_stores: list[SqlResultsStore]) -> None:
    """Batches of one class committed at once from two stores: no delta is lost."""
    batches = [sample_batch(f"b{i:02d}") for i in range(20)]

    async def insert(store: SqlResultsStore, batch: BatchResults) -> None:
        delta = ClassDelta(
            "class-1", batches=1, by_status=((batch.status, 1),), essays_succeeded=2, essays_failed=1
        )
        await store.commit(ResultsChange(batch.batch_id, None, batch, T0, class_deltas=(delta,)))

    await asyncio.gather(*(insert(results_stores[i % 2], b) for i, b in enumerate(batches)))
    summary = await results_stores[0].class_results("class-1")
    assert summary == ClassResults("class-1", 20, (("completed_with_failures", 20),), 40, 20)


async def test_concurrent_writers_of_one_batch_one_wins(results_stores: list[SqlResultsStore]) -> None:
    await results_stores[0].commit(ResultsChange("b1", None, sample_batch("b1", completed=False), T0))
    changes = [
        ResultsChange("b1", 1, sample_batch("b1", version=2, class_id=f"class-{i}"), T0) for i in range(2)
    ]
    outcomes = await asyncio.gather(
        *(store.commit(change) for store, change in zip(results_stores, changes, strict=True)),
        return_exceptions=True,
    )
    assert sorted(type(o).__name__ for o in outcomes) == ["ConcurrencyConflictError", "NoneType"]
    loaded = await results_stores[1].load("b1")
    assert loaded is not None
    assert loaded.version == 2


async def test_unreadable_document_is_corrupt_state(results_stores: list[SqlResultsStore]) -> None:
    store = results_stores[0]
    await store.commit(ResultsChange("b1", None, sample_batch("b1"), T0))
    async with store.engine.begin() as conn:
        await conn.execute(update(RESULTS_BATCHES).values(document={"schema": 99}))
    with pytest.raises(CorruptStateError):
        await store.load("b1")
    with pytest.raises(CorruptStateError):
        await store.list_batches()


def test_sql_results_store_satisfies_the_ports() -> None:
    for port in (ResultsStore, Outbox):
        missing = [n for n in dir(port) if not n.startswith("_") and not hasattr(SqlResultsStore, n)]
        assert missing == [], (port.__name__, missing)
