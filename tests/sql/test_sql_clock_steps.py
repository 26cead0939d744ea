"""Found by an attack: clocks that step or disagree, on SQLite and PostgreSQL, with two
"processes" (two stores on one database, each with its own clock, relay and service).

Were defects (fixed; the tests failed before): the rows of a process whose clock was a year
ahead, dead before publishing, were never claimed by the others (due time and lease end in
their future); a row that failed before a backward step was not retried for the size of
the step; ``stalled_runs`` hid a run last changed before a backward step. A due time or
lease end more than ``CLOCK_STEP_HORIZON_SECONDS`` (an hour) ahead now counts as passed,
and a batch changed that far ahead counts as stalled.

Held: a purge after a forward jump keeps pending rows, waiting facts and re-send rows; the
sweepers of two processes with skewed clocks complete a run once; control runs with the
clocks in step.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from pipeline_state import InMemoryBus, OutboxRelay, PipelineService
from pipeline_state.ports import Retention, purge_expired
from pipeline_state.profiles.huleedu.events import Topic
from pipeline_state.profiles.huleedu.profile import huleedu_profile
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes
from tests.step_clock import AHEAD, TRUE, StepClock

BEHIND = TRUE - timedelta(minutes=5)

pytestmark = pytest.mark.timeout(120)


class Proc:
    """One serve process: store, service, relay (attached for hand-off) and its own clock."""

    def __init__(self, store: Any, clock: StepClock, bus: InMemoryBus, **profile: Any) -> None:
        self.store, self.clock, self.bus = store, clock, bus
        self.service = PipelineService(store, profile=huleedu_profile(**profile), clock=clock)  # type: ignore[arg-type]
        self.relay = OutboxRelay(store, bus, clock)  # type: ignore[arg-type]
        store.attach_relay(self.relay.hand_off, clock)

    async def deliver(self, delivery: tuple[str, dict[str, Any]]) -> Any:
        return await self.service.handle_message(*delivery)


ENV = HuleEduEnvelopes()


async def _ready_and_request(proc: Proc, batch_id: str = "b1") -> tuple[list[str], str]:
    ids = ENV.item_ids(batch_id, 2)
    await proc.deliver(ENV.register(batch_id, items=2))
    await proc.deliver(ENV.provisioned(batch_id, ids))
    request = ENV.request(batch_id, "nlp", prompt_payload={"prompt_ref": "p"})
    result = await proc.deliver(request)
    assert result.label == "applied", result.label
    state = await proc.service.get_batch(batch_id)
    assert state.active_run is not None
    return ids, state.active_run.correlation_id


def _sent(bus: InMemoryBus, topic: str) -> list[str]:
    return [m.event_id for m in bus.messages(topic)]


# -- defects ------------------------------------------------------------------------------


async def test_rows_of_a_crashed_process_with_a_clock_ahead_are_claimed(make_store: Any) -> None:
    """Was a defect, fixed.

    Expected: process A (clock a year ahead) accepts a run and dies before its relay
    publishes the rows it leased; process B (true clock) claims them once A's lease (30 s)
    has run out in real time: within 15 minutes the spellcheck command is published.
    Before the fix: the rows carry ``claimed_until = AHEAD + 30 s`` (and ``available_at = AHEAD``) from
    A's clock; B's claim (``claimed_until <= now``, ``available_at <= now``) skips them for
    a year: the run's commands, and every later row of the batch, are never sent."""
    bus = InMemoryBus()
    a = Proc(await make_store(), StepClock(AHEAD), bus)
    b = Proc(await make_store(), StepClock(TRUE), bus)
    await _ready_and_request(a)
    # A dies here: its relay never runs.
    for _ in range(15):
        b.clock.advance(60)
        await b.relay.run_once()
        await b.relay.run_once()
    assert len(_sent(bus, Topic.SPELLCHECK.value)) == 1, (
        f"15 min later B published nothing of A's run; pending rows: {await b.store.pending_count()}"
    )


async def test_a_row_failed_before_a_backward_step_is_retried(make_store: Any) -> None:
    """Was a defect, fixed.

    Expected: a row whose publish failed is retried within ``max_backoff`` (60 s) of
    elapsed time; 15 minutes after NTP corrected the clock back by a year, the spellcheck
    command is out. Before the fix: ``mark_failed`` wrote ``available_at = AHEAD + 0.5 s``; the claim
    skips the row for a year and it holds back every later row of the batch."""
    bus = InMemoryBus()
    proc = Proc(await make_store(), StepClock(AHEAD), bus)
    bus.available = False
    await _ready_and_request(proc)
    await proc.relay.run_once()
    assert not bus.messages()
    proc.clock.set(TRUE)
    bus.available = True
    for _ in range(15):
        proc.clock.advance(60)
        await proc.relay.run_once()
        await proc.relay.run_once()
    assert len(_sent(bus, Topic.SPELLCHECK.value)) == 1, (
        f"15 min after the correction nothing went out; pending rows: {await proc.store.pending_count()}"
    )


async def test_stalled_runs_lists_a_run_last_changed_before_a_backward_step(make_store: Any) -> None:
    """Was a defect, fixed.

    Expected: an active run with no progress for a day of real time is listed by
    ``stalled_runs(now, older_than=3600)`` (the operator's way to find a wedged run), and
    its phase deadline (3,600 s) has fired. Before the fix: accepted while the clock was a year ahead,
    its ``updated_at``/``deadline_at`` are in the corrected clock's future: after a day of
    hourly sweeps the run is still active, not expired and not listed as stalled."""
    bus = InMemoryBus()
    proc = Proc(await make_store(), StepClock(AHEAD), bus)
    await _ready_and_request(proc)
    await proc.relay.drain()
    proc.clock.set(TRUE)
    for _ in range(24):
        proc.clock.advance(3600)
        await proc.service.expire_overdue()
    stalled = await proc.store.stalled_runs(proc.clock.now(), 3600)
    state = await proc.service.get_batch("b1")
    assert state.active_run is None or [r.batch_id for r in stalled] == ["b1"], (
        f"a day later: run active={state.active_run is not None}, stalled listing={stalled}"
    )


async def test_purge_after_a_forward_jump_keeps_pending_rows_waiting_facts_and_resend_rows(
    make_store: Any,
) -> None:
    """Held: the clock jumps ten years ahead while (1) a run's spellcheck command was
    published and its deadline pends, (2) an early fact waits, (3) a row is still pending
    (broker down). The purge keeps the re-send's row, the waiting fact's inbox entry and the
    pending row: the sweep re-sends the spellcheck command (same event id), the pending row
    goes out once the broker is back, the waiting fact applies when its batch registers."""
    bus = InMemoryBus()
    proc = Proc(await make_store(), StepClock(TRUE), bus)
    await _ready_and_request(proc)
    await proc.relay.drain()
    (cmd,) = _sent(bus, Topic.SPELLCHECK.value)
    early = ENV.provisioned("late", ENV.item_ids("late", 2))
    assert (await proc.deliver(early)).waiting
    bus.available = False
    await proc.deliver(ENV.register("b2", items=1))
    await proc.relay.run_once()
    pending = await proc.store.pending_count()
    assert pending >= 1
    proc.clock.advance(10 * 365 * 86400)
    await purge_expired(proc.store, Retention(), proc.clock.now())
    assert await proc.store.pending_count() == pending
    assert (await proc.store.inbox_entry(early[1]["event_id"])) is not None
    bus.available = True
    await proc.service.expire_overdue()
    for _ in range(5):
        proc.clock.advance(61)
        await proc.relay.run_once()
    assert _sent(bus, Topic.SPELLCHECK.value) == [cmd, cmd]
    assert await proc.store.pending_count() == 0
    await proc.deliver(ENV.register("late", items=2))
    assert await proc.store.count_waiting() == 0


async def test_sweeps_of_two_processes_with_skewed_clocks_complete_once(make_store: Any) -> None:
    """Held: A's clock is 2 h ahead of B's; B accepts a run; A's sweeps find its phase
    overdue at once and re-send then time it out while B applies the worker's outcome: the
    run completes exactly once, the batch is ready again, a redelivered outcome is ignored."""
    bus = InMemoryBus()
    a = Proc(await make_store(), StepClock(TRUE + timedelta(hours=2)), bus, max_resends=1)
    b = Proc(await make_store(), StepClock(TRUE), bus, max_resends=1)
    ids, corr = await _ready_and_request(b)
    await a.service.expire_overdue()
    outcome = ENV.outcome("b1", "spellcheck", corr, processed=ids)
    await b.deliver(outcome)
    for _ in range(3):
        a.clock.advance(3601)
        await a.service.expire_overdue()
    await b.deliver(outcome)
    await b.deliver(ENV.outcome("b1", "nlp", corr, processed=ids))
    for _ in range(10):
        await a.relay.run_once()
        await b.relay.run_once()
        a.clock.advance(61)
        b.clock.advance(61)
    completions = [m.value["data"] for m in bus.messages(Topic.PIPELINE_COMPLETED.value)]
    assert len({c["run_id"] for c in completions}) == 1
    assert len({m.event_id for m in bus.messages(Topic.PIPELINE_COMPLETED.value)}) == 1
    state = await b.service.get_batch("b1")
    assert state.active_run is None
    assert state.status.value == "ready_for_pipeline_execution"


async def test_control_synchronised_relays_publish_each_row_once(make_store: Any) -> None:
    """Held (control of the skewed-relays defect): the same story with both clocks true:
    B's claim skips the rows leased to A, each message is published once."""
    bus = InMemoryBus()
    a = Proc(await make_store(), StepClock(TRUE), bus)
    b = Proc(await make_store(), StepClock(TRUE), bus)
    await _ready_and_request(a)
    for _ in range(6):
        await b.relay.run_once()
        await a.relay.run_once(claim=False)
    sent = [m.event_id for m in bus.messages()]
    assert _sent(bus, Topic.SPELLCHECK.value)
    assert len(sent) == len(set(sent))


async def test_control_rows_of_a_crashed_process_with_a_true_clock_are_claimed(make_store: Any) -> None:
    """Held (control of the crashed-process defect): A with a true clock dies holding its
    lease; B claims and publishes A's rows once the 30 s lease ran out."""
    bus = InMemoryBus()
    a = Proc(await make_store(), StepClock(TRUE), bus)
    b = Proc(await make_store(), StepClock(TRUE), bus)
    await _ready_and_request(a)
    for _ in range(5):
        b.clock.advance(60)
        await b.relay.run_once()
        await b.relay.run_once()
    assert len(_sent(bus, Topic.SPELLCHECK.value)) == 1
