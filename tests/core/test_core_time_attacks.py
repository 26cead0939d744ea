"""Hostile input, found by an attack: time in the engine (deadlines, re-sends, the clock).

Tests whose docstring starts "Held" are attacks the code withstood, kept as guards;
the others failed before the fix that came with them."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import pytest
from core_flow import Flow, one, topics

from pipeline_state import CancelRun, Catalog, InMemoryRuntime, ManualClock
from pipeline_state.errors import PipelineStateError
from pipeline_state.profiles.huleedu.events import Topic
from pipeline_state.profiles.huleedu.profile import HULEEDU_DEFAULT_DEADLINE_SECONDS, huleedu_profile
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes


def _catalog(seconds: float) -> Catalog:
    return Catalog.from_dict(
        {
            "pipelines": {
                "nlp": {
                    "steps": [
                        {"name": "spellcheck", "deadline_seconds": seconds},
                        {"name": "nlp", "depends_on": ["spellcheck"]},
                    ]
                }
            }
        }
    )


def _flow(clock: ManualClock | None = None, **profile: object) -> Flow:
    return Flow(InMemoryRuntime(huleedu_profile(**profile), clock=clock), HuleEduEnvelopes())  # type: ignore[arg-type]


def _completions(flow: Flow) -> list[dict]:
    return [m.value["data"] for m in flow.rt.bus.messages(Topic.PIPELINE_COMPLETED.value)]


# -- defects ------------------------------------------------------------------------------


async def test_huge_catalog_deadline_is_refused_or_capped_not_an_overflow_at_dispatch() -> None:
    """A catalog step with ``deadline_seconds=1e12`` (finite, positive: accepted by the
    catalog's validation) must either be refused when the catalog/profile is loaded
    (DefinitionError) or work; it must not make every request for the pipeline raise a raw
    OverflowError from ``now + timedelta(seconds=...)`` when the phase is dispatched."""
    try:
        profile = huleedu_profile(catalog=_catalog(1e12))
    except PipelineStateError:
        return  # refused when loaded: fine
    flow = Flow(InMemoryRuntime(profile), HuleEduEnvelopes())
    await flow.ready("b1")
    try:
        out = await flow.request("b1", "nlp")
    except PipelineStateError:
        return  # a clear error would be acceptable
    assert Topic.SPELLCHECK.value in topics(out)


async def test_huge_deployment_deadline_is_refused_or_capped_not_an_overflow() -> None:
    """Same through the deployment's ``deadlines`` mapping (``_check_seconds`` accepts any
    finite positive float): 1e300 must be a DefinitionError, not an OverflowError at dispatch."""
    try:
        profile = huleedu_profile(deadlines={"spellcheck": 1e300})
    except PipelineStateError:
        return
    flow = Flow(InMemoryRuntime(profile), HuleEduEnvelopes())
    await flow.ready("b1")
    try:
        out = await flow.request("b1", "nlp")
    except PipelineStateError:
        return
    assert Topic.SPELLCHECK.value in topics(out)


# -- attacks that held --------------------------------------------------------------------


async def test_outcome_exactly_at_deadline_before_sweep_is_applied() -> None:
    flow = _flow(catalog=_catalog(60), max_resends=0)
    ids = await flow.ready("b1")
    corr = (await flow.start("b1", "nlp")).correlation_id
    flow.rt.clock.advance(60)  # exactly the deadline instant
    out = await flow.outcome("b1", "spellcheck", corr, processed=ids)
    assert topics(out) == [Topic.NLP.value]
    # the sweep at the same instant finds nothing (spellcheck done; nlp deadline later)
    assert await flow.rt.expire_overdue() == []


async def test_sweep_exactly_at_deadline_then_outcome_is_ignored() -> None:
    flow = _flow(catalog=_catalog(60), max_resends=0)
    ids = await flow.ready("b1")
    corr = (await flow.start("b1", "nlp")).correlation_id
    flow.rt.clock.advance(59.999999)
    assert await flow.rt.expire_overdue() == []
    flow.rt.clock.advance(0.000001)
    out = await flow.rt.expire_overdue()
    assert one(out, Topic.PIPELINE_COMPLETED.value)["final_status"] == "failed_critically"
    assert await flow.outcome("b1", "spellcheck", corr, processed=ids) == []
    assert len(_completions(flow)) == 1


async def test_sweep_twice_at_same_instant_is_a_duplicate() -> None:
    flow = _flow(catalog=_catalog(60), max_resends=3)
    await flow.ready("b1")
    await flow.start("b1", "nlp")
    flow.rt.clock.advance(60)
    first = await flow.rt.service.expire_overdue()
    assert len(first) == 1
    assert first[0].decision is not None
    assert first[0].decision.resend
    second = await flow.rt.service.expire_overdue()
    assert second == []  # the fresh deadline is later
    spell = (await flow.state("b1")).active_run.phase("spellcheck")  # type: ignore[union-attr]
    assert spell is not None
    assert spell.resends == 1


async def test_cancel_while_deadline_fires() -> None:
    flow = _flow(catalog=_catalog(60), max_resends=0)
    ids = await flow.ready("b1")
    corr = (await flow.start("b1", "nlp")).correlation_id
    flow.rt.clock.advance(61)
    await asyncio.gather(flow.rt.execute(CancelRun("b1")), flow.rt.expire_overdue())
    await flow.outcome("b1", "spellcheck", corr, processed=ids)
    await flow.rt.expire_overdue()
    comps = _completions(flow)
    assert len(comps) == 1
    assert (await flow.state("b1")).status.value == "ready_for_pipeline_execution"


async def test_outcome_concurrent_with_sweep_completes_once() -> None:
    for max_resends in (0, 1):
        flow = _flow(catalog=_catalog(60), max_resends=max_resends)
        ids = await flow.ready("b1")
        corr = (await flow.start("b1", "nlp")).correlation_id
        flow.rt.clock.advance(60)
        await asyncio.gather(flow.outcome("b1", "spellcheck", corr, processed=ids), flow.rt.expire_overdue())
        await flow.outcome("b1", "nlp", corr, processed=ids)
        flow.rt.clock.advance(10 * HULEEDU_DEFAULT_DEADLINE_SECONDS)
        await flow.rt.expire_overdue()
        assert len(_completions(flow)) == 1
        assert (await flow.state("b1")).active_run is None


async def test_clock_jump_of_days_fails_after_resends_each_tick() -> None:
    flow = _flow(max_resends=2)
    await flow.ready("b1")
    command_id = None
    await flow.start("b1", "nlp")
    spell = (await flow.state("b1")).active_run.phase("spellcheck")  # type: ignore[union-attr]
    assert spell is not None
    command_id = spell.command_event_id
    sent = []
    for _ in range(3):
        flow.rt.clock.advance(30 * 86400)
        out = await flow.rt.expire_overdue()
        sent += [m for m in out if m["topic"] == Topic.SPELLCHECK.value]
    assert [m["value"]["event_id"] for m in sent] == [command_id, command_id]
    assert len(_completions(flow)) == 1


async def test_non_utc_clock_works_in_memory() -> None:
    clock = ManualClock(datetime(2025, 1, 1, 12, tzinfo=timezone(timedelta(hours=5))))
    flow = _flow(clock, catalog=_catalog(60), max_resends=0)
    await flow.ready("b1")
    await flow.start("b1", "nlp")
    clock.advance(60)
    out = await flow.rt.expire_overdue()
    assert one(out, Topic.PIPELINE_COMPLETED.value)["processing_duration_seconds"] == 60.0


async def test_sweep_with_a_limit_serves_the_most_overdue_batch_first() -> None:
    """``expire_overdue(limit=N)`` takes the N overdue batches with the smallest *ids*
    (InMemoryStore.overdue_batches, pipeline_state/_memory.py:236; the SQL query orders by
    batch_id too, adapters/pipeline_state_sql/queries.py:334). Batch ``z`` has been overdue
    longest, but while at least N batches with smaller ids become overdue each sweep period it
    is never swept, and its run blocks its batch indefinitely (CONTRACT: "No run blocks its
    batch for ever"). Expected: the most overdue batches first (order by next deadline)."""
    flow = _flow(catalog=_catalog(60), max_resends=0)
    await flow.ready("z")
    await flow.start("z", "nlp")
    flow.rt.clock.advance(30)
    for period in range(4):
        for i in range(2):
            name = f"a{period}{i}"
            await flow.ready(name)
            await flow.start(name, "nlp")
        flow.rt.clock.advance(60)
        await flow.rt.service.expire_overdue(limit=2)
    z = await flow.state("z")
    assert z.active_run is None, "z, overdue for 210 s, was never swept"


async def test_event_timestamps_out_of_range_or_naive_are_clear() -> None:
    """Held: a naive event_timestamp is read as UTC; one that has no UTC equivalent is a
    PipelineStateError (InvalidMessageError), never a traceback."""
    flow = _flow()
    env = flow.env
    topic, value = env.register("b1", items=1)
    value = dict(value, event_timestamp="2025-01-01T00:00:00")
    await flow.rt.deliver(topic, value)
    for stamp in ("9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+23:59"):
        topic, value = env.register("b2", items=1)
        value = dict(value, event_timestamp=stamp)
        with pytest.raises(PipelineStateError):
            await flow.rt.deliver(topic, value)


async def test_late_outcome_of_a_re_sent_command_after_retry_phase_is_stale() -> None:
    """Held: spellcheck re-sent then timed out; the operator retries it (a new run); the
    worker's late answer to the re-sent command (old correlation id) is ignored stale_run,
    the new run completes once."""
    from pipeline_state import RetryPhase

    flow = _flow(catalog=_catalog(60), max_resends=1)
    ids = await flow.ready("b1")
    old = (await flow.start("b1", "nlp")).correlation_id
    for _ in range(2):
        flow.rt.clock.advance(60)
        await flow.rt.expire_overdue()
    assert len(_completions(flow)) == 1
    out = await flow.rt.execute(RetryPhase("b1", "spellcheck", "teacher-1"))
    assert Topic.SPELLCHECK.value in topics(out)
    topic, value = flow.env.outcome("b1", "spellcheck", old, processed=ids)
    assert await flow.rt.deliver(topic, value) == []
    assert await flow.inbox_result(value["event_id"]) == "ignored:stale_run"
    new = (await flow.state("b1")).active_run
    assert new is not None
    await flow.outcome("b1", "spellcheck", new.correlation_id, processed=ids)
    assert len(_completions(flow)) == 2
