"""The retention purge on the SQL stores (SQLite and PostgreSQL): what ``serve`` deletes every
``purge_seconds`` and what it must keep.

Before it, nothing ever deleted a pipeline store's inbox or transition log, and ``serve``
never purged its published outbox rows either: each whole run left ~18 rows behind for ever
(``test_growth_per_run_without_a_purge`` in ``test_sql_retention_attacks.py`` measures it).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from pipeline_state_sql import SqlStore
from sqlalchemy import text

from pipeline_state import InMemoryBus, ManualClock, OutboxRelay, PipelineService
from pipeline_state.ports import Change, InboxEntry, PurgeCutoffs, Purged, Retention, purge_expired
from pipeline_state.profiles.huleedu.events import Topic
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes
from tests.sql.retention_kit import RUNS, finished_runs, table_counts

DAY = 86_400.0
OLDEST = "SELECT event_id FROM inbox WHERE processed_at < {cutoff} ORDER BY processed_at LIMIT 5"


async def test_purge_expired_leaves_the_states_the_history_and_what_a_resend_needs(
    sql_store: SqlStore,
) -> None:
    service, relay, bus, clock, command = await finished_runs(sql_store)
    before = await table_counts(sql_store)
    clock.advance(31 * DAY)
    purged = await purge_expired(sql_store, Retention(), clock.now())
    after = await table_counts(sql_store)
    # Published rows older than seven days go but the waiting batch's two (its phase deadline
    # is pending); inbox entries older than thirty days go; the log is kept for ever.
    assert purged == Purged(outbox=before["outbox"] - 2, inbox=before["inbox"], transitions=0)
    assert (after["outbox"], after["inbox"], after["transitions"]) == (2, 0, before["transitions"])
    assert (after["batches"], after["runs"]) == (before["batches"], before["runs"]) == (RUNS + 1, RUNS)
    # The overdue phase is still re-sent, with its command's event id.
    sent = bus.count()
    [result] = await service.expire_overdue()
    assert result.decision is not None
    assert result.decision.resend == (command,)
    await relay.drain()
    assert [m.event_id for m in bus.messages(since=sent)] == [command]


async def test_a_redelivery_the_inbox_forgot_completes_nothing_twice(sql_store: SqlStore) -> None:
    """Purged, an inbox entry no longer makes a redelivery a duplicate; the state does: the
    batch's registration and the outcomes of its archived run change nothing and emit
    nothing (a client's pipeline request is the one the inbox window must cover, see
    docs/operations.md "Retention")."""
    service, relay, bus, clock, _ = await finished_runs(sql_store)
    env, batch, corr = HuleEduEnvelopes(), "late", str(uuid.uuid4())
    items = env.item_ids(batch, 1)
    first = [
        env.register(batch, items=1),
        env.provisioned(batch, items),
        env.request(batch, "nlp", correlation_id=corr),
    ]
    outcomes = [
        env.outcome(batch, "spellcheck", corr, processed=items),
        env.outcome(batch, "nlp", corr, processed=items),
    ]
    for delivery in (*first, *outcomes):
        await service.handle_message(*delivery)
        await relay.drain()
    assert len(bus.messages(Topic.PIPELINE_COMPLETED.value)) == RUNS + 1
    state = await sql_store.load(batch)
    clock.advance(31 * DAY)
    assert (await purge_expired(sql_store, Retention(), clock.now())).inbox > 0
    sent = bus.count()
    for delivery in (first[0], first[1], *outcomes):
        result = await service.handle_message(*delivery)
        assert not result.duplicate  # the inbox forgot it ...
        assert result.decision is not None
        assert not result.decision.changed  # ... the state did not
        await relay.drain()
    assert bus.count() == sent
    assert await sql_store.load(batch) == state


async def test_purge_goes_in_bounded_rounds(sql_store: SqlStore) -> None:
    _service, _relay, _bus, clock, _ = await finished_runs(sql_store)
    before = await table_counts(sql_store)
    clock.advance(31 * DAY)
    everything = Retention(published=DAY, inbox=DAY, transitions=DAY)
    one_round = await purge_expired(sql_store, everything, clock.now(), rows_per_round=50, max_rounds=1)
    assert one_round == Purged(outbox=50, inbox=50, transitions=50)
    rest = await purge_expired(sql_store, everything, clock.now(), rows_per_round=50)
    after = await table_counts(sql_store)
    assert rest == Purged(before["outbox"] - 52, before["inbox"] - 50, before["transitions"] - 50)
    assert (after["outbox"], after["inbox"], after["transitions"]) == (2, 0, 0)


async def test_inbox_purge_reads_the_oldest_through_an_index(sql_store: SqlStore) -> None:
    """The purge's inbox scan uses ``ix_inbox_processed_at`` (migration 0006), not a scan of
    the whole table, on both backends."""
    await finished_runs(sql_store)
    async with sql_store.engine.connect() as conn:
        if sql_store.engine.dialect.name == "sqlite":
            rows = await conn.execute(text("EXPLAIN QUERY PLAN " + OLDEST.format(cutoff="'9'")))
            plan = " ".join(str(r[-1]) for r in rows)
        else:
            await conn.execute(text("SET enable_seqscan = off"))
            rows = await conn.execute(text("EXPLAIN " + OLDEST.format(cutoff="now()")))
            plan = " ".join(str(r[0]) for r in rows)
    assert "ix_inbox_processed_at" in plan, plan


async def test_purge_takes_the_oldest_by_time_whatever_the_order_of_writing(sql_store: SqlStore) -> None:
    """The SQL stores order by ``processed_at`` and the log by id (its order of writing)."""
    at = datetime(2025, 1, 1, tzinfo=UTC)
    for n, seconds in enumerate((3, 1, 2, 0)):
        entry = InboxEntry(f"in-{n}", "t", "b", "applied", at + timedelta(seconds=seconds))
        await sql_store.commit(Change(f"p-{n}", None, None, entry.processed_at, inbox=entry))
    cutoffs = PurgeCutoffs(processed_before=at + timedelta(days=1))
    assert await sql_store.purge(cutoffs, limit=2) == Purged(inbox=2)
    assert [await sql_store.is_processed(f"in-{n}") for n in range(4)] == [True, False, True, False]


async def test_purge_refuses_a_limit_below_one(sql_store: SqlStore) -> None:
    with pytest.raises(ValueError, match="limit"):
        await sql_store.purge(PurgeCutoffs(), limit=0)


async def test_a_redelivery_whose_outbox_rows_outlived_its_inbox_entry_is_a_duplicate(
    sql_store: SqlStore,
) -> None:
    """Was a defect: with published outbox rows kept longer than inbox entries (kept for
    ever, say), a client's pipeline request redelivered after its inbox entry was purged was
    decided again and emitted the very event ids of its first handling: the outbox's unique
    event id refused them and the commit failed with a plain StoreError (the consumer
    retried it, then dead-lettered it). The store now answers it as the duplicate it is:
    nothing written, nothing published, alone and in a group commit."""
    clock = ManualClock()
    service = PipelineService(sql_store, clock=clock)
    bus = InMemoryBus()
    relay = OutboxRelay(sql_store, bus, clock)
    env = HuleEduEnvelopes()
    requests = {}
    for batch in ("r1", "r2"):
        corr = str(uuid.uuid4())
        items = env.item_ids(batch, 1)
        requests[batch] = env.request(batch, "nlp", correlation_id=corr)
        for delivery in (
            env.register(batch, items=1),
            env.provisioned(batch, items),
            requests[batch],
            env.outcome(batch, "spellcheck", corr, processed=items),
            env.outcome(batch, "nlp", corr, processed=items),
        ):
            await service.handle_message(*delivery)
            await relay.drain()
    states = {b: await sql_store.load(b) for b in requests}
    clock.advance(31 * DAY)
    keep_published = Retention(published=None, inbox=30 * DAY)
    assert (await purge_expired(sql_store, keep_published, clock.now())).inbox > 0
    sent = bus.count()

    alone = await service.handle_message(*requests["r1"])
    assert alone.duplicate
    other = env.register("r3", items=1)
    grouped = await service.handle_many([requests["r2"], other])
    assert [getattr(r, "duplicate", r) for r in grouped] == [True, False]
    await relay.drain()
    assert [m.key for m in bus.messages(since=sent)] == ["r3"]  # r3's registration only
    assert {b: await sql_store.load(b) for b in requests} == states
