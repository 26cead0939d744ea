"""Found by an attack: the wall clock stepping (an NTP correction, a VM resumed, a skewed
container clock) while runs are active, in memory. The story: the clock is a year ahead
while a run is active, then corrected back.

Were defects (fixed; the tests failed before): a relay retry due date written before the
step held the row (and its key's later rows) for the size of the step; a run accepted
before the step counted against the rate limit for a year.

Held: no negative durations after a backward step; a forward jump of years re-sends, fails
and completes the run once; a sweep after a backward step before the deadline changes
nothing.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from core_flow import Flow

from pipeline_state import InMemoryRuntime, RateLimitGuard
from pipeline_state.profiles.huleedu.events import Topic
from pipeline_state.profiles.huleedu.profile import huleedu_profile
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes
from tests.step_clock import AHEAD, TRUE, StepClock

pytestmark = pytest.mark.timeout(60)


def _flow(clock: StepClock, **profile: object) -> Flow:
    rt = InMemoryRuntime(huleedu_profile(**profile), clock=clock)  # type: ignore[arg-type]
    return Flow(rt, HuleEduEnvelopes())


def _published(flow: Flow, topic: str) -> list[dict]:
    return [m.value["data"] for m in flow.rt.bus.messages(topic)]


# -- defects ------------------------------------------------------------------------------


async def test_a_retry_due_date_from_before_a_backward_step_does_not_hold_the_row() -> None:
    """Was a defect, fixed.

    Expected: a row whose publish failed is retried within the relay's backoff
    (``max_backoff`` 60 s) of *elapsed* time, whatever the wall clock did: after the clock
    is corrected back by a year and 15 minutes pass, the spellcheck command is published.
    Before the fix: ``mark_failed`` stored ``retry_at = skewed now + 0.5 s``; the claim compares it to
    the corrected clock, so the row (and every later row of the batch's key, e.g. its
    completion) stays unpublished for a year."""
    clock = StepClock(AHEAD)
    flow = _flow(clock)
    await flow.ready("b1")
    flow.rt.bus.available = False  # a broker hiccup while the clock is a year ahead
    await flow.request("b1", "nlp")
    assert not _published(flow, Topic.SPELLCHECK.value)
    clock.set(TRUE)  # NTP corrects the clock
    flow.rt.bus.available = True
    for _ in range(15):
        clock.advance(60)
        await flow.rt.relay.drain()
    assert len(_published(flow, Topic.SPELLCHECK.value)) == 1, (
        "15 minutes after the correction the spellcheck command is still not published; "
        f"pending rows: {await flow.rt.store.pending_count()}"
    )


async def test_the_rate_limit_ignores_a_run_stamped_in_the_future_by_a_clock_step() -> None:
    """Was a defect, fixed.

    Expected: ``RateLimitGuard(max_runs=1, window_seconds=3600)`` lets a batch run again
    once an hour has elapsed since its last accepted run. A run accepted while the clock was
    a year ahead (completed at once) must not deny the batch for a year after the clock is
    corrected. Before the fix: ``accepted_at > now - window`` holds for a run accepted in the future,
    so every request for a day (and a year) is denied ``rate_limit_exceeded``."""
    clock = StepClock(AHEAD)
    flow = _flow(clock, extra_guards=[RateLimitGuard(max_runs=1, window_seconds=3600)])
    ids = await flow.ready("b1")
    started = await flow.start("b1", "nlp")
    await flow.outcome("b1", "spellcheck", started.correlation_id, processed=ids)
    await flow.outcome("b1", "nlp", started.correlation_id, processed=ids)
    assert (await flow.state("b1")).active_run is None
    clock.set(TRUE)
    clock.advance(24 * 3600)  # a whole day later
    out = await flow.request("b1", "cj_assessment")
    denials = [m["value"]["data"]["denial_reason"] for m in out if m["topic"] == Topic.PIPELINE_DENIED.value]
    assert not denials, f"a day after the correction the request is denied: {denials}"


# -- held ----------------------------------------------------------------------------------


async def test_completion_after_a_backward_step_has_no_negative_duration() -> None:
    """Held: run accepted at AHEAD, outcomes applied after the clock stepped back a year:
    the run completes exactly once, ``processing_duration_seconds`` and every phase's
    ``duration_seconds`` are >= 0 (clamped), and the batch is ready again."""
    clock = StepClock(AHEAD)
    flow = _flow(clock)
    ids = await flow.ready("b1")
    started = await flow.start("b1", "nlp")
    clock.set(TRUE)
    await flow.outcome("b1", "spellcheck", started.correlation_id, processed=ids)
    clock.set(TRUE - timedelta(days=30))  # and again backwards
    await flow.outcome("b1", "nlp", started.correlation_id, processed=ids)
    (done,) = _published(flow, Topic.PIPELINE_COMPLETED.value)
    assert done["final_status"] == "completed_successfully"
    assert done["processing_duration_seconds"] >= 0
    assert all(r["duration_seconds"] >= 0 for r in done["phase_results"].values())
    state = await flow.state("b1")
    assert state.active_run is None
    assert state.status.value == "ready_for_pipeline_execution"


async def test_forward_jump_of_years_completes_the_run_exactly_once() -> None:
    """Held: the clock jumps forward 5 years while a run is active; hourly sweeps re-send
    then time out the phase; the run completes exactly once; a late outcome changes
    nothing; a new run is accepted."""
    clock = StepClock(TRUE)
    flow = _flow(clock)
    ids = await flow.ready("b1")
    started = await flow.start("b1", "nlp")
    clock.advance(5 * 365 * 86400)
    for _ in range(6):
        await flow.rt.expire_overdue()
        clock.advance(3601)
    out = await flow.outcome("b1", "spellcheck", started.correlation_id, processed=ids)
    assert out == []
    completions = _published(flow, Topic.PIPELINE_COMPLETED.value)
    assert len(completions) == 1
    assert completions[0]["final_status"] == "failed_critically"
    again = await flow.start("b1", "nlp")
    assert again.run_id != started.run_id


async def test_sweep_after_a_backward_step_then_outcome_completes_once() -> None:
    """Held: deadline passes at the true time, clock steps back 10 minutes (before the
    deadline), a sweep finds nothing; the clock moves forward past the deadline again,
    sweeps re-send; the outcomes then complete the run exactly once."""
    clock = StepClock(TRUE)
    flow = _flow(clock, max_resends=1)
    ids = await flow.ready("b1")
    started = await flow.start("b1", "nlp")
    clock.advance(3601)
    assert await flow.rt.expire_overdue()  # re-sent once
    clock.set(TRUE + timedelta(seconds=3000))  # back before the first deadline
    assert await flow.rt.expire_overdue() == []
    await flow.outcome("b1", "spellcheck", started.correlation_id, processed=ids)
    await flow.outcome("b1", "nlp", started.correlation_id, processed=ids)
    completions = _published(flow, Topic.PIPELINE_COMPLETED.value)
    assert len(completions) == 1
    assert completions[0]["final_status"] == "completed_successfully"
