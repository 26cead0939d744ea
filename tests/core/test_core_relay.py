"""The outbox relay: same event ids, order per key, retries with backoff, parking."""

from __future__ import annotations

from core_flow import Flow, new_id

from pipeline_state import InMemoryBus, InMemoryStore, ManualClock, OutboxRelay
from pipeline_state.ports import Change, OutboxMessage


def _message(key: str, n: int) -> OutboxMessage:
    event_id = new_id()
    return OutboxMessage(event_id, "test.topic", key, {"event_id": event_id, "data": {"key": key, "n": n}})


async def _write(store: InMemoryStore, clock: ManualClock, *messages: OutboxMessage) -> None:
    """Append outbox rows through a unit of work that changes no state."""
    await store.commit(
        Change(batch_id=new_id(), expected_version=None, state=None, at=clock.now(), outbox=messages)
    )


def _sent(bus: InMemoryBus) -> list[tuple[str | None, int]]:
    return [(m.key, m.value["data"]["n"]) for m in bus.messages()]


async def test_relay_keeps_event_ids_and_marks_rows_published() -> None:
    store, bus, clock = InMemoryStore(), InMemoryBus(), ManualClock()
    relay = OutboxRelay(store, bus, clock)
    messages = [_message("k1", 1), _message("k2", 1), _message("k1", 2)]
    await _write(store, clock, *messages)
    assert await store.pending_count() == 3

    report = await relay.drain()

    assert report.published == 3
    assert [m.event_id for m in bus.messages()] == [m.event_id for m in messages]
    assert [m.value for m in bus.messages()] == [m.value for m in messages]
    assert await store.pending_count() == 0
    assert (await relay.run_once()).idle


async def test_failed_row_is_retried_with_backoff_and_later_rows_of_its_key_wait() -> None:
    store, bus, clock = InMemoryStore(), InMemoryBus(), ManualClock()
    relay = OutboxRelay(store, bus, clock, base_backoff=1.0, max_attempts=10)
    await _write(store, clock, _message("k1", 1))
    bus.available = False

    report = await relay.run_once()
    assert (report.published, report.failed, report.parked) == (0, 1, 0)

    bus.available = True
    await _write(store, clock, _message("k1", 2), _message("k2", 1))
    await relay.drain()
    # k1's first row waits for its backoff, and k1's second row waits behind it; k2 goes.
    assert _sent(bus) == [("k2", 1)]
    clock.advance(0.9)
    await relay.drain()
    assert _sent(bus) == [("k2", 1)]

    clock.advance(0.1)
    await relay.drain()

    assert _sent(bus) == [("k2", 1), ("k1", 1), ("k1", 2)]
    assert await store.pending_count() == 0


def test_backoff_grows_exponentially_up_to_a_cap() -> None:
    relay = OutboxRelay(InMemoryStore(), InMemoryBus(), ManualClock(), base_backoff=0.5, max_backoff=3.0)

    assert [relay.backoff(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]


async def test_row_that_keeps_failing_is_parked_with_its_last_error() -> None:
    store, bus, clock = InMemoryStore(), InMemoryBus(), ManualClock()
    relay = OutboxRelay(store, bus, clock, base_backoff=1.0, max_attempts=3)
    message = _message("k1", 1)
    await _write(store, clock, message)
    bus.available = False

    reports = []
    for _ in range(3):
        reports.append(await relay.run_once())
        clock.advance(60)

    assert [(r.failed, r.parked) for r in reports] == [(1, 0), (1, 0), (1, 1)]
    assert await store.pending_count() == 0
    [parked] = await store.parked()
    assert parked.message.event_id == message.event_id
    assert parked.attempts == 3
    assert parked.parked
    assert parked.last_error is not None
    assert "PublishError" in parked.last_error
    bus.available = True
    assert (await relay.drain()).published == 0
    assert bus.messages() == []


async def test_runtime_messages_survive_a_bus_outage_with_their_event_ids(flow: Flow) -> None:
    await flow.ready("b1")
    flow.rt.bus.clear()
    flow.rt.bus.available = False

    out = await flow.request("b1", "nlp")

    assert out != []
    assert flow.rt.bus.messages() == []
    assert await flow.rt.store.pending_count() == len(out)
    flow.rt.bus.available = True
    flow.rt.clock.advance(60)
    await flow.rt.relay.drain()
    assert [m.event_id for m in flow.rt.bus.messages()] == [m["value"]["event_id"] for m in out]
    assert await flow.rt.store.pending_count() == 0
