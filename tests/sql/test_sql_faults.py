"""Bad stored data and unavailable databases surface as the library's errors."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import pytest
from pipeline_state_sql import SqlStore, open_store
from sqlalchemy import text

from pipeline_state import PipelineService, StoreUnavailableError
from pipeline_state.errors import CorruptStateError, StoreError
from pipeline_state.ports import Change
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes
from pipeline_state.testing import T0, make_state, message


async def _corrupt(store: SqlStore, batch_id: str, document: str) -> None:
    cast = "CAST(:doc AS JSONB)" if store.engine.dialect.name == "postgresql" else ":doc"
    async with store.engine.begin() as conn:
        await conn.execute(
            text(f"UPDATE batches SET state = {cast} WHERE batch_id = :id"), {"doc": document, "id": batch_id}
        )


@pytest.mark.parametrize(
    ("document", "reason"),
    [
        pytest.param('{"schema": 99, "batch_id": "b2"}', "unknown schema version 99", id="unknown-version"),
        pytest.param('{"schema": 1, "batch_id": "b2"}', "missing field", id="truncated"),
        pytest.param('"just a string"', "should be an object", id="not-an-object"),
    ],
)
async def test_corrupted_state_row_names_the_batch(sql_store: SqlStore, document: str, reason: str) -> None:
    for batch_id in ("b1", "b2", "b3"):
        await sql_store.commit(Change(batch_id, None, make_state(batch_id), T0))
    await _corrupt(sql_store, "b2", document)
    assert await sql_store.load("b1") == make_state("b1")
    with pytest.raises(CorruptStateError) as info:
        await sql_store.load("b2")
    assert info.value.batch_id == "b2"
    assert reason in info.value.reason
    with pytest.raises(CorruptStateError) as listed:
        await sql_store.list_batches()
    assert listed.value.batch_id == "b2"
    # The service refuses to decide on it rather than overwrite it.
    service = PipelineService(sql_store)
    with pytest.raises(CorruptStateError, match="b2"):
        await service.handle_message(*HuleEduEnvelopes().validation_errors("b2"))


async def test_state_that_is_not_json_names_the_batch(sqlite_store: SqlStore) -> None:
    await sqlite_store.commit(Change("b1", None, make_state("b1"), T0))
    await _corrupt(sqlite_store, "b1", '{"schema": 1, "batch_id": "b1", "stat')
    with pytest.raises(CorruptStateError, match="not valid JSON") as info:
        await sqlite_store.load("b1")
    assert info.value.batch_id == "b1"


@pytest.mark.parametrize("upgrade", [True, False])
async def test_postgres_that_is_down_is_unavailable(upgrade: bool) -> None:
    url = "postgresql+asyncpg://root@127.0.0.1:1/test"  # nothing listens on port 1
    if upgrade:
        with pytest.raises(StoreUnavailableError) as info:
            await open_store(url, upgrade=True, connect_args={"timeout": 5})
        assert isinstance(info.value.__cause__, BaseException)
        return
    store = await open_store(url, upgrade=False, connect_args={"timeout": 5})
    try:
        with pytest.raises(StoreUnavailableError, match=r"cannot be reached|unavailable") as info:
            await store.load("b1")
        assert info.value.__cause__ is not None
        with pytest.raises(StoreUnavailableError):
            await store.commit(Change("b1", None, make_state("b1"), T0))
        with pytest.raises(StoreUnavailableError):
            await store.claim(T0)
    finally:
        await store.close()


async def test_sqlite_file_that_cannot_be_opened_is_unavailable(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'missing-dir' / 'state.db'}"
    with pytest.raises(StoreUnavailableError, match="unable to open"):
        await open_store(url)
    # aiosqlite stops the worker thread of a failed connection without waiting: let it end
    # before this test's loop closes.
    await asyncio.sleep(0.05)


async def test_locked_sqlite_is_unavailable_then_recovers(sqlite_url: str, tmp_path: Path) -> None:
    store = await open_store(sqlite_url, busy_timeout=0.05)
    try:
        await store.commit(Change("b1", None, make_state("b1"), T0))
        holder = sqlite3.connect(tmp_path / "state.db", isolation_level=None)
        try:
            holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock
            with pytest.raises(StoreUnavailableError, match="locked"):
                await store.commit(Change("b2", None, make_state("b2"), T0))
            # Readers are not blocked in WAL mode.
            assert await store.load("b1") == make_state("b1")
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        await store.commit(Change("b2", None, make_state("b2"), T0))
        assert await store.load("b2") == make_state("b2")
    finally:
        await store.close()


async def test_missing_schema_is_a_store_error_not_unavailability(database: Any) -> None:
    store = await open_store(database.url, schema=database.schema, upgrade=False)
    try:
        with pytest.raises(StoreError) as info:
            await store.load("b1")
        assert not isinstance(info.value, StoreUnavailableError)
        assert "batches" in str(info.value)
    finally:
        await store.close()


@pytest.mark.postgres
async def test_lost_postgres_connections_are_replaced(pg: Any) -> None:
    name = f"ps-{uuid.uuid4().hex[:8]}"
    store = await open_store(
        pg.url, schema=pg.schema, connect_args={"server_settings": {"application_name": name}}
    )
    try:
        await store.commit(Change("b1", None, make_state("b1"), T0))
        assert await store.load("b1") == make_state("b1")
        async with store.engine.connect() as admin:
            killed = await admin.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name = :n AND pid <> pg_backend_pid()"
                ),
                {"n": name},
            )
            assert len(killed.all()) == 2  # the store's reading and writing connections
        # The broken connection surfaces once as unavailability, then is replaced.
        with pytest.raises(StoreUnavailableError):
            await store.load("b1")
        assert await store.load("b1") == make_state("b1")
        with pytest.raises(StoreUnavailableError):
            await store.commit(Change("b2", None, make_state("b2"), T0))
        await store.commit(Change("b2", None, make_state("b2"), T0))
        assert [s.batch_id for s in await store.list_batches()] == ["b1", "b2"]
    finally:
        await store.close()


async def test_corrupted_outbox_envelope_is_reported_not_published(sqlite_store: SqlStore) -> None:
    await sqlite_store.commit(Change("b1", None, None, T0, outbox=(message("m1", "k"),)))
    async with sqlite_store.engine.begin() as conn:
        await conn.execute(text("UPDATE outbox SET envelope = '[1, 2' WHERE event_id = 'm1'"))
    with pytest.raises(StoreError, match="m1"):
        await sqlite_store.claim(T0)
