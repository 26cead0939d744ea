"""Found by an attack on what a long-running ``serve`` keeps around the SQL store.

Was a defect (fixed; the test failed before): on SQLite the leased insert's "is an older
row of this key pending?" walked every older pending row, so with the hand-off on every
commit cost the whole outbox backlog.

Held: a handed row kept in memory past its lease is published once and in key order; the
state cache keeps at most its size and an evicted batch reads back and takes writes.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from datetime import timedelta

import attrs
import pytest
from pipeline_state_sql import SqlStore
from pipeline_state_sql.outbox import blocked_sql
from pipeline_state_sql.state_cache import STATE_CACHE_SIZE

from pipeline_state import ManualClock, OutboxRelay, SystemClock
from pipeline_state._model import ItemRef
from pipeline_state.errors import PublishError
from pipeline_state.ports import Change, OutboxMessage
from pipeline_state.testing import T0, make_state, message
from tests.relay_kit import relay_logs_off


class Transport:
    """A publisher (the broker's answer per message): refuses the topics in ``failing``."""

    def __init__(self, failing: Sequence[str] = ()) -> None:
        self.failing = set(failing)
        self.published: list[str] = []
        self.keys: list[str | None] = []

    async def publish(self, messages: Sequence[OutboxMessage]) -> Sequence[BaseException | None]:
        results: list[BaseException | None] = []
        for m in messages:
            if m.topic in self.failing:
                results.append(PublishError(f"broker refused {m.topic}"))
            else:
                self.published.append(m.event_id)
                self.keys.append(m.key)
                results.append(None)
        return results


@pytest.fixture(autouse=True)
def _quiet_relay() -> Iterator[None]:
    with relay_logs_off():
        yield


@pytest.mark.timeout(120)
async def test_handed_row_kept_past_its_lease_is_published_once_in_key_order(
    sqlite_store: SqlStore,
) -> None:
    """A row handed to the relay waits in the in-memory queue past its lease, and the relay's
    own claim may take it then: it still goes out once, before the newer row of its key."""
    store = sqlite_store
    transport = Transport()
    clock = ManualClock(T0)
    relay = OutboxRelay(store, transport, clock, batch_size=2)
    store.attach_relay(relay.hand_off, clock)
    # A backlog of other batches' rows, then the first row of batch "k", all handed off.
    others = [message(f"o{i}", f"other-{i}") for i in range(10)]
    await store.commit(Change("w1", None, None, T0, outbox=(*others, message("k1", "k"))))
    assert relay.handed == 11
    await relay.run_once(claim=False)  # a wave of 2: the queue still holds 9 rows, k1 among them
    # The next unit of work of batch "k": held back by k1 (pending), left to the claim.
    await store.commit(Change("w2", None, None, T0, outbox=(message("k2", "k"),)))
    clock.advance(31)  # the relay is slow: the lease of the handed rows passes
    for _ in range(100):
        report = await relay.run_once()
        if report.idle and not relay.handed:
            break
    assert await store.pending_count() == 0
    k_order = [e for e in transport.published if e in ("k1", "k2")]
    dupes = sorted({e for e in transport.published if transport.published.count(e) > 1})
    assert k_order == ["k1", "k2"], f"batch k's rows went out as {k_order} (all: {transport.published})"
    assert not dupes, f"published more than once: {dupes} (all: {transport.published})"


async def _timed_commit(store: SqlStore, tag: str, n: int = 250) -> float:
    changes = [
        Change(f"{tag}-{i}", None, None, T0, outbox=(message(f"{tag}-ev-{i}", f"{tag}-key-{i}"),))
        for i in range(n)
    ]
    started = time.perf_counter()
    await store.commit_many(changes)
    return time.perf_counter() - started


@pytest.mark.timeout(120)
async def test_leased_insert_finds_an_older_row_of_its_key_by_index_on_sqlite(
    sqlite_store: SqlStore,
) -> None:
    """Was a defect, fixed: with the relay hand-off attached (``serve``'s default), SQLite
    planned the leased insert's "is an older row of this key pending?" (``blocked_sql``,
    inside RETURNING) as a walk of every older pending row by id, filtered by key, so each
    inserted row cost the whole backlog: a 250-row commit took ~65 ms on an empty outbox and
    ~1.9 s behind 20,000 pending rows of other keys (10,000 units of work ~13 s instead of
    ~1.5 s). Now the plan is one search of ``ix_outbox_pending_key`` (key, id)."""
    store = sqlite_store
    store.detach_relay()  # build the backlog fast (plain inserts)
    for chunk in range(40):
        await store.commit_many(
            [
                Change(
                    f"bk-{chunk}-{i}", None, None, T0, outbox=(message(f"bk-{chunk}-{i}", f"bk-{chunk}-{i}"),)
                )
                for i in range(500)
            ]
        )
    assert await store.pending_count() >= 20_000
    store.attach_relay(lambda rows, poll: None, SystemClock())
    await _timed_commit(store, "with-a-backlog")  # the leased insert still works
    async with store.engine.connect() as conn:
        rows = await conn.exec_driver_sql(
            "EXPLAIN QUERY PLAN INSERT INTO outbox (event_id, topic, key, envelope, created_at, available_at,"
            " claimed_by, claimed_until) VALUES ('x', 't', 'k', '{}', '2020', '2020', 'o', '2020')"
            f" RETURNING id, {blocked_sql('sqlite')}"
        )
        plan = "; ".join(str(r[-1]) for r in rows)
        await conn.rollback()
    assert "SEARCH older USING INDEX ix_outbox_pending_key (key=? AND id<?)" in plan, plan


def _big_state(batch_id: str, items: int = 1000):  # type: ignore[no-untyped-def]
    """A batch the wire admits: up to 1,000 items, ids up to 100 characters."""
    state = make_state(batch_id)
    refs = tuple(
        ItemRef(f"{batch_id}-{n:04d}".ljust(100, "i"), f"store/{batch_id}-{n:04d}".ljust(100, "r"))
        for n in range(items)
    )
    return attrs.evolve(state, items=refs, item_ids=tuple(r.item_id for r in refs), expected_items=items)


@pytest.mark.timeout(120)
async def test_state_cache_keeps_at_most_its_size_and_eviction_loses_nothing(
    sqlite_store: SqlStore,
) -> None:
    store = sqlite_store
    n = STATE_CACHE_SIZE * 3
    chunk = 500
    for start in range(0, n, chunk):
        await store.commit_many(
            [Change(f"c-{i}", None, make_state(f"c-{i}"), T0) for i in range(start, min(n, start + chunk))]
        )
    assert len(store._states) <= STATE_CACHE_SIZE  # type: ignore[arg-type]
    # Evicted and kept batches read back as committed, and can be changed again (CAS).
    for i in (0, 1, n // 2, n - 1):
        _, state, _ = await store.load_for_event(f"c-{i}", "e")
        assert state == make_state(f"c-{i}")
        newer = attrs.evolve(state, version=2, owner=f"o-{i}", updated_at=T0 + timedelta(seconds=1))
        await store.commit(Change(f"c-{i}", 1, newer, T0))
        assert (await store.load_for_event(f"c-{i}", "e2"))[1] == newer
    assert len(store._states) <= STATE_CACHE_SIZE  # type: ignore[arg-type]
