"""Attacks on the ``already_handled`` rule in the core (in-memory store)."""

from __future__ import annotations

import uuid

from pipeline_state import HandleResult, InMemoryStore, RetryPhase
from pipeline_state._commands import RecordPhaseCompletion
from pipeline_state._decide import ALREADY_HANDLED
from pipeline_state.ports import Retention, Store, purge_expired
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes
from tests.core.test_core_request_redelivered_after_purge import DAY, assert_already_handled, first_run


async def test_request_redelivered_after_purge_while_its_run_is_active_and_after_cancel() -> None:
    """The request of an active run redelivered after purge: duplicate, nothing emitted; the
    run then cancelled (archived), redelivered again: still a duplicate, no second run."""
    from pipeline_state._commands import CancelRun

    store = InMemoryStore()
    story = await first_run(store, fail_spellcheck=True, purge=False)
    env, corr = HuleEduEnvelopes(), str(uuid.uuid4())
    request = env.request("b1", "nlp", correlation_id=corr)
    started = await story.deliver(request)
    assert isinstance(started, HandleResult)
    assert started.decision is not None
    run_id = started.decision.run_id
    story.clock.advance(31 * DAY)
    await purge_expired(store, Retention(), story.clock.now())
    sent = len(story.bus.messages())
    assert_already_handled(await story.deliver(request))
    assert len(story.bus.messages()) == sent
    cancelled = await story.service.execute(CancelRun("b1", "ops", "stop", run_id=run_id))
    assert cancelled.ignored is None
    await story.relay.drain()
    story.clock.advance(31 * DAY)
    await purge_expired(store, Retention(), story.clock.now())
    sent = len(story.bus.messages())
    again = await story.deliver(request)
    assert_already_handled(again)
    assert again.decision.run_id == run_id  # type: ignore[union-attr]
    assert len(story.bus.messages()) == sent
    shown = await story.service.get_batch("b1")
    assert [r.run_id for r in shown.history].count(run_id) == 1
    assert shown.active_run is None
    assert not story.reused_ids()


async def test_group_with_request_and_its_redelivery_after_purge() -> None:
    """handle_many with the purged request twice plus a fresh request: the first two are
    duplicates, the fresh one starts its own run."""
    store = InMemoryStore()
    story = await first_run(store, fail_spellcheck=True)
    fresh = HuleEduEnvelopes().request("b1", "nlp", correlation_id=str(uuid.uuid4()))
    results = await story.service.handle_many([story.request, story.request, fresh])
    assert all(isinstance(r, HandleResult) for r in results), results
    assert results[0].duplicate
    assert results[0].decision.ignored == ALREADY_HANDLED
    assert results[1].duplicate  # type: ignore[union-attr]
    assert not results[2].duplicate
    assert results[2].ignored is None
    await story.relay.drain()
    assert not story.reused_ids()


async def test_retry_with_new_event_id_after_its_twin_still_starts() -> None:
    """Two retries of one phase with different event ids, one after the other finished:
    the second is new and starts its own run (not taken for the first)."""
    store = InMemoryStore()
    story = await first_run(store, fail_spellcheck=True, purge=False)
    env = HuleEduEnvelopes()
    items = env.item_ids("b1", 1)
    for n, key in enumerate(("retry-a", "retry-b")):
        corr = str(uuid.uuid4())
        retry = RetryPhase("b1", "spellcheck", "ops", retry_reason="again", after_runs=1 + n)
        res = await story.service.execute(retry, event_id=key, correlation_id=corr)
        assert res.ignored is None
        assert not res.duplicate
        await story.relay.drain()
        await story.deliver(env.outcome("b1", "spellcheck", corr, status="failed_critically", failed=items))
    assert len((await story.service.get_batch("b1")).history) == 3


async def test_a_report_applied_to_an_active_run_redelivered_after_purge_records_no_new_run() -> None:
    await a_report_applied_to_an_active_run_redelivered_after_purge(InMemoryStore())


async def a_report_applied_to_an_active_run_redelivered_after_purge(store: Store) -> None:
    """An operator's report of a phase done, applied to the ACTIVE run's phase (no run of its
    own); the run then completes; the same report (same event id) delivered again after the
    inbox purge finds the batch idle: it must change nothing (it was handled), not archive
    a second, recorded run named after it. Was a known defect (fixed): the summary now
    remembers the reports applied to a run (``Past.reported``)."""
    story = await first_run(store, fail_spellcheck=True, purge=False)
    env, corr = HuleEduEnvelopes(), str(uuid.uuid4())
    items = env.item_ids("b1", 1)
    await story.deliver(env.request("b1", "nlp", correlation_id=corr))
    report = RecordPhaseCompletion("b1", "spellcheck", success=True)
    first = await story.service.execute(report, event_id="report-1", correlation_id=corr)
    assert first.ignored is None
    await story.relay.drain()
    await story.deliver(env.outcome("b1", "nlp", corr, processed=items))
    before = await story.service.get_batch("b1")
    assert before.active_run is None
    story.clock.advance(31 * DAY)
    await purge_expired(store, Retention(), story.clock.now())
    again = await story.service.execute(report, event_id="report-1", correlation_id=corr)
    after = await story.service.get_batch("b1")
    assert len(after.history) == len(before.history), (
        again.decision,
        [r.pipeline_name for r in after.history],
    )
    assert_already_handled(again)
    assert again.decision is not None
    assert again.decision.run_id is None  # the report started no run: it names none
