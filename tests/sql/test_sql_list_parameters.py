"""The hot reads and marks take their id lists as one parameter, on SQLite and PostgreSQL.

A fetch's read (``load_for_events``) and the relay's mark (``mark_published``) used
SQLAlchemy's expanding ``IN``: one parameter per id, so the statement's text changed with
every list length (rendered and numbered again on each call, and on PostgreSQL prepared
again per length), and a list longer than the database's parameter limit (PostgreSQL
32,767; SQLite's is set when it is built: 32,766 by default, 250,000 in this Python's)
could not be sent at all. They now bind the list once (:mod:`pipeline_state_sql.listed`).
"""

from __future__ import annotations

from datetime import timedelta

from pipeline_state_sql import SqlStore

from pipeline_state.ports import Change, InboxEntry
from pipeline_state.testing import T0, make_state, message

from .conftest import statements

# Ids a list parameter must carry as they are: quotes, a backslash, JSON's own characters,
# non-ASCII text and a character beyond the Basic Multilingual Plane.
AWKWARD = ("it's", 'say "x"', "back\\slash", "[1, 2]", "{}", "ünï-cødé", "\U0001f4da-essays")


async def _stored(store: SqlStore, batch_id: str, event_id: str) -> None:
    entry = InboxEntry(event_id, "t", batch_id, "applied", T0)
    await store.commit(Change(batch_id, None, make_state(batch_id), T0, inbox=entry))


async def test_load_for_events_sends_one_text_whatever_the_number_of_ids(sql_store: SqlStore) -> None:
    for index, batch_id in enumerate(AWKWARD):
        await _stored(sql_store, batch_id, f"e-{index}")
    with statements(sql_store) as sent:
        few = await sql_store.load_for_events([(AWKWARD[0], "e-0"), (AWKWARD[1], "new-1")])
        many = await sql_store.load_for_events(
            [(b, f"e-{i}") for i, b in enumerate(AWKWARD)] + [(f"absent-{n}", f"n-{n}") for n in range(40)]
        )
    reads = [s for s in sent if "kind" in s]
    assert len(reads) == 2, reads
    assert reads[0] == reads[1], reads
    # Each answer is still exact: processed events, and the batches read with their states.
    assert few == (frozenset({"e-0"}), {AWKWARD[1]: (make_state(AWKWARD[1]), False)})
    processed, read = many
    assert processed == {f"e-{i}" for i in range(len(AWKWARD))}
    assert read == {f"absent-{n}": (None, False) for n in range(40)}


async def test_load_for_events_takes_more_ids_than_the_database_takes_parameters(sql_store: SqlStore) -> None:
    """40,000 batches and events: with one parameter per id (the batch ids twice) the read
    needed 120,000 parameters, over PostgreSQL's limit (and SQLite's default one)."""
    await _stored(sql_store, "kept", "seen")
    pairs = [(f"b-{n}", f"e-{n}") for n in range(40_000)] + [("kept", "seen"), ("kept", "other")]
    processed, read = await sql_store.load_for_events(pairs)
    assert processed == {"seen"}
    assert len(read) == 40_001
    assert read["kept"] == (make_state("kept"), False)
    assert read["b-39999"] == (None, False)


async def test_mark_published_sends_one_text_and_marks_exactly_the_rows_listed(sql_store: SqlStore) -> None:
    messages = [message(f"m{n}", f"k{n}") for n in range(12)]
    await sql_store.commit(Change("marks", None, None, T0, outbox=tuple(messages)))
    rows = await sql_store.claim(T0, limit=100)
    assert [r.message.event_id for r in rows] == [m.event_id for m in messages]
    with statements(sql_store) as sent:
        await sql_store.mark_published([rows[0].id], T0)
        await sql_store.mark_published([r.id for r in rows[2:11]], T0)
    marks = [s for s in sent if s.startswith("UPDATE outbox SET published_at")]
    assert len(marks) == 2, sent
    assert marks[0] == marks[1], sent
    # rows[1] and rows[11] were not listed: still pending, claimable once their lease ends.
    assert await sql_store.pending_count() == 2
    later = await sql_store.claim(T0 + timedelta(hours=1), limit=100)
    assert [r.message.event_id for r in later] == ["m1", "m11"]
