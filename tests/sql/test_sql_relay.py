"""The outbox relay on the SQL store: several relays, failures, leases and late commits."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import pytest
from pipeline_state_sql import SqlStore
from pipeline_state_sql.schema import OUTBOX
from sqlalchemy import insert

from pipeline_state import InMemoryBus, ManualClock, OutboxRelay
from pipeline_state.errors import PublishError
from pipeline_state.ports import Change, OutboxMessage
from pipeline_state.testing import T0, message


class RecordingPublisher:
    """A transport that records what it published, yields between messages so concurrent
    relays interleave, and fails every message of the topics in ``failing``."""

    def __init__(self, failing: Sequence[str] = ()) -> None:
        self.published: list[OutboxMessage] = []
        self.failing = set(failing)

    async def publish(self, messages: Sequence[OutboxMessage]) -> Sequence[BaseException | None]:
        results: list[BaseException | None] = []
        for m in messages:
            await asyncio.sleep(0)
            if m.topic in self.failing:
                results.append(PublishError(f"broker rejected {m.topic}"))
                continue
            self.published.append(m)
            results.append(None)
        return results


async def enqueue(store: SqlStore, messages: Sequence[OutboxMessage], *, tag: str) -> None:
    await store.commit(Change(f"relay-{tag}", None, None, T0, outbox=tuple(messages)))


async def test_concurrent_relays_never_double_publish_and_keep_key_order(make_store: Any) -> None:
    stores = [await make_store() for _ in range(3)]
    rng = random.Random(7)
    sent: list[OutboxMessage] = []
    for i in range(40):
        batch = [message(f"m{i}-{j}", f"k{rng.randrange(8)}") for j in range(3)]
        sent.extend(batch)
        await enqueue(stores[i % 3], batch, tag=str(i))
    publisher = RecordingPublisher()
    clock = ManualClock(T0)

    async def relay_loop(store: SqlStore) -> None:
        relay = OutboxRelay(store, publisher, clock, batch_size=7)
        for _ in range(400):
            if await store.pending_count() == 0:
                return
            await relay.run_once()
            await asyncio.sleep(0)

    await asyncio.gather(*(relay_loop(s) for s in stores))
    ids = [m.event_id for m in publisher.published]
    assert sorted(ids) == sorted(m.event_id for m in sent)  # every row exactly once
    for key in {m.key for m in sent}:
        assert [m.event_id for m in publisher.published if m.key == key] == [
            m.event_id for m in sent if m.key == key
        ]
    assert publisher.published == [next(s for s in sent if s.event_id == i) for i in ids]  # unchanged


async def test_failing_rows_back_off_then_park_with_their_error(sql_store: SqlStore) -> None:
    await enqueue(
        sql_store, [message("p1", "k", "poison"), message("k2", "k"), message("o1", "other")], tag="1"
    )
    publisher = RecordingPublisher(failing=["poison"])
    clock = ManualClock(T0)
    relay = OutboxRelay(sql_store, publisher, clock, max_attempts=3, base_backoff=10)
    first = await relay.run_once()
    assert (first.published, first.failed, first.parked) == (1, 1, 0)
    assert [m.event_id for m in publisher.published] == ["o1"]
    # Backing off: p1 is not due yet and holds k2 (same key) back.
    clock.advance(9)
    assert (await relay.run_once()).idle
    clock.advance(1)
    assert (await relay.run_once()).failed == 1  # attempt 2; the next backoff is 20 s
    clock.advance(19)
    assert (await relay.run_once()).idle
    clock.advance(1)
    third = await relay.run_once()
    assert (third.failed, third.parked) == (1, 1)
    (parked,) = await sql_store.parked()
    assert parked.message == message("p1", "k", "poison")
    assert (parked.attempts, parked.parked) == (3, True)
    assert parked.last_error == "PublishError: broker rejected poison"
    # Parked rows no longer hold their key: k2 goes out.
    await relay.drain()
    assert [m.event_id for m in publisher.published] == ["o1", "k2"]
    assert await sql_store.pending_count() == 0


async def test_expired_lease_hands_rows_to_another_relay(make_store: Any) -> None:
    crashed, survivor = await make_store(), await make_store()
    await enqueue(crashed, [message("m1", "a"), message("m2", "b")], tag="1")
    claimed = await crashed.claim(T0)  # ...and the relay dies before publishing
    assert len(claimed) == 2
    assert await survivor.claim(T0 + timedelta(seconds=29)) == []
    retaken = await survivor.claim(T0 + timedelta(seconds=30))
    assert [r.message for r in retaken] == [r.message for r in claimed]  # same event ids
    await survivor.mark_published([r.id for r in retaken], T0 + timedelta(seconds=30))
    await crashed.mark_published([r.id for r in claimed], T0 + timedelta(seconds=40))  # harmless
    assert await survivor.pending_count() == 0
    assert await survivor.claim(T0 + timedelta(days=1)) == []


@pytest.mark.postgres
async def test_row_committed_late_is_not_skipped_on_postgres(pg_store: SqlStore) -> None:
    bus = InMemoryBus()
    relay = OutboxRelay(pg_store, bus, ManualClock(T0))
    async with pg_store.engine.connect() as slow:
        transaction = await slow.begin()
        late = message("late", "k-late")
        await slow.execute(
            insert(OUTBOX).values(
                event_id=late.event_id,
                topic=late.topic,
                key=late.key,
                envelope=dict(late.value),
                created_at=T0,
                available_at=T0,
            )
        )  # takes the lower id, commits later
        await enqueue(pg_store, [message("early", "k-early")], tag="early")
        assert (await relay.drain()).published == 1
        assert [m.event_id for m in bus.messages()] == ["early"]
        await transaction.commit()
    assert (await relay.drain()).published == 1
    assert [m.event_id for m in bus.messages()] == ["early", "late"]
    async with pg_store.engine.connect() as conn:
        ids = (await conn.execute(OUTBOX.select().order_by(OUTBOX.c.id))).all()
    assert [r.event_id for r in ids] == ["late", "early"]  # the late row has the lower id
