"""``outbox_backlog()``: pending rows, when the oldest of them was written, and parked rows,
read in one call by the metrics (SQLite, PostgreSQL and the in-memory store agree)."""

from __future__ import annotations

from datetime import timedelta

from pipeline_state_sql import SqlStore

from pipeline_state import InMemoryStore
from pipeline_state.ports import Change
from pipeline_state.testing import T0, message


async def _check_backlog(store: SqlStore | InMemoryStore) -> None:
    assert await store.outbox_backlog() == (0, None, 0)
    first = (message("b-1", "k1"), message("b-2", "k2"), message("b-3", "k3"))
    await store.commit(Change("backlog-1", None, None, T0, outbox=first))
    later = T0 + timedelta(seconds=5)
    await store.commit(Change("backlog-2", None, None, later, outbox=(message("b-4", "k4"),)))
    assert await store.outbox_backlog() == (4, T0, 0)

    rows = {row.message.event_id: row for row in await store.claim(later, 10)}
    await store.mark_failed(rows["b-1"].id, "refused", later, retry_at=later, park=True)
    await store.mark_published([rows["b-2"].id, rows["b-3"].id], later)
    assert await store.outbox_backlog() == (1, later, 1)
    await store.mark_published([rows["b-4"].id], later)
    assert await store.outbox_backlog() == (0, None, 1)


async def test_sql_outbox_backlog_counts_pending_oldest_and_parked(sql_store: SqlStore) -> None:
    await _check_backlog(sql_store)


async def test_memory_outbox_backlog_agrees_with_the_sql_store() -> None:
    await _check_backlog(InMemoryStore())
