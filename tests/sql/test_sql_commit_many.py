"""``SqlStore.commit_many`` and ``PipelineService.handle_many`` on SQL: the batched unit of
work gives what handling messages one by one gives, and a failure in the middle of a batch
leaves nothing written."""

from __future__ import annotations

import random
import uuid
from typing import Any

import attrs
import pytest
from pipeline_state_sql import SqlStore, create_engine
from sqlalchemy import text

from pipeline_state import (
    HandleResult,
    InboundMessage,
    InMemoryStore,
    ManualClock,
    PipelineService,
    PipelineStateError,
)
from pipeline_state.errors import ConcurrencyConflictError, DuplicateEventError, StoreError
from pipeline_state.ports import BatchingStore, Change, InboxEntry
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes
from pipeline_state.testing import T0, make_state, message, with_deadline
from pipeline_state.testing.contract import archived_run

PHASES = ("spellcheck", "nlp", "cj_assessment", "ai_feedback")


def traffic(rng: random.Random, batches: int) -> list[InboundMessage]:
    """Each batch registered, provisioned, then requests and outcomes of random phases,
    interleaved, with redeliveries and an invalid message now and then."""
    env = HuleEduEnvelopes()
    stories: list[list[InboundMessage]] = []
    for n in range(batches):
        ids = env.item_ids(f"b{n}", 2)
        story: list[InboundMessage] = [env.register(f"b{n}", items=2), env.provisioned(f"b{n}", ids)]
        for _ in range(2):
            corr = str(uuid.UUID(int=rng.getrandbits(128)))
            story.append(
                env.request(f"b{n}", rng.choice(["nlp", "ai_feedback", "comprehensive"]), correlation_id=corr)
            )
            story += [env.outcome(f"b{n}", p, corr, processed=ids) for p in rng.sample(PHASES, 3)]
        stories.append(story)
    out: list[InboundMessage] = []
    while any(stories):
        out.append(rng.choice([s for s in stories if s]).pop(0))
        if rng.random() < 0.1:
            out.append(rng.choice(out))
        if rng.random() < 0.04:
            out.append(("no.such.topic", b"{}"))
    return out


def comparable(result: HandleResult | PipelineStateError) -> Any:
    return (type(result), str(result)) if isinstance(result, PipelineStateError) else result


async def test_handle_many_equals_one_by_one(sql_store: SqlStore) -> None:
    rng = random.Random(4)
    messages = traffic(rng, batches=3)
    batched = PipelineService(sql_store, clock=ManualClock())
    reference = InMemoryStore()
    sequential = PipelineService(reference, clock=ManualClock())

    got: list[HandleResult | PipelineStateError] = []
    start = 0
    while start < len(messages):
        size = rng.choice([1, 5, 20])
        got += await batched.handle_many(messages[start : start + size])
        start += size
    expected: list[HandleResult | PipelineStateError] = []
    for topic, raw in messages:
        try:
            expected.append(await sequential.handle_message(topic, raw))
        except PipelineStateError as exc:
            expected.append(exc)

    assert [comparable(r) for r in got] == [comparable(r) for r in expected]
    assert any(isinstance(r, HandleResult) and r.duplicate for r in got)
    for batch_id in ("b0", "b1", "b2"):
        assert await sql_store.load(batch_id) == await reference.load(batch_id)
        assert await sql_store.transitions(batch_id) == reference.transitions(batch_id)
        assert await sql_store.history(batch_id) == await reference.history(batch_id)
    for _, raw in messages:
        if isinstance(raw, dict):
            assert await sql_store.inbox_entry(raw["event_id"]) == await reference.inbox_entry(
                raw["event_id"]
            )
    assert await sql_store.pending_count() == await reference.pending_count() > 0


async def test_chained_changes_archive_each_run_once(sql_store: SqlStore) -> None:
    v1 = with_deadline(make_state("b1"), None)
    first = archived_run("b1")
    second = attrs.evolve(first, run_id="b1-run-9")
    v2 = attrs.evolve(v1, version=2, past=v1.past.after(second))
    v3 = attrs.evolve(v2, version=3, active_run=None)
    await sql_store.commit_many(
        [
            Change("b1", None, v1, T0, archived=(first,)),
            Change("b1", 1, v2, T0, archived=(second,)),
            Change("b1", 2, v3, T0),
        ]
    )
    assert await sql_store.load("b1") == v3
    assert [r.run_id for r in await sql_store.history("b1")] == ["b1-run-0", "b1-run-9"]


def _entry(event_id: str, batch_id: str) -> InboxEntry:
    return InboxEntry(event_id, "t", batch_id, "applied", T0)


async def test_failure_in_the_middle_writes_nothing(sqlite_url: str, sqlite_store: SqlStore) -> None:
    # A real database failure raised by the second change's outbox insert.
    engine = create_engine(sqlite_url)
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "CREATE TRIGGER boom BEFORE INSERT ON outbox WHEN NEW.event_id = 'poison' "
                "BEGIN SELECT RAISE(ABORT, 'injected failure'); END"
            )
        )
    await engine.dispose()
    assert isinstance(sqlite_store, BatchingStore)
    changes = [
        Change("b1", None, make_state("b1"), T0, outbox=(message("m1", "b1"),), inbox=_entry("in-1", "b1")),
        Change(
            "b2", None, make_state("b2"), T0, outbox=(message("poison", "b2"),), inbox=_entry("in-2", "b2")
        ),
        Change("b3", None, make_state("b3"), T0, inbox=_entry("in-3", "b3")),
    ]
    with pytest.raises(StoreError, match="injected failure"):
        await sqlite_store.commit_many(changes)
    for n in (1, 2, 3):
        assert await sqlite_store.load(f"b{n}") is None
        assert not await sqlite_store.is_processed(f"in-{n}")
    assert await sqlite_store.pending_count() == 0
    # The store goes on working: the same batch without the poison commits whole.
    changes[1] = attrs.evolve(changes[1], outbox=(message("m2", "b2"),))
    await sqlite_store.commit_many(changes)
    assert [await sqlite_store.is_processed(f"in-{n}") for n in (1, 2, 3)] == [True, True, True]
    assert await sqlite_store.pending_count() == 2


async def test_errors_found_by_the_database_are_those_of_one_by_one(sql_store: SqlStore) -> None:
    """Sequences whose chains are consistent but which the database refuses (on PostgreSQL,
    one statement for all: the counts it returns tell which error ``commit`` one change
    after another would have raised first); nothing is written either way."""
    b1, b2 = make_state("b1"), make_state("b2")
    await sql_store.commit(Change("b1", None, b1, T0, inbox=InboxEntry("seen", "t", "b1", "applied", T0)))
    await sql_store.commit(Change("b2", None, b2, T0))
    before = (await sql_store.load("b1"), await sql_store.load("b2"), await sql_store.pending_count())

    def change(batch_id: str, expected: int | None, version: int, event_id: str) -> Change:
        state = attrs.evolve(b1 if batch_id == "b1" else make_state(batch_id), version=version)
        outbox = (message(f"m-{event_id}", batch_id),)
        return Change(
            batch_id,
            expected,
            state,
            T0,
            outbox=outbox,
            inbox=InboxEntry(event_id, "t", batch_id, "applied", T0),
        )

    # b2 is at version 1, not 5: a conflict on b2, after b1's change went through.
    with pytest.raises(ConcurrencyConflictError) as conflict:
        await sql_store.commit_many([change("b1", 1, 2, "e1"), change("b2", 5, 6, "e2")])
    assert (conflict.value.batch_id, conflict.value.expected, conflict.value.actual) == ("b2", 5, 1)
    # The same, but b1's event was processed: that duplicate comes first.
    with pytest.raises(DuplicateEventError) as duplicate:
        await sql_store.commit_many([change("b1", 1, 2, "seen"), change("b2", 5, 6, "e2")])
    assert duplicate.value.event_id == "seen"
    # Every compare-and-set holds, but the second change's event was processed.
    with pytest.raises(DuplicateEventError) as later:
        await sql_store.commit_many([change("b2", 1, 2, "e2"), change("b1", 1, 2, "seen")])
    assert later.value.event_id == "seen"
    # A batch inserted that exists already.
    with pytest.raises(ConcurrencyConflictError) as exists:
        await sql_store.commit_many([change("b3", None, 1, "e3"), change("b2", None, 1, "e4")])
    assert (exists.value.batch_id, exists.value.expected, exists.value.actual) == ("b2", None, 1)
    assert (await sql_store.load("b1"), await sql_store.load("b2"), await sql_store.pending_count()) == before
    assert await sql_store.load("b3") is None
    for event_id in ("e1", "e2", "e3", "e4"):
        assert not await sql_store.is_processed(event_id)
    # And the same sequence, once it is right, goes through whole.
    await sql_store.commit_many(
        [change("b3", None, 1, "e3"), change("b1", 1, 2, "e1"), change("b3", 1, 2, "e5")]
    )
    assert (await sql_store.load("b3")).version == 2  # type: ignore[union-attr]
    rows = await sql_store.outbox_rows(["m-e5", "m-e1", "m-e3"])
    assert [r.message.event_id for r in sorted(rows, key=lambda r: r.id)] == ["m-e3", "m-e1", "m-e5"]
