"""Concurrent callers of one PostgreSQL store write at the same time (issue 16, point 4).

A store opened with its default options lends each unit of work one of its writing
connections ("lanes"). With SQLAlchemy's default pool of 5 it had two, so eight callers
on eight different batches committed two at a time, whatever the database allowed. Here a
separate connection holds an EXCLUSIVE lock on ``batches`` while eight callers each handle
a fact for their own batch: every unit of work that got a connection stops at its write and
waits for the lock, in PostgreSQL (``pg_stat_activity``), so the number waiting at once is
the number of units of work the store runs at once. Then the lock goes and all eight apply.

The service is made with ``group_limit=1``: by default it would commit concurrent calls
together (group commit, ``tests/core/test_core_group_commit.py``), in at most two units of
work at once, which would leave the store's lanes untested.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg
import pytest
from pipeline_state_sql import open_store
from sqlalchemy.engine import make_url

from pipeline_state import PipelineService
from pipeline_state.testing import Envelopes

pytestmark = pytest.mark.postgres

CALLERS = 8


def _dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def _waiting_writers(watcher: asyncpg.Connection, schema: str) -> int:
    """Backends of this test's schema blocked on a lock while writing ``batches``."""
    found = await watcher.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
        "AND query ILIKE '%batches%' AND pid IN ("
        "  SELECT pid FROM pg_locks l JOIN pg_class c ON c.oid = l.relation"
        "  JOIN pg_namespace n ON n.oid = c.relnamespace"
        "  WHERE n.nspname = $1 AND c.relname = 'batches' AND NOT l.granted)",
        schema,
    )
    return int(found)


async def test_sql_eight_callers_write_at_once_on_a_default_store(pg: Any) -> None:
    url, schema = pg.url, pg.schema
    store = await open_store(url, schema=schema, upgrade=True)
    service = PipelineService(store, group_limit=1)  # one unit of work per call: the lanes' test
    env = Envelopes()
    batches = [f"ov{i}" for i in range(CALLERS)]
    for batch_id in batches:
        await service.handle_message(*env.register(batch_id, items=1))
    locker = await asyncpg.connect(_dsn(url), server_settings={"search_path": str(schema)})
    watcher = await asyncpg.connect(_dsn(url))
    try:
        lock = locker.transaction()
        await lock.start()
        await locker.execute("LOCK TABLE batches IN EXCLUSIVE MODE")  # reads go on, writes wait
        tasks = [
            asyncio.create_task(service.handle_message(*env.provisioned(b, env.item_ids(b, 1))))
            for b in batches
        ]
        most, deadline = 0, time.monotonic() + 20
        while most < CALLERS and time.monotonic() < deadline:
            assert not any(t.done() for t in tasks), "a write went through the lock"
            most = max(most, await _waiting_writers(watcher, str(schema)))
            await asyncio.sleep(0.05)
        await lock.rollback()
        results = await asyncio.wait_for(asyncio.gather(*tasks), timeout=30)
    finally:
        await locker.close()
        await watcher.close()
        await store.close()
    assert most == CALLERS, f"only {most} of {CALLERS} units of work were writing at once"
    assert all(r.decision is not None and not r.duplicate for r in results)
