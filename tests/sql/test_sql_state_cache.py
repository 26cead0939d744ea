"""SQL stores: the state cache (reads of what this store wrote are not decoded again, a row
written elsewhere or by hand is read as stored; SQLite by the stored text, PostgreSQL by the
row's ``xmin``) and the compare-and-sets of a ``commit_many`` in one
``UPDATE`` (in chunks under SQLite's parameter limit, with the errors of one by one)."""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest
from pipeline_state_sql import SqlStore, open_store, sqlite_many
from pipeline_state_sql.codec import state_text
from pipeline_state_sql.state_cache import StateCache
from sqlalchemy import text

from pipeline_state.errors import ConcurrencyConflictError, CorruptStateError
from pipeline_state.ports import Change, InboxEntry
from pipeline_state.testing import T0, make_state, message
from pipeline_state.testing.contract import archived_run

from .conftest import StoreMaker


def _inbox(event_id: str, batch_id: str) -> InboxEntry:
    return InboxEntry(event_id, "t", batch_id, "applied", T0)


async def test_the_state_committed_is_read_back_as_it_was(sql_store: SqlStore) -> None:
    state = make_state("b1")
    await sql_store.commit(Change("b1", None, state, T0))
    newer = attrs.evolve(state, version=2, owner="someone else")
    await sql_store.commit_many([Change("b1", 1, newer, T0, inbox=_inbox("e1", "b1"))])
    processed, read = await sql_store.load_for_events([("b1", "e2")])
    assert processed == frozenset()
    assert read["b1"][0] is newer  # the committed state itself, not decoded again
    assert await sql_store.load_for_event("b1", "e3") == (False, newer, False)
    # Several batches in one commit_many, then one alone: each read back as committed.
    others = [make_state(f"c{n}") for n in range(3)]
    await sql_store.commit_many([Change(o.batch_id, None, o, T0) for o in others])
    _, read = await sql_store.load_for_events([(o.batch_id, "e9") for o in others])
    assert [read[o.batch_id][0] for o in others] == others
    assert all(read[o.batch_id][0] is o for o in others)


async def test_a_row_written_by_another_store_is_read_as_stored(make_store: StoreMaker, backend: str) -> None:
    store = await make_store()
    state = make_state("b1")
    await store.commit(Change("b1", None, state, T0))
    assert (await store.load_for_event("b1", "e0"))[1] is state
    other = await make_store()
    theirs = attrs.evolve(state, version=2, owner="another process")
    await other.commit(Change("b1", 1, theirs, T0))
    _, read, _ = await store.load_for_event("b1", "e1")
    assert read == theirs
    assert (await store.load_for_events([("b1", "e1")]))[1] == {"b1": (theirs, False)}
    # A row rewritten by hand, its version left as it was, is read as it now is.
    by_hand = attrs.evolve(theirs, owner="an operator")
    async with store.engine.begin() as conn:
        await conn.execute(
            text("UPDATE batches SET state = :doc WHERE batch_id = 'b1'").bindparams(doc=state_text(by_hand))
            if backend == "sqlite"
            else text("UPDATE batches SET state = CAST(:doc AS jsonb) WHERE batch_id = 'b1'").bindparams(
                doc=state_text(by_hand)
            )
        )
    assert (await store.load_for_event("b1", "e1"))[1] == by_hand
    assert (await store.load_for_events([("b1", "e1")]))[1] == {"b1": (by_hand, False)}
    # A row rewritten by hand into something that is not a state is still reported as corrupted.
    async with store.engine.begin() as conn:
        await conn.execute(
            text("UPDATE batches SET state = 'not json' WHERE batch_id = 'b1'")
            if backend == "sqlite"
            else text("""UPDATE batches SET state = '{"layout": "no"}' WHERE batch_id = 'b1'""")
        )
    with pytest.raises(CorruptStateError):
        await store.load_for_event("b1", "e1")
    with pytest.raises(CorruptStateError):
        await store.load_for_events([("b1", "e1")])


def test_the_cache_keeps_the_newest_and_never_a_state_with_history() -> None:
    cache = StateCache(size=2)
    states = [make_state(f"b{n}") for n in range(3)]
    for state in states:
        cache.written(state, state_text(state))
    assert len(cache) == 2
    assert cache.decoded("b2", state_text(states[2])) is states[2]
    first = cache.decoded("b0", state_text(states[0]))  # b0 went first: decoded again
    assert first == states[0]
    assert first is not states[0]
    shown = attrs.evolve(states[1], history=(archived_run("b1"),))
    cache.written(shown, state_text(shown))
    assert cache.decoded("b1", state_text(shown)).history == ()
    with pytest.raises(ValueError, match="at least 1"):
        StateCache(size=0)


async def test_compare_and_sets_in_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqlite_many, "_MAX_PARAMETERS", 15)  # two rows per statement
    store = await open_store(f"sqlite+aiosqlite:///{tmp_path / 'chunks.db'}")
    try:
        states = [make_state(f"b{n}") for n in range(5)]
        for state in states:
            await store.commit(Change(state.batch_id, None, state, T0))

        def change(n: int, expected: int, event_id: str) -> Change:
            state = attrs.evolve(states[n], version=expected + 1)
            return Change(
                state.batch_id,
                expected,
                state,
                T0,
                outbox=(message(f"m-{event_id}", state.batch_id),),
                inbox=_inbox(event_id, state.batch_id),
            )

        # b3 (in the second chunk) is at version 1, not 4: nothing is written.
        with pytest.raises(ConcurrencyConflictError) as lost:
            await store.commit_many([change(n, 4 if n == 3 else 1, f"x{n}") for n in range(5)])
        assert (lost.value.batch_id, lost.value.expected, lost.value.actual) == ("b3", 4, 1)
        assert [(await store.load(f"b{n}")).version for n in range(5)] == [1] * 5  # type: ignore[union-attr]
        assert await store.pending_count() == 0
        await store.commit_many([change(n, 1, f"e{n}") for n in range(5)])
        assert [(await store.load(f"b{n}")).version for n in range(5)] == [2] * 5  # type: ignore[union-attr]
        assert all([await store.is_processed(f"e{n}") for n in range(5)])
        assert await store.pending_count() == 5
    finally:
        await store.close()
