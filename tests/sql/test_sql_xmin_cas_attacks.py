"""Found by an attack, held: the PostgreSQL one-statement compare-and-set's ``xmin`` check
(no false conflict after VACUUM FULL, FREEZE or CLUSTER between read and write;
``commit_many`` where one batch waited for another writer's row lock)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import asyncpg
import pytest
from pipeline_state_sql import SqlStore, open_store
from sqlalchemy.engine import make_url

from pipeline_state import ManualClock, PipelineService
from pipeline_state.ports import Change
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes
from tests.sql.conftest import Database

pytestmark = [pytest.mark.timeout(60), pytest.mark.postgres]


def _dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


class BeforeCommit:
    """``store`` that awaits ``hook(changes)`` before each commit (after the service read)."""

    def __init__(self, store: SqlStore, hook: Any) -> None:
        self._store = store
        self.hook = hook

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def commit(self, change: Change) -> None:
        await self.hook([change])
        await self._store.commit(change)

    async def commit_many(self, changes: Sequence[Change]) -> None:
        await self.hook(changes)
        await self._store.commit_many(changes)


@pytest.mark.parametrize("maintenance", ["VACUUM FULL", "VACUUM (FREEZE)", "CLUSTER"])
async def test_maintenance_between_read_and_write_is_no_conflict(pg: Database, maintenance: str) -> None:
    """VACUUM FULL / FREEZE / CLUSTER rewrite or freeze the row between the service's read
    and its one-statement write: no false conflict (every unit of work commits at its first
    attempt)."""
    store = await open_store(pg.url, schema=pg.schema, upgrade=True)
    conn = await asyncpg.connect(_dsn(pg.url), timeout=10)
    try:
        if maintenance == "CLUSTER":
            await conn.execute(f'CLUSTER "{pg.schema}".batches USING ix_batches_status_batch_id')
        table = f'"{pg.schema}".batches'
        sql = f"{maintenance} {table}" if maintenance != "CLUSTER" else f"CLUSTER {table}"

        async def hook(_changes: Sequence[Change]) -> None:
            await conn.execute(sql)

        service = PipelineService(BeforeCommit(store, hook), clock=ManualClock())  # type: ignore[arg-type]
        env = HuleEduEnvelopes()
        results = [
            await service.handle_message(*env.register("v1", items=2)),
            await service.handle_message(*env.provisioned("v1", env.item_ids("v1", 2))),
            await service.handle_message(*env.request("v1", "nlp")),
        ]
        assert [r.attempts for r in results] == [1, 1, 1]
        assert (await service.get_batch("v1")).active_run is not None
    finally:
        await conn.close()
        await store.close()


async def test_commit_many_where_one_batch_waited_for_a_lock(pg: Database) -> None:
    """A fetch of facts for two batches; another writer holds b2's row (a no-op update,
    as a denial's unit of work makes) while the group statement runs and commits after it
    began waiting. The group loses (xmin) and is handled one by one: every fact applies
    once, nothing is lost or doubled."""
    store = await open_store(pg.url, schema=pg.schema, upgrade=True)
    other = await asyncpg.connect(_dsn(pg.url), timeout=10)
    env = HuleEduEnvelopes()
    plain = PipelineService(store, clock=ManualClock())
    for b in ("b1", "b2"):
        await plain.handle_message(*env.register(b, items=1))
    armed = {"once": True}
    releases: list[asyncio.Task[Any]] = []

    async def hook(changes: Sequence[Change]) -> None:
        if armed["once"] and len(changes) > 1:
            armed["once"] = False
            await other.execute("BEGIN")
            await other.execute(f"UPDATE \"{pg.schema}\".batches SET version = version WHERE batch_id = 'b2'")

            async def release() -> None:
                await asyncio.sleep(0.5)
                await other.execute("COMMIT")

            releases.append(asyncio.create_task(release()))

    try:
        service = PipelineService(BeforeCommit(store, hook), clock=ManualClock())  # type: ignore[arg-type]
        facts = [env.provisioned("b1", env.item_ids("b1", 1)), env.provisioned("b2", env.item_ids("b2", 1))]
        results = await service.handle_many(facts)
        await asyncio.gather(*releases)
        assert releases, "the lock was never taken"
        assert all(not isinstance(r, Exception) and not r.duplicate for r in results), results
        for b in ("b1", "b2"):
            assert (await service.get_batch(b)).status.value == "ready_for_pipeline_execution"
        again = await service.handle_many(facts)
        assert all(not isinstance(r, Exception) and r.duplicate for r in again)
    finally:
        await other.close()
        await store.close()
