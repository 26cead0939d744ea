"""Statements and round trips per unit of work, counted on real SQLite and PostgreSQL.

An outcome event handled by ``PipelineService.handle_message`` on the SQL store is

* on PostgreSQL, two statements and two round trips: one read (the inbox check, the batch
  and whether facts of it wait) and one statement writing the compare-and-set, the inbox,
  outbox, log and archived rows, sent in autocommit: it is its own transaction
  (:mod:`pipeline_state_sql.one_statement`); before, six statements and eight round trips,
  then two statements and four (between ``BEGIN`` and ``COMMIT``);
* on SQLite, the same read, then the compare-and-set and the inbox row, each a hop to
  aiosqlite's thread, and the other rows sent with the ``COMMIT``: four hops; before, five
  or six.

Round trips are counted where they happen: on the wire to PostgreSQL (a counting proxy on
loopback), as hops to aiosqlite's worker thread on SQLite. Counts, never timings.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Callable
from datetime import timedelta

import attrs
import pytest
from pipeline_state_sql import SqlStore, open_store

from bench._roundtrips import Statements, thread_hops, wire_turns
from pipeline_state import PipelineService
from pipeline_state.errors import ConcurrencyConflictError, DuplicateEventError
from pipeline_state.ports import Change, InboxEntry
from pipeline_state.testing import Envelopes
from pipeline_state.testing.contract import T0, make_state, message

from .conftest import Database

PHASES = ("spellcheck", "nlp", "cj_assessment", "ai_feedback")
CORR = "9b0c4d8e-1111-4222-8333-444455556666"


@attrs.define
class Counting:
    store: SqlStore
    statements: Statements
    turns: Callable[[], int]

    def take(self) -> tuple[Counter[str], int]:
        return self.statements.take(), self.turns()


@pytest.fixture
async def counting(database: Database, backend: str) -> AsyncIterator[Counting]:
    if backend == "sqlite":
        store = await open_store(database.url)
        with thread_hops() as hops:
            yield Counting(store, Statements(store.engine), hops.take)
        await store.close()
        return
    async with wire_turns(database.url) as proxy:
        store = await open_store(proxy.url(database.url), schema=database.schema)
        yield Counting(store, Statements(store.engine), proxy.take)
        await store.close()


async def _running(service: PipelineService, env: Envelopes, batch_id: str, correlation_id: str) -> None:
    essays = env.item_ids(batch_id, 3)
    await service.handle_message(*env.register(batch_id, items=3))
    await service.handle_message(*env.provisioned(batch_id, essays))
    await service.handle_message(*env.request(batch_id, "comprehensive", correlation_id=correlation_id))


async def test_an_outcome_is_one_read_and_one_write(counting: Counting, backend: str) -> None:
    service, env = PipelineService(counting.store), Envelopes()
    # A first run warms the connections up (PostgreSQL prepares each statement once per
    # connection); the second is counted, outcome by outcome.
    for batch_id, correlation_id in (("warm", "c0000000-0000-4000-8000-000000000000"), ("b1", CORR)):
        await _running(service, env, batch_id, correlation_id)
        for phase in PHASES:
            counting.take()
            outcome = env.outcome(batch_id, phase, correlation_id, processed=env.item_ids(batch_id, 3))
            result = await service.handle_message(*outcome)
            assert result.decision is not None
            assert not result.duplicate
            statements, trips = counting.take()
            if batch_id == "warm":
                continue
            assert statements["SELECT"] == 1, (phase, statements)
            if backend == "postgres":
                # The read; the one statement, its own transaction: no BEGIN, no COMMIT.
                assert statements == Counter(SELECT=1, WITH=1), (phase, statements)
                assert trips == 2, (phase, trips)
            else:
                assert statements["COMMIT"] == 1, (phase, statements)
                # The compare-and-set, the inbox row, the log, outbox and runs rows.
                assert statements["UPDATE"] == 1, (phase, statements)
                assert statements["INSERT"] >= 2, (phase, statements)
                # The read; the UPDATE, the inbox INSERT, the rest with the COMMIT.
                assert trips == 4, (phase, trips)


async def test_a_duplicate_is_one_read(counting: Counting) -> None:
    service, env = PipelineService(counting.store), Envelopes()
    await _running(service, env, "b1", CORR)
    outcome = env.outcome("b1", "spellcheck", CORR, processed=env.item_ids("b1", 3))
    await service.handle_message(*outcome)
    counting.take()
    again = await service.handle_message(*outcome)
    assert again.duplicate
    statements, trips = counting.take()
    assert statements == Counter(SELECT=1)
    assert trips == 1


async def test_handle_many_reads_once_and_writes_once(counting: Counting, backend: str) -> None:
    """A partition fetch's worth of outcomes: one read for all of them; on PostgreSQL one
    statement writes them all (two changes of each batch: one compare-and-set per batch)."""
    service, env = PipelineService(counting.store), Envelopes()
    for tag in ("warm", "b"):  # the first call prepares the statements (PostgreSQL)
        batches = [(f"{tag}{i}", f"c{i:07d}-0000-4000-8000-00000000000{len(tag)}") for i in range(4)]
        for batch_id, correlation_id in batches:
            await _running(service, env, batch_id, correlation_id)
        counting.take()
        outcomes = [
            env.outcome(b, phase, c, processed=env.item_ids(b, 3))
            for b, c in batches
            for phase in ("spellcheck", "nlp")
        ]
        results = await service.handle_many(outcomes)
        for result in results:
            assert not isinstance(result, Exception)
            assert result.decision is not None
        statements, trips = counting.take()
        # One read for all (the inbox checks and the batches), one transaction.
        assert statements["SELECT"] == 1
        if tag == "warm":
            continue
        if backend == "postgres":
            assert statements == Counter(SELECT=1, WITH=1)
            assert trips == 2  # the read; the statement, in autocommit
        else:  # the compare-and-sets of all batches (and the inbox check) in one UPDATE
            assert statements["COMMIT"] == 1
            assert statements["UPDATE"] == 1
            assert trips == 3  # the read, the UPDATE, COMMIT (the inbox, outbox, log rows with it)


async def test_outbox_ids_follow_change_order_and_a_duplicate_writes_nothing(sql_store: SqlStore) -> None:
    """The one-statement write keeps the order of a change's outbox rows, and a duplicate
    event (whose outbox event ids repeat) is a duplicate, not a unique-key failure."""
    state = make_state("b1")
    outbox = tuple(message(f"m{n}", "b1") for n in (3, 1, 2, 5, 4))
    inbox = InboxEntry("in-1", "t", "b1", "applied", T0)
    await sql_store.commit(Change("b1", None, state, T0, outbox=outbox, inbox=inbox))
    rows = await sql_store.outbox_rows([m.event_id for m in outbox])
    assert sorted(rows, key=lambda r: r.id) == rows
    assert [r.message.event_id for r in rows] == [m.event_id for m in outbox]
    again = Change("b1", 1, attrs.evolve(state, version=2), T0, outbox=outbox, inbox=inbox)
    with pytest.raises(DuplicateEventError):
        await sql_store.commit(again)
    assert (await sql_store.load("b1")) == state
    assert len(await sql_store.outbox_rows([m.event_id for m in outbox])) == len(outbox)


async def test_load_for_event_answers_both_reads(sql_store: SqlStore) -> None:
    assert await sql_store.load_for_event("b1", "e1") == (False, None, False)
    state = make_state("b1")
    await sql_store.commit(Change("b1", None, state, T0, inbox=InboxEntry("e1", "t", "b1", "applied", T0)))
    assert await sql_store.load_for_event("b1", "e1") == (True, None, False)
    assert await sql_store.load_for_event("b1", "e2") == (False, state, False)


async def test_load_for_events_answers_every_read_of_a_fetch(sql_store: SqlStore) -> None:
    assert await sql_store.load_for_events([]) == (frozenset(), {})
    b1, b2 = make_state("b1"), make_state("b2")
    await sql_store.commit(Change("b1", None, b1, T0, inbox=InboxEntry("e1", "t", "b1", "applied", T0)))
    await sql_store.commit(Change("b2", None, b2, T0, inbox=InboxEntry("e2", "t", "b2", "applied", T0)))
    pairs = [("b1", "e1"), ("b2", "e2"), ("b2", "e3"), ("b3", "e4"), ("b1", "e1")]
    processed, read = await sql_store.load_for_events(pairs)
    assert processed == {"e1", "e2"}
    # b1's only event was processed: it is not read; b3 is not stored.
    assert read == {"b2": (b2, False), "b3": (None, False)}


@pytest.mark.postgres
def test_the_statements_bench_prints_both_databases(
    postgres_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``bench/statements.py`` runs end to end (its counts are asserted above, not here)."""
    from bench import statements

    assert statements.main(["--runs", "2", "--postgres", postgres_url]) == 0
    lines = capsys.readouterr().out.splitlines()
    for database in ("sqlite", "postgresql"):
        for way in ("handle_message", "handle_many"):
            assert any(line.split()[:2] == [database, way] and "round trips" in line for line in lines), lines


async def test_a_refused_write_writes_nothing_and_the_transaction_tells_why(
    counting: Counting, backend: str
) -> None:
    """On PostgreSQL the one statement is sent alone (autocommit) and aborts itself when it
    cannot apply as decided: nothing of it is written, and the same write in a transaction
    raises the error the store always raised. SQLite writes in a transaction from the start."""
    store = counting.store
    state = make_state("b1")
    await store.commit(Change("b1", None, state, T0, inbox=InboxEntry("in-1", "t", "b1", "applied", T0)))
    outbox = (message("m1", "b1"), message("m2", "b1"))

    def change(expected: int, event_id: str) -> Change:
        new = attrs.evolve(state, version=expected + 1)
        return Change(
            "b1", expected, new, T0, outbox=outbox, inbox=InboxEntry(event_id, "t", "b1", "applied", T0)
        )

    stale, repeated = change(5, "in-2"), change(1, "in-1")
    for refused, error in ((stale, ConcurrencyConflictError), (repeated, DuplicateEventError)):
        counting.take()
        with pytest.raises(error):
            await store.commit(refused)
        statements, _ = counting.take()
        if backend == "postgres":
            # Sent alone and refused, then in a transaction (which reads the stored version
            # for a conflict's message).
            assert statements["WITH"] == 2, statements
        assert await store.load("b1") == state
        assert not await store.is_processed("in-2")
        assert await store.outbox_rows(["m1", "m2"]) == []
    # The lane's connection is still good: the next write goes through, alone on PostgreSQL.
    counting.take()
    await store.commit(attrs.evolve(repeated, inbox=InboxEntry("in-3", "t", "b1", "applied", T0)))
    statements, trips = counting.take()
    assert (await store.load("b1")).version == 2  # type: ignore[union-attr]
    if backend == "postgres":
        assert (statements, trips) == (Counter(WITH=1), 1)


async def test_the_relays_claim_and_mark_are_one_round_trip_each_on_postgres(
    counting: Counting, backend: str
) -> None:
    """Each outbox operation of the relay is one statement; on PostgreSQL it is sent alone,
    in autocommit (no ``BEGIN``, no ``COMMIT``)."""
    store = counting.store
    outbox = tuple(message(f"m{n}", f"key-{n}") for n in range(3))  # no key holds another back
    await store.commit(Change("b1", None, make_state("b1"), T0, outbox=outbox))
    # Prepares the statements (PostgreSQL prepares a statement text once per connection; an
    # IN list of three ids is a text of its own).
    await store.claim(T0)
    await store.mark_published([-1, -2, -3], T0)
    await store.mark_failed((await store.outbox_rows(["m0"]))[0].id, "boom", T0, retry_at=T0, park=False)
    counting.take()
    claimed = await store.claim(T0 + timedelta(minutes=5))
    claim_trips = counting.take()[1]
    await store.mark_published([row.id for row in claimed], T0 + timedelta(minutes=5))
    mark_trips = counting.take()[1]
    assert [row.message.event_id for row in claimed] == ["m0", "m1", "m2"]
    assert await store.pending_count() == 0
    if backend == "postgres":
        assert (claim_trips, mark_trips) == (1, 1)
