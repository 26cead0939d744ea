"""The retention purge and outbox rows that were never published (parked after
failed publications, or pending under a relay's lease), on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from pipeline_state import InMemoryBus, ManualClock, OutboxRelay, PipelineService
from pipeline_state._commands import RepublishOutbox
from pipeline_state.ports import Retention, purge_expired
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes

DAY = 86_400.0


async def test_purge_never_deletes_parked_or_pending_rows_and_a_republish_still_delivers(
    make_store: Any,
) -> None:
    """Two registrations; one row is parked (failed publications), the other is claimed by a
    relay that never comes back (pending, leased). A year later, a purge with the shortest
    periods deletes the inbox and log rows but neither outbox row; an operator's republish of
    the parked row then delivers it with its own event id, and the leased row is published
    once its lease ran out."""
    store = await make_store()
    clock = ManualClock()
    service = PipelineService(store, clock=clock)
    env = HuleEduEnvelopes()
    for batch in ("p1", "p2"):
        await service.handle_message(*env.register(batch, items=1))
    rows = await store.claim(clock.now(), limit=10)
    assert {r.message.key for r in rows} >= {"p1", "p2"}
    parked = next(r for r in rows if r.message.key == "p1")
    await store.mark_failed(parked.id, "broker down", clock.now(), retry_at=clock.now(), park=True)
    pending_before = await store.pending_count()
    assert pending_before >= 1  # p2's row: leased, never marked

    clock.advance(365 * DAY)
    purged = await purge_expired(store, Retention(published=1, inbox=1, transitions=1), clock.now())
    assert purged.outbox == 0
    assert purged.inbox >= 2
    assert purged.transitions >= 2
    assert [r.message.event_id for r in await store.parked()] == [parked.message.event_id]
    assert await store.pending_count() == pending_before

    await service.execute(RepublishOutbox("p1", (parked.message.event_id,)))
    bus = InMemoryBus()
    relay = OutboxRelay(store, bus, clock)
    clock.advance(timedelta(minutes=5).total_seconds())
    await relay.drain()
    sent = [m.event_id for m in bus.messages()]
    assert parked.message.event_id in sent
    assert len(sent) == len(set(sent))
    assert {m.key for m in bus.messages()} >= {"p1", "p2"}
    assert await store.parked() == []
    assert await store.pending_count() == 0
