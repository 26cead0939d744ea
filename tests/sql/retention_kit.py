"""Stores that ran many whole runs, for the retention tests: ``RUNS`` batches registered,
provisioned and run through the ``nlp`` pipeline to completion, and one batch whose
spellcheck command waits for an outcome (its phase deadline is pending)."""

from __future__ import annotations

import uuid

from pipeline_state_sql import SqlStore
from sqlalchemy import text

from pipeline_state import InMemoryBus, ManualClock, OutboxRelay, PipelineService
from pipeline_state.profiles.huleedu.events import Topic
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes

RUNS = 60


async def table_counts(store: SqlStore) -> dict[str, int]:
    out = {}
    async with store.engine.connect() as conn:
        for table in ("inbox", "transitions", "runs", "outbox", "batches", "waiting"):
            out[table] = (await conn.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one()
    return out


async def finished_runs(
    sql_store: SqlStore,
) -> tuple[PipelineService, OutboxRelay, InMemoryBus, ManualClock, str]:
    """Run the runs; returns the service, relay, bus and clock, and the waiting batch's
    command event id."""
    clock = ManualClock()
    service = PipelineService(sql_store, clock=clock)
    bus = InMemoryBus()
    relay = OutboxRelay(sql_store, bus, clock)
    sql_store.attach_relay(relay.hand_off, clock, accepting=relay.accepting)  # as serve wires it
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
