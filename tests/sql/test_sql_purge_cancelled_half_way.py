"""The retention purge: a purge in bounded rounds (``purge_expired`` with a
small ``rows_per_round``) cancelled half-way, at many points, while units of work of the
same store run; then the store must still commit promptly, what was deleted must be only
what had expired, and a later purge must finish the job. SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime

import pytest
from sqlalchemy import text

from pipeline_state import InMemoryBus, ManualClock, OutboxRelay, PipelineService
from pipeline_state.ports import Retention, purge_expired
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes
from tests.sql.conftest import StoreMaker

DAY = 86_400.0
OLD = 40


async def _count(store: object, table: str) -> int:
    async with store.engine.connect() as conn:  # type: ignore[attr-defined]
        return int((await conn.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one())


@pytest.mark.timeout(60)
async def test_purge_cancelled_half_way_leaves_a_working_store(make_store: StoreMaker) -> None:
    store = await make_store()
    clock = ManualClock(datetime(2025, 3, 1, tzinfo=UTC))
    service = PipelineService(store, clock=clock)
    bus = InMemoryBus()
    relay = OutboxRelay(store, bus, clock)
    env = HuleEduEnvelopes()
    old = [env.register(f"old{n}", items=1) for n in range(OLD)]
    for delivery in old:
        await service.handle_message(*delivery)
    await relay.drain()
    clock.advance(31 * DAY)
    retention = Retention(published=DAY, inbox=30 * DAY)
    fresh = 0
    for stop_after in range(0, 24, 3):
        task = asyncio.create_task(purge_expired(store, retention, clock.now(), rows_per_round=2))

        async def traffic() -> None:
            nonlocal fresh
            for _ in range(2):
                await service.handle_message(*env.register(f"new{fresh}", items=1))
                fresh += 1

        work = asyncio.create_task(traffic())
        for _ in range(stop_after):
            await asyncio.sleep(0)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await asyncio.wait_for(work, 10)
        # The store still writes promptly after the cancelled purge.
        await asyncio.wait_for(service.handle_message(*env.register(f"new{fresh}", items=1)), 10)
        fresh += 1
    await relay.drain()
    # A purge to the end: every old inbox entry and published row goes, nothing recent.
    done = await asyncio.wait_for(purge_expired(store, retention, clock.now(), rows_per_round=2), 20)
    assert done.total >= 0
    assert await _count(store, "inbox") == fresh
    assert await _count(store, "batches") == OLD + fresh
    assert await _count(store, "outbox") == fresh  # the recent rows, published today
    # The old registrations, redelivered, change nothing and emit nothing.
    sent = bus.count()
    for delivery in old[:5]:
        result = await service.handle_message(*delivery)
        assert result.label.startswith("ignored"), result.label
    await relay.drain()
    assert bus.count() == sent
