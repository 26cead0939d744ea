"""The real engine's events, replayed into the results read model in hostile orders.

The in-memory runtime runs one or two batches through Hypothesis-chosen stories (runs,
worker outcomes with the run's, a stale or a lost correlation id, repeats, cancels, phase
retries, deadlines, archive); the results consumer beside it records every message it
consumed. The recording is then replayed into fresh services: in the natural order, shuffled,
with redeliveries, and split by a restart (a new service on the same store, with the
messages after the restart point and some before it delivered again). Every replay gives
the natural order's read model, class summary and announcements, and the batch is
``processing`` exactly when the engine ends with it ``processing_pipelines``.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline_state import ArchiveBatch, CancelRun, ManualClock, RetryPhase
from pipeline_state.errors import PipelineStateError
from pipeline_state.profiles.huleedu.events import Topic
from pipeline_state.profiles.huleedu.results import (
    InMemoryResultsStore,
    ResultsQueries,
    ResultsService,
    batch_view,
)
from tests.results_platform import ResultsPlatform

PIPELINES = ("cj_assessment", "nlp", "ai_feedback", "spellcheck")
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

Step = tuple[str, int, int]


steps = st.lists(
    st.tuples(
        st.sampled_from(
            [
                "start",
                "ok",
                "ok",
                "ok",
                "partial",
                "fail",
                "lost",
                "stale",
                "repeat",
                "cancel",
                "retry",
                "expire",
            ]
        ),
        st.integers(0, 1),  # which batch
        st.integers(0, 3),  # a choice (pipeline, seconds to advance)
    ),
    min_size=1,
    max_size=14,
)


async def _start(p: ResultsPlatform, batch_id: str, pipeline: str) -> str | None:
    """Request ``pipeline``; its correlation id, ``None`` when the engine denied it."""
    corr = str(uuid.uuid4())
    out = await p.deliver(*p.env.request(batch_id, pipeline, requested_by=p.owner, correlation_id=corr))
    return None if Topic.PIPELINE_DENIED.value in [m["topic"] for m in out] else corr


async def _story(plan: list[Step], archive: bool) -> tuple[ResultsPlatform, dict[str, str]]:
    """Run ``plan`` on the engine; the platform (its ``consumed`` recording) and the engine's
    final status per batch."""
    p = ResultsPlatform()
    batches = ("b0", "b1")
    ids = {b: await p.ready_batch(b, class_id="k" if b == "b0" else "k2") for b in batches}
    last_corr: dict[str, str] = {}
    for action, which, n in plan:
        b = batches[which]
        p.rt.clock.advance(n)
        snap = await p.rt.snapshot(b)
        run = snap.get("active_run")
        try:
            if action == "start":
                if run is None:
                    corr = await _start(p, b, PIPELINES[n])
                    if corr is not None:
                        last_corr[b] = corr
            elif action in ("ok", "partial", "fail", "lost", "repeat") and run is not None:
                active = [ph for ph, s in run["phases"].items() if s == "dispatch_initiated"]
                if not active:
                    continue
                phase = active[0]
                corr = run["correlation_id"] if action != "lost" else str(uuid.uuid4())
                e = ids[b]
                if action in ("ok", "lost", "repeat"):
                    kw: dict[str, Any] = {"processed": e}
                elif action == "partial":
                    kw = {"processed": e[:1], "failed": e[1:]}
                else:
                    kw = {"failed": e, "status": "failed_critically"}
                await p.outcome(b, phase, corr, **kw)
                if action == "repeat":  # the worker sends its outcome again, under a new event id
                    p.rt.clock.advance(1)
                    await p.outcome(b, phase, corr, failed=e, status="failed_critically")
            elif action == "stale" and b in last_corr:
                await p.outcome(b, "spellcheck", last_corr[b], processed=ids[b][:1], failed=ids[b][1:])
            elif action == "cancel" and run is not None:
                await p.rt.execute(CancelRun(b, user_id=p.owner, reason="attack"))
            elif action == "retry" and run is None and snap.get("history"):
                await p.rt.execute(RetryPhase(b, "spellcheck", user_id=p.owner))
            elif action == "expire":
                p.rt.clock.advance(24 * 3600 * (n + 1))
                await p.rt.expire_overdue()
        except PipelineStateError:
            pass  # the engine refused the step: what it emitted (nothing) is what counts
    if archive:
        for b in batches:
            with contextlib.suppress(PipelineStateError):
                await p.rt.execute(ArchiveBatch(b))
            p.rt.clock.advance(1)
            await p.outcome(b, "spellcheck", str(uuid.uuid4()), processed=ids[b])
    statuses = {b: str((await p.rt.snapshot(b))["status"]) for b in batches}
    return p, statuses


async def _replay(
    messages: list[tuple[str, dict[str, Any]]], store: InMemoryResultsStore | None = None
) -> InMemoryResultsStore:
    store = store or InMemoryResultsStore()
    service = ResultsService(store, clock=ManualClock())
    for topic, value in messages:
        await service.handle_message(topic, value)
    return store


async def _state(store: InMemoryResultsStore) -> dict[str, Any]:
    q = ResultsQueries(store)
    views = {}
    for b in ("b0", "b1"):
        batch = await store.load(b)
        views[b] = None if batch is None else (batch, batch_view(batch) | {"version": 0, "updated_at": None})
    announced = sorted((r.message.topic, r.message.event_id) for r in store.outbox_rows())
    return {
        "views": views,
        "classes": {k: await q.class_json(k) for k in ("k", "k2")},
        "announced": announced,
    }


@SETTINGS
@given(plan=steps, archive=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_engine_stories_give_one_read_model_in_any_order_and_after_a_restart(
    plan: list[Step], archive: bool, seed: int
) -> None:
    async def main() -> None:
        p, engine = await _story(plan, archive)
        natural = p.consumed
        rng = random.Random(seed)
        reference = await _state(await _replay(natural))
        # what the read model says against the engine
        for b, status in engine.items():
            view = await ResultsQueries(p.store).batch_json(b)
            assert view is not None
            assert (view["status"] == "processing") == (status == "processing_pipelines"), (b, status, view)

        shuffled = natural + rng.sample(natural, k=min(4, len(natural)))
        rng.shuffle(shuffled)
        assert await _state(await _replay(shuffled)) == reference

        # a restart: the first part is handled, then a new service on the same store gets the
        # rest and some of the first part again (offsets not committed)
        cut = rng.randrange(len(natural) + 1)
        store = await _replay(natural[:cut])
        again = natural[max(0, cut - 3) :]
        await _replay(again, store)
        assert await _state(store) == reference

        # each completed run announced exactly once (two messages)
        topics = [t for t, _ in reference["announced"]]
        completed = sum(len(v[0].completions) for v in reference["views"].values() if v is not None)
        assert topics.count(Topic.RESULTS_READY.value) == completed
        assert topics.count(Topic.TEACHER_NOTIFICATION.value) == completed

    asyncio.run(main())


@pytest.mark.timeout(60)
async def test_cancelled_run_late_events_and_archive_keep_the_final_status() -> None:
    """Held: run 1 cancelled; its dispatch redelivered, a late outcome of its active phase with
    the run's correlation id, then run 2 complete; the batch archived; run 1's completion
    redelivered after all that. The read model shows run 2's status, both runs once, and
    announces each once."""
    p = ResultsPlatform()
    ids = await p.ready_batch("b1")
    corr1 = await p.start("b1", "cj_assessment")
    p.rt.clock.advance(1)
    await p.rt.execute(CancelRun("b1", user_id=p.owner, reason="stop"))
    p.rt.clock.advance(1)
    await p.outcome("b1", "spellcheck", corr1, processed=ids)
    corr2 = await p.start("b1", "nlp")
    p.rt.clock.advance(1)
    await p.outcome("b1", "spellcheck", corr2, processed=ids)
    p.rt.clock.advance(1)
    await p.outcome("b1", "nlp", corr2, processed=ids[:2], failed=ids[2:])
    await p.rt.execute(ArchiveBatch("b1"))
    for topic, value in list(p.consumed):  # everything redelivered after the archive
        await p.results.handle_message(topic, value)
    view = await ResultsQueries(p.store).batch_json("b1")
    assert view is not None
    assert view["status"] == "completed_with_failures"
    assert [r["final_status"] for r in view["runs"]] == ["cancelled", "completed_with_failures"]
    assert isinstance(p.store, InMemoryResultsStore)
    ready = [r for r in p.store.outbox_rows() if r.message.topic == Topic.RESULTS_READY.value]
    assert len(ready) == 2
