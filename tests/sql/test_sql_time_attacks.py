"""Hostile input, found by an attack: time in the engine, in-memory store against SqlStore (SQLite file).

The same sequence of deliveries, clock moves and sweeps is played on an InMemoryRuntime and
on the same runtime rewired onto a SqlStore on a temporary SQLite file; both must emit the
same messages and end in the same state, and the run invariants must hold on both.
Tests whose docstring starts "Held" are attacks the code withstood, kept as guards;
the others failed before the fix that came with them."""

from __future__ import annotations

import tempfile
import uuid
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pipeline_state_sql import open_store

from pipeline_state import CancelRun, Catalog, InMemoryRuntime, ManualClock, PipelineService
from pipeline_state._relay import OutboxRelay
from pipeline_state.errors import PipelineStateError
from pipeline_state.profiles.huleedu.events import Topic
from pipeline_state.profiles.huleedu.profile import huleedu_profile
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes

CATALOG = Catalog.from_dict(
    {
        "pipelines": {
            "nlp": {
                "steps": [
                    {"name": "spellcheck", "deadline_seconds": 60},
                    {"name": "nlp", "depends_on": ["spellcheck"], "deadline_seconds": 30},
                ]
            }
        }
    }
)
PHASE_TOPICS = {Topic.SPELLCHECK.value, Topic.NLP.value}


async def _pair(
    path: Path, start: datetime | None = None, **profile: Any
) -> tuple[InMemoryRuntime, InMemoryRuntime, Any]:
    prof = huleedu_profile(catalog=CATALOG, **profile)
    mem = InMemoryRuntime(prof, clock=ManualClock(start))
    sql = InMemoryRuntime(prof, clock=ManualClock(start))
    store = await open_store(f"sqlite+aiosqlite:///{path}")
    sql.store = store  # type: ignore[assignment]
    sql.service = PipelineService(store, profile=prof, clock=sql.clock)
    sql.relay = OutboxRelay(store, sql.bus, sql.clock)
    return mem, sql, store


def _shape(out: list[dict[str, Any]]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(m["topic"], m["value"]["event_id"], m["value"]["data"]) for m in out]


async def _both(mem: InMemoryRuntime, sql: InMemoryRuntime, call: str, *args: Any) -> Any:
    results = []
    for rt in (mem, sql):
        try:
            out = await getattr(rt, call)(*args)
            results.append(("ok", _shape(out)))
        except PipelineStateError as exc:
            results.append(("error", type(exc).__name__))
    assert results[0] == results[1], (call, args, results)
    return results[0]


async def _both_kw(mem: InMemoryRuntime, sql: InMemoryRuntime, payload: Any, eid: str, cid: str) -> Any:
    results = []
    for rt in (mem, sql):
        try:
            out = await rt.execute(payload, event_id=eid, correlation_id=cid)
            results.append(("ok", _shape(out)))
        except PipelineStateError as exc:
            results.append(("error", type(exc).__name__))
    assert results[0] == results[1], (payload, results)
    return results[0]


ACTIONS = st.lists(
    st.one_of(
        st.tuples(
            st.just("advance"), st.sampled_from([0.000001, 29.999999, 30, 30.000001, 60, 3600, 3 * 86400])
        ),
        st.tuples(st.just("expire")),
        st.tuples(
            st.just("outcome"),
            st.sampled_from(["spellcheck", "nlp"]),
            st.sampled_from(["ok", "fail", "partial"]),
        ),
        st.tuples(st.just("redeliver")),
        st.tuples(st.just("cancel")),
        st.tuples(st.just("request")),
    ),
    min_size=1,
    max_size=14,
)


async def _play(actions: list[tuple], start: datetime | None, max_resends: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        mem, sql, store = await _pair(Path(tmp) / "s.db", start, max_resends=max_resends)
        try:
            env = HuleEduEnvelopes()
            ids = env.item_ids("b1", 3)
            for delivery in (env.register("b1", items=3), env.provisioned("b1", ids)):
                await _both(mem, sql, "deliver", *delivery)
            corrs: list[str] = []
            last = None
            accepted = 0
            request = env.request("b1", "nlp")
            corrs.append(request[1]["correlation_id"])
            res = await _both(mem, sql, "deliver", *request)
            accepted += 1
            for action in actions:
                kind = action[0]
                if kind == "advance":
                    mem.clock.advance(action[1])
                    sql.clock.advance(action[1])
                elif kind == "expire":
                    await _both(mem, sql, "expire_overdue")
                elif kind == "outcome":
                    phase, how = action[1], action[2]
                    suffix = "spellcheck" if phase == "nlp" else None
                    if how == "ok":
                        delivery = env.outcome("b1", phase, corrs[-1], processed=ids, suffix=suffix)
                    elif how == "fail":
                        delivery = env.outcome("b1", phase, corrs[-1], failed=ids, status="failed_critically")
                    else:
                        delivery = env.outcome(
                            "b1", phase, corrs[-1], processed=ids[:2], failed=ids[2:], suffix=suffix
                        )
                    last = delivery
                    await _both(mem, sql, "deliver", *delivery)
                elif kind == "redeliver" and last is not None:
                    await _both(mem, sql, "deliver", *last)
                elif kind == "cancel":
                    eid, cid = str(uuid.uuid4()), str(uuid.uuid4())
                    await _both_kw(mem, sql, CancelRun("b1"), eid, cid)
                elif kind == "request":
                    request = env.request("b1", "nlp")
                    res = await _both(mem, sql, "deliver", *request)
                    if res[0] == "ok" and not any(t == Topic.PIPELINE_DENIED.value for t, _, _ in res[1]):
                        corrs.append(request[1]["correlation_id"])
                        accepted += 1
            # drain: let every run finish by time
            for _ in range(8):
                mem.clock.advance(10**5)
                sql.clock.advance(10**5)
                await _both(mem, sql, "expire_overdue")
            for rt in (mem, sql):
                snap = await rt.snapshot("b1")
                assert snap["status"] == "ready_for_pipeline_execution", snap["status"]
                done = rt.bus.messages(Topic.PIPELINE_COMPLETED.value)
                run_ids = [m.value["data"]["run_id"] for m in done]
                assert len(run_ids) == len(set(run_ids)) == accepted, (run_ids, accepted)
                # no phase command beyond 1 + max_resends publications of its event id
                sent = Counter(m.event_id for m in rt.bus.messages() if m.topic in PHASE_TOPICS)
                assert max(sent.values(), default=0) <= 1 + max_resends, sent
                # no non-command message published twice
                others = Counter(m.event_id for m in rt.bus.messages() if m.topic not in PHASE_TOPICS)
                assert max(others.values(), default=0) == 1, others
            ms, ss = await mem.snapshot("b1"), await sql.snapshot("b1")
            assert ms == ss
        finally:
            await store.close()


@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(actions=ACTIONS, max_resends=st.sampled_from([0, 1, 2]))
async def test_stores_agree_on_timed_sequences(actions: list[tuple], max_resends: int) -> None:
    """Held: random sequences of clock moves (incl. exactly at and 1µs around
    deadlines), sweeps, outcomes, redeliveries, cancels and requests agree across stores."""
    await _play(actions, None, max_resends)


@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
@given(actions=ACTIONS, max_resends=st.sampled_from([0, 2]))
async def test_stores_agree_with_a_non_utc_clock(actions: list[tuple], max_resends: int) -> None:
    """Held: a timezone-aware but non-UTC ManualClock (accepted by its constructor) gives the
    same outcome on both stores."""
    start = datetime(2025, 1, 1, 23, 30, tzinfo=timezone(timedelta(hours=-5)))
    await _play(actions, start, max_resends)


async def test_resend_after_purge_published_reaches_the_wire(tmp_path: Path) -> None:
    """The spellcheck command is published, then ``SqlStore.purge_published`` deletes
    published rows (documented as "kept until then, for inspection"), then the phase's
    deadline passes. CONTRACT (Phase deadlines): the sweeper "re-sends the phase's command
    (same event id)". Observed: the re-send is counted (``resends`` 1, ``Decision.resend``
    names the id) but the requeue UPDATE finds no row (adapters/pipeline_state_sql/uow.py:172)
    so nothing reaches the bus: a silent no-op. Expected: the command is published again
    (e.g. the re-send rebuilt from the phase's inputs when its row is gone, or purge keeping
    rows of phases still active)."""
    _mem, sql, store = await _pair(tmp_path / "s.db", max_resends=2)
    try:
        env = HuleEduEnvelopes()
        ids = env.item_ids("b1", 2)
        for delivery in (env.register("b1", items=2), env.provisioned("b1", ids), env.request("b1", "nlp")):
            await sql.deliver(*delivery)
        sent = sql.bus.messages(Topic.SPELLCHECK.value)
        assert len(sent) == 1
        sql.clock.advance(1)
        assert await store.purge_published(sql.clock.now()) > 0
        sql.clock.advance(60)
        (result,) = await sql.service.expire_overdue()
        assert result.decision is not None
        assert result.decision.resend == (sent[0].event_id,)
        await sql.relay.drain()
        again = sql.bus.messages(Topic.SPELLCHECK.value)
        assert [m.event_id for m in again] == [sent[0].event_id] * 2
    finally:
        await store.close()


async def test_concurrent_sweeps_and_outcome_on_sqlite_complete_once(tmp_path: Path) -> None:
    """Held: two sweeps at the same instant and the outcome, concurrently, on SqlStore."""
    import asyncio

    for max_resends in (0, 1):
        _mem, sql, store = await _pair(tmp_path / f"c{max_resends}.db", max_resends=max_resends)
        try:
            env = HuleEduEnvelopes()
            ids = env.item_ids("b1", 2)
            request = env.request("b1", "nlp")
            corr = request[1]["correlation_id"]
            for delivery in (env.register("b1", items=2), env.provisioned("b1", ids), request):
                await sql.deliver(*delivery)
            sql.clock.advance(60)
            await asyncio.gather(
                sql.service.expire_overdue(),
                sql.service.handle_message(*env.outcome("b1", "spellcheck", corr, processed=ids)),
                sql.service.expire_overdue(),
            )
            await sql.service.handle_message(
                *env.outcome("b1", "nlp", corr, processed=ids, suffix="spellcheck")
            )
            for _ in range(4):
                sql.clock.advance(10**5)
                await sql.service.expire_overdue()
            await sql.relay.drain()
            assert len(sql.bus.messages(Topic.PIPELINE_COMPLETED.value)) == 1
            sent = Counter(m.event_id for m in sql.bus.messages() if m.topic in PHASE_TOPICS)
            assert max(sent.values()) <= 1 + max_resends
        finally:
            await store.close()


async def test_waiting_window_boundary_agrees_across_stores(tmp_path: Path) -> None:
    """Held: at T+window the fact is not expired on either store; at T+window+1µs it is."""
    mem, sql, store = await _pair(
        tmp_path / "w.db", datetime(2025, 1, 1, 23, 59, 59, 999999, tzinfo=timezone(timedelta(hours=3)))
    )
    try:
        env = HuleEduEnvelopes()
        delivery = env.provisioned("b1", env.item_ids("b1", 2))
        for rt in (mem, sql):
            rt.service.waiting_window_seconds = 60
            await rt.deliver(*delivery)
            rt.clock.advance(60)
            assert await rt.service.expired_waiting() == []
            rt.clock.advance(0.000001)
            assert [e.fact.event_id for e in await rt.service.expired_waiting()] == [delivery[1]["event_id"]]
    finally:
        await store.close()


async def test_resend_of_a_still_pending_command_is_published_once(tmp_path: Path) -> None:
    """Held: the relay is down while the deadline passes and the command is re-sent: once it
    drains, the command is published once (not twice) on both stores, and they agree."""
    mem, sql, store = await _pair(tmp_path / "p.db", max_resends=2)
    try:
        env = HuleEduEnvelopes()
        ids = env.item_ids("b1", 2)
        deliveries = (env.register("b1", items=2), env.provisioned("b1", ids), env.request("b1", "nlp"))
        counts = []
        for rt in (mem, sql):
            for delivery in deliveries:
                await rt.service.handle_message(*delivery)
            rt.clock.advance(60)
            (result,) = await rt.service.expire_overdue()
            assert result.decision is not None
            assert result.decision.resend
            await rt.relay.drain()
            counts.append(Counter(m.event_id for m in rt.bus.messages(Topic.SPELLCHECK.value)))
        assert counts[0] == counts[1]
        assert list(counts[0].values()) == [1]
    finally:
        await store.close()
