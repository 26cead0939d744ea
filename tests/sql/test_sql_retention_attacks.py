"""Found by an attack on the SQL stores: what a long-running service accumulates and whether
``purge_published`` (the one documented purge of the pipeline's tables) deletes something
still needed. Every test here held (passes); the figures are in the report.

Held:
* ``test_held_purge_keeps_what_an_overdue_resend_needs``: many runs, their published rows
  purged, one batch's phase overdue: its re-send still reaches the bus (both backends, the
  PostgreSQL one-statement unit of work included), and the relay with hand-off keeps no
  per-row bookkeeping afterwards.
* ``test_held_growth_per_run_without_a_purge``: measured growth of the tables no purge
  touches (inbox, transition log, runs), per run, next to the outbox that purge empties.
"""

from __future__ import annotations

import uuid

from pipeline_state_sql import SqlStore
from sqlalchemy import text

from pipeline_state import InMemoryBus, ManualClock, OutboxRelay, PipelineService
from pipeline_state.profiles.huleedu.events import Topic
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes

RUNS = 60


async def _counts(store: SqlStore) -> dict[str, int]:
    out = {}
    async with store.engine.connect() as conn:
        for table in ("inbox", "transitions", "runs", "outbox", "batches", "waiting"):
            out[table] = (await conn.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one()
    return out


async def _runs(sql_store: SqlStore) -> tuple[PipelineService, OutboxRelay, InMemoryBus, ManualClock, str]:
    clock = ManualClock()
    service = PipelineService(sql_store, clock=clock)
    bus = InMemoryBus()
    relay = OutboxRelay(sql_store, bus, clock)
    sql_store.attach_relay(relay.hand_off, clock)  # as serve wires it
    env = HuleEduEnvelopes()

    async def deliver(delivery: tuple[str, dict]) -> None:
        await service.handle_message(*delivery)
        await relay.drain()

    ids = env.item_ids("waiting", 1)
    for delivery in (
        env.register("waiting", items=1),
        env.provisioned("waiting", ids),
        env.request("waiting", "nlp"),
    ):
        await deliver(delivery)
    [command] = bus.messages(Topic.SPELLCHECK.value)
    for n in range(RUNS):
        b = f"b{n}"
        items = env.item_ids(b, 1)
        corr = str(uuid.uuid4())
        for delivery in (
            env.register(b, items=1),
            env.provisioned(b, items),
            env.request(b, "nlp", correlation_id=corr),
            env.outcome(b, "spellcheck", corr, processed=items),
            env.outcome(b, "nlp", corr, processed=items),
        ):
            await deliver(delivery)
    return service, relay, bus, clock, command.event_id


async def test_purge_keeps_what_an_overdue_resend_needs(sql_store: SqlStore) -> None:
    """Held: ``purge_published`` deletes the finished batches' published rows and keeps the
    overdue batch's command, whose re-send reaches the bus with its event id."""
    service, relay, bus, clock, command = await _runs(sql_store)
    clock.advance(1)
    purged = await sql_store.purge_published(clock.now())
    assert purged >= RUNS * 6  # the finished runs (6 rows each) and rows keyed by the teacher
    before = bus.count()
    clock.advance(3600)
    [result] = await service.expire_overdue()
    assert result.decision is not None
    assert result.decision.resend == (command,)
    await relay.drain()
    assert [m.event_id for m in bus.messages(since=before)] == [command]
    assert (len(relay._queues), relay.handed, len(relay._held), relay.unmarked) == (0, 0, 0, 0)


async def test_growth_per_run_without_a_purge(sql_store: SqlStore) -> None:
    """Held (a measurement): after ``RUNS`` whole runs and ``purge_published``, the outbox
    keeps only the waiting batch's rows, while the inbox (5 rows a run), the transition log
    and the runs table (1 row a run) keep everything: no purge, retention setting or
    command exists for them (the docs give rows per event, docs/operations.md "Capacity",
    and nothing about removing them)."""
    _service, _relay, _bus, clock, _command = await _runs(sql_store)
    clock.advance(1)
    await sql_store.purge_published(clock.now())
    counts = await _counts(sql_store)
    assert counts["outbox"] == 2  # the waiting batch's registration and command
    assert counts["inbox"] == 5 * RUNS + 3
    assert counts["runs"] == RUNS
    assert counts["transitions"] >= 8 * RUNS, counts
    print("rows after purge:", counts)
