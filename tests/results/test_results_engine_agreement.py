"""What a reader of the results read model sees against what the engine decided.

The real engine (``InMemoryRuntime``) runs the batch; the results service consumes every
topic it subscribes to that the engine publishes (registrations, phase commands, pruned-phase
notices, completions) and the same phase-outcome envelopes the engine is handed, as the
result aggregator does. Each test then compares the read model with the engine's own
decision.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from pipeline_state import CancelRun
from pipeline_state._commands import RecordPhaseCompletion
from pipeline_state.errors import BatchNotFoundError, ItemMismatchError
from pipeline_state.ports import OutboxMessage
from pipeline_state.profiles.huleedu.events import Topic
from pipeline_state.profiles.huleedu.results import ResultsQueries
from pipeline_state.profiles.huleedu.results.projection import DISPATCH_TOPICS
from tests.results_platform import ResultsPlatform

COMPLETED = Topic.PIPELINE_COMPLETED.value

pytestmark = pytest.mark.timeout(60)


class Platform(ResultsPlatform):
    """The engine and the results consumer beside it (in memory), with the two reads the
    tests compare."""

    async def engine_status(self, batch_id: str) -> str:
        snap = await self.rt.snapshot(batch_id)
        return str(snap["status"])

    async def view(self, batch_id: str) -> dict[str, Any]:
        view = await self.queries.batch_json(batch_id)
        assert view is not None
        return view


@pytest.fixture
def p() -> Platform:
    return Platform()


def _topics(out: list[dict[str, Any]]) -> list[str]:
    return [m["topic"] for m in out]


# -- an outcome with a lost correlation id, after the run completed -------------------------------


async def test_lost_correlation_outcome_redelivered_after_completion_keeps_the_final_status(
    p: Platform,
) -> None:
    """Was a defect (fixed): the run completed (engine: batch ready, no active run); the worker
    then re-sent its last outcome under a fresh event id, with its correlation id lost (a new
    UUID), stamped after the completion. The engine ignores it, yet the batch (and its class
    summary) showed ``processing`` for ever, with a phase ``in_progress`` no run has. Now a
    run in progress is known from the engine's dispatches: the outcome of a phase never
    dispatched is kept but not shown, and the batch keeps the run's final status."""
    ids = await p.ready_batch("b1")
    corr = await p.start("b1", "cj_assessment")
    p.rt.clock.advance(2)
    await p.outcome("b1", "spellcheck", corr, processed=ids)
    p.rt.clock.advance(2)
    out = await p.outcome("b1", "cj_assessment", corr, processed=ids)
    assert COMPLETED in _topics(out)
    assert (await p.view("b1"))["status"] == "completed_successfully"

    p.rt.clock.advance(5)
    lost = str(uuid.uuid4())
    again = await p.outcome("b1", "cj_assessment", lost, processed=ids)
    assert again == []  # the engine: nothing emitted
    assert await p.engine_status("b1") == "ready_for_pipeline_execution"

    view = await p.view("b1")
    klass = await p.queries.class_json("class-r")
    assert klass is not None
    assert (view["status"], view["in_progress"], klass["batches_by_status"]) == (
        "completed_successfully",
        [],
        {"completed_successfully": 1},
    ), "the read model shows a run in progress the engine never had"


async def test_lost_correlation_final_outcome_the_engine_applied_shows_the_completed_run(
    p: Platform,
) -> None:
    """Was a defect (fixed): the final outcome of a run carried a lost correlation id; the
    engine applied it to the active run (``correlation_mismatch``) and completed the run, the
    worker's clock one second ahead of the engine's. The outcome, kept under its foreign
    correlation id and newer than the completion, made the batch show ``processing`` until
    some later run completed. Now it has no dispatch, so it is not shown: the batch shows the
    run's final status."""
    ids = await p.ready_batch("b2")
    corr = await p.start("b2", "cj_assessment")
    p.rt.clock.advance(2)
    await p.outcome("b2", "spellcheck", corr, processed=ids)
    p.rt.clock.advance(2)
    out = await p.outcome("b2", "cj_assessment", str(uuid.uuid4()), processed=ids, stamp_offset=1.0)
    assert COMPLETED in _topics(out)  # the engine applied it and completed the run
    assert await p.engine_status("b2") == "ready_for_pipeline_execution"
    view = await p.view("b2")
    assert (view["status"], view["in_progress"]) == ("completed_successfully", []), view["in_progress"]


async def test_outcome_with_the_run_correlation_stamped_after_completion_is_dropped(p: Platform) -> None:
    """Held: the same late redelivery with the run's own correlation id is dropped (the run is
    completed): the batch keeps its final status."""
    ids = await p.ready_batch("b3")
    corr = await p.start("b3", "cj_assessment")
    p.rt.clock.advance(2)
    await p.outcome("b3", "spellcheck", corr, processed=ids)
    p.rt.clock.advance(2)
    await p.outcome("b3", "cj_assessment", corr, processed=ids, stamp_offset=1.0)
    p.rt.clock.advance(5)
    assert await p.outcome("b3", "cj_assessment", corr, processed=ids[:1], failed=ids[1:]) == []
    view = await p.view("b3")
    assert (view["status"], view["in_progress"]) == ("completed_successfully", [])
    assert view["phases"]["cj_assessment"]["status"] == "completed_successfully"


async def test_outcome_for_a_batch_the_engine_does_not_know_is_not_a_batch(p: Platform) -> None:
    """Was a defect (fixed): an outcome for a batch that was never registered (the engine
    applies nothing: it waits, then dead-letters) created a read model that said
    ``processing``. Now a read model of worker outcomes alone is not a batch: the query
    answers it as unknown (the route's 404), and no class or teacher listing shows it."""
    await p.deliver(*p.env.outcome("ghost", "spellcheck", str(uuid.uuid4()), processed=["x1"]))
    snap = None
    try:
        snap = await p.rt.snapshot("ghost")
    except BatchNotFoundError:
        snap = None
    assert snap is None or snap.get("status") is None
    view = await p.queries.batch_json("ghost")
    assert view is None or view["status"] != "processing", view
    assert view is None
    assert await p.queries.batch("ghost") is None
    stored = await p.store.load("ghost")
    assert stored is not None
    assert not stored.is_known


# -- outcomes the engine refused or ignored, while the run is active ---------------------------------


async def test_repeat_outcome_the_engine_ignored_does_not_override_the_phase(
    p: Platform,
) -> None:
    """Was a defect (fixed): spellcheck completed successfully (the engine applied it) while
    cj_assessment ran; the spellcheck worker then sent a repeat under a fresh event id, later,
    saying ``failed_critically``. The engine ignores it (``duplicate_outcome``), but the later
    repeat won and spellcheck showed ``failed``. Now the earliest outcome of a phase in a run
    wins, as the engine applies the first: spellcheck shows completed successfully."""
    ids = await p.ready_batch("b4")
    corr = await p.start("b4", "cj_assessment")
    p.rt.clock.advance(2)
    await p.outcome("b4", "spellcheck", corr, processed=ids)
    p.rt.clock.advance(2)
    before = await p.rt.snapshot("b4")
    assert await p.outcome("b4", "spellcheck", corr, failed=ids, status="failed_critically") == []
    assert await p.rt.snapshot("b4") == before  # the engine changed nothing
    view = await p.view("b4")
    assert view["status"] == "processing"
    assert view["phases"]["spellcheck"]["status"] == "completed_successfully", view["phases"]


async def test_outcome_naming_more_items_than_were_sent_is_not_shown(p: Platform) -> None:
    """Was a defect (fixed): an outcome naming essays never sent to the phase is refused by
    the engine (``ItemMismatchError``: it changes nothing), yet the batch of 3 essays showed
    spellcheck with 50 successful essays. Now an outcome is shown only when its figures fit
    the items the engine's dispatch sent the phase: the refused figures are not shown."""
    ids = await p.ready_batch("b5")
    corr = await p.start("b5", "cj_assessment")
    p.rt.clock.advance(2)
    before = await p.rt.snapshot("b5")
    forged = [f"forged-{i}" for i in range(50)]
    p.env.timestamp = p.rt.clock.now()
    topic, envelope = p.env.outcome("b5", "spellcheck", corr, processed=forged)
    refused = False
    try:
        await p.rt.deliver(topic, envelope)
    except ItemMismatchError:  # the engine refuses it; the orchestrator's consumer dead-letters it
        refused = True
    await p.results.handle_message(topic, envelope)  # the result aggregator consumes the same record
    snap = await p.rt.snapshot("b5")
    assert refused, "the engine applied the forged outcome"
    assert snap == before
    assert ids
    view = await p.view("b5")
    shown = view["phases"].get("spellcheck")
    assert shown is None or shown["successful"] <= len(ids), (f"engine refused={refused}", shown)


async def test_the_outcome_the_engine_applies_after_a_refused_one_is_shown(p: Platform) -> None:
    """Held: a worker first sends an outcome naming 50 essays for a phase sent 3 (the engine
    refuses it), then the right one, later. The engine applies the second: the read model
    shows it (the refused one, though earlier, is not the one the engine applied), in
    whichever order the results consumer gets the two outcomes and the dispatch."""
    ids = await p.ready_batch("b12")
    corr = await p.start("b12", "cj_assessment")
    p.rt.clock.advance(1)
    p.env.timestamp = p.rt.clock.now()
    forged = p.env.outcome("b12", "spellcheck", corr, processed=[f"forged-{i}" for i in range(50)])
    with pytest.raises(ItemMismatchError):
        await p.rt.deliver(*forged)
    await p.results.handle_message(*forged)
    p.rt.clock.advance(1)
    await p.outcome("b12", "spellcheck", corr, processed=ids[:2], failed=ids[2:])
    snap = await p.rt.snapshot("b12")
    assert snap["active_run"]["phases"]["spellcheck"] == "completed_with_partial_success"
    view = await p.view("b12")
    assert view["status"] == "processing"
    assert view["phases"]["spellcheck"] == {
        "status": "completed_with_partial_success",
        "successful": 2,
        "failed": 1,
        "duration_seconds": None,
    }
    assert [o["phase"] for o in view["in_progress"]] == ["spellcheck"]


class LateDispatchPlatform(Platform):
    """The phase-command topics lag: the engine's dispatches reach the results consumer only
    on :meth:`release`, after the workers' outcomes."""

    def __init__(self) -> None:
        self.held: list[OutboxMessage] = []
        super().__init__()

    async def _on_bus(self, message: OutboxMessage) -> None:
        if message.topic in DISPATCH_TOPICS:
            self.held.append(message)
        else:
            await super()._on_bus(message)

    async def release(self) -> None:
        held, self.held = self.held, []
        for message in held:
            await self.results.handle_message(message.topic, dict(message.value))


async def test_outcomes_wait_for_their_dispatch_to_be_shown() -> None:
    """Held: the dispatch of a run reaches the results consumer after its first outcome. Until
    then the batch is registered with nothing in progress (the outcome is kept); once the
    dispatch is in, the batch is ``processing`` and shows the outcome."""
    p = LateDispatchPlatform()
    ids = await p.ready_batch("b13")
    corr = await p.start("b13", "nlp")
    p.rt.clock.advance(1)
    await p.outcome("b13", "spellcheck", corr, processed=ids)
    view = await p.view("b13")
    assert (view["status"], view["in_progress"], view["phases"]) == ("registered", [], {})
    await p.release()
    view = await p.view("b13")
    assert view["status"] == "processing"
    assert [(o["phase"], o["successful"]) for o in view["in_progress"]] == [("spellcheck", 3)]
    p.rt.clock.advance(1)
    await p.outcome("b13", "nlp", corr, processed=ids)
    await p.release()
    view = await p.view("b13")
    assert (view["status"], view["in_progress"]) == ("completed_successfully", [])


async def test_a_run_whose_phases_were_all_completed_before_completes_at_once(p: Platform) -> None:
    """Held: a request whose phases an earlier run completed is accepted and completes at once
    (no dispatch): the batch shows that run, not ``processing``, and its pruned phases stay
    completed."""
    ids = await p.ready_batch("b14")
    corr = await p.start("b14", "nlp")
    p.rt.clock.advance(1)
    await p.outcome("b14", "spellcheck", corr, processed=ids)
    p.rt.clock.advance(1)
    await p.outcome("b14", "nlp", corr, processed=ids)
    p.rt.clock.advance(1)
    await p.start("b14", "nlp")
    assert await p.engine_status("b14") == "ready_for_pipeline_execution"
    view = await p.view("b14")
    assert (view["status"], view["in_progress"]) == ("completed_successfully", [])
    assert len(view["runs"]) == 2
    assert view["completed_phases"] == ["spellcheck", "nlp"]


# -- operator actions: cancel, phase retry, recorded completion -----------------------------------


async def test_cancelled_run_late_outcomes_with_run_correlation_change_nothing(p: Platform) -> None:
    """Held: a run is cancelled; its spellcheck outcome arrives afterwards (the run's own
    correlation id, stamped later): the batch stays ``cancelled``."""
    ids = await p.ready_batch("b6")
    corr = await p.start("b6", "cj_assessment")
    p.rt.clock.advance(1)
    await p.rt.execute(CancelRun("b6", user_id="teacher-r", reason="stop"))
    p.rt.clock.advance(3)
    assert await p.outcome("b6", "spellcheck", corr, processed=ids) == []
    view = await p.view("b6")
    assert (view["status"], view["in_progress"]) == ("cancelled", [])


async def test_phase_retry_run_progress_and_result(p: Platform) -> None:
    """Held: after a run whose cj_assessment failed, ``RetryPhase`` starts a new run of that
    phase: the read model shows it in progress, then its result, and keeps the pruned
    spellcheck's earlier result."""
    from pipeline_state import RetryPhase

    ids = await p.ready_batch("b7")
    corr = await p.start("b7", "cj_assessment")
    p.rt.clock.advance(1)
    await p.outcome("b7", "spellcheck", corr, processed=ids)
    p.rt.clock.advance(1)
    await p.outcome("b7", "cj_assessment", corr, failed=ids, status="failed_critically")
    assert (await p.view("b7"))["status"] == "failed_critically"
    p.rt.clock.advance(1)
    await p.rt.execute(RetryPhase("b7", "cj_assessment", user_id="teacher-r"))
    snap = await p.rt.snapshot("b7")
    retry_corr = snap["active_run"]["correlation_id"]
    assert (await p.view("b7"))["status"] == "processing"  # the retry's dispatch
    p.rt.clock.advance(1)
    out = await p.outcome("b7", "cj_assessment", retry_corr, processed=ids[:2], failed=ids[2:])
    assert COMPLETED in _topics(out)
    view = await p.view("b7")
    assert view["status"] == "completed_with_failures"
    assert view["phases"]["spellcheck"]["status"] == "completed_successfully"
    assert view["phases"]["cj_assessment"]["status"] == "completed_with_partial_success"
    assert len(view["runs"]) == 2


async def test_operator_recorded_phase_completion_reaches_completed_phases(p: Platform) -> None:
    """Was a defect (fixed): a run failed at spellcheck; an operator then recorded spellcheck
    as completed outside the engine (``RecordPhaseCompletion`` on the idle batch), and the
    engine pruned it from the next run (``PhaseSkippedV1 already_completed``), which completed
    cj_assessment. No event reached the projection for the recorded phase: the batch kept
    spellcheck out of ``completed_phases`` next to a run that pruned it as done. Now the
    projection consumes the pruned-phase notice: spellcheck counts as completed from the run
    that pruned it on (its figures stay those of its last execution: none are invented)."""
    ids = await p.ready_batch("b8")
    corr = await p.start("b8", "cj_assessment")
    p.rt.clock.advance(1)
    await p.outcome("b8", "spellcheck", corr, failed=ids, status="failed_critically")
    assert (await p.view("b8"))["phases"]["spellcheck"]["status"] == "failed"
    p.rt.clock.advance(1)
    await p.rt.execute(RecordPhaseCompletion("b8", "spellcheck", success=True))
    p.rt.clock.advance(1)
    corr2 = str(uuid.uuid4())
    out = await p.deliver(
        *p.env.request("b8", "cj_assessment", requested_by="teacher-r", correlation_id=corr2)
    )
    skipped = [m["value"]["data"] for m in out if m["topic"] == Topic.PHASE_SKIPPED.value]
    assert [(s["phase_name"], s["skip_reason"]) for s in skipped] == [("spellcheck", "already_completed")]
    p.rt.clock.advance(1)
    out = await p.outcome("b8", "cj_assessment", corr2, processed=ids)
    assert COMPLETED in _topics(out)
    view = await p.view("b8")
    assert view["status"] == "completed_successfully"
    assert "spellcheck" in view["completed_phases"], (view["completed_phases"], view["phases"]["spellcheck"])
    assert view["completed_phases"] == ["spellcheck", "cj_assessment"]
    assert view["phases"]["spellcheck"] == {
        "status": "failed",
        "successful": 0,
        "failed": 3,
        "duration_seconds": 1.0,
    }


async def test_lost_correlation_outcome_after_archive_keeps_the_final_status(
    p: Platform,
) -> None:
    """Was a defect (fixed): the same late outcome with a lost correlation id, after the batch
    was archived (terminal: no run will ever complete again to hide it), made the batch show
    ``processing`` permanently, though the engine ignores it. Now it has no dispatch: the
    batch shows its last run's final status."""
    from pipeline_state import ArchiveBatch

    ids = await p.ready_batch("b9")
    corr = await p.start("b9", "nlp")
    p.rt.clock.advance(1)
    await p.outcome("b9", "spellcheck", corr, processed=ids)
    p.rt.clock.advance(1)
    await p.outcome("b9", "nlp", corr, processed=ids)
    await p.rt.execute(ArchiveBatch("b9"))
    assert await p.engine_status("b9") == "archived"
    p.rt.clock.advance(60)
    assert await p.outcome("b9", "nlp", str(uuid.uuid4()), processed=ids) == []
    assert await p.engine_status("b9") == "archived"
    assert (await p.view("b9"))["status"] == "completed_successfully"


class LaggingPlatform(Platform):
    """The completion topic lags: completions are held until :meth:`release`."""

    def __init__(self) -> None:
        self.held: list[OutboxMessage] = []
        super().__init__()

    async def _on_bus(self, message: OutboxMessage) -> None:
        if message.topic == COMPLETED:
            self.held.append(message)
        else:
            await super()._on_bus(message)

    async def release(self) -> None:
        held, self.held = self.held, []
        for message in held:
            await self.results.handle_message(message.topic, dict(message.value))


async def test_completion_delivered_after_the_next_runs_outcomes() -> None:
    """Held: the results consumer gets run A's completion only after run B's outcomes (the
    completion topic lags). Meanwhile the batch shows ``processing``; once the completions
    are in, it shows B's results with the phases A completed, and nothing in progress."""
    p = LaggingPlatform()
    ids = await p.ready_batch("b10")
    corr_a = await p.start("b10", "cj_assessment")
    p.rt.clock.advance(1)
    await p.outcome("b10", "spellcheck", corr_a, processed=ids)
    p.rt.clock.advance(1)
    await p.outcome("b10", "cj_assessment", corr_a, processed=ids[:2], failed=ids[2:])
    p.rt.clock.advance(1)
    corr_b = await p.start("b10", "nlp")
    p.rt.clock.advance(1)
    await p.outcome("b10", "nlp", corr_b, processed=ids[:1], failed=ids[1:])
    assert len(p.held) == 2
    assert (await p.view("b10"))["status"] == "processing"
    p.held.reverse()  # B's completion first, then A's
    await p.release()
    final = await p.view("b10")
    assert final["status"] == "completed_with_failures"
    assert [r["pipeline_name"] for r in final["runs"]] == ["cj_assessment", "nlp"]
    assert final["latest_run"]["pipeline_name"] == "nlp"
    assert final["phases"]["spellcheck"]["status"] == "completed_successfully"
    assert final["phases"]["cj_assessment"]["status"] == "completed_with_partial_success"
    assert (final["essays_succeeded"], final["essays_failed"]) == (1, 2)
    assert final["in_progress"] == []


async def test_timed_out_phase_late_outcome_keeps_the_engine_verdict(p: Platform) -> None:
    """Held: spellcheck times out (re-sent, then failed by the sweeper: the run completes
    ``failed_critically``); the worker's outcome then arrives late with the run's correlation
    id. The engine ignores it, and the read model keeps the run's failure."""
    ids = await p.ready_batch("b11")
    corr = await p.start("b11", "cj_assessment")
    for _ in range(20):
        p.rt.clock.advance(24 * 3600)
        await p.rt.expire_overdue()
        if await p.engine_status("b11") == "ready_for_pipeline_execution":
            break
    assert await p.engine_status("b11") == "ready_for_pipeline_execution"
    assert (await p.view("b11"))["status"] == "failed_critically"
    p.rt.clock.advance(1)
    assert await p.outcome("b11", "spellcheck", corr, processed=ids) == []
    view = await p.view("b11")
    assert (view["status"], view["in_progress"]) == ("failed_critically", [])
    assert view["phases"]["spellcheck"]["status"] == "failed"


# -- every recorded story ----------------------------------------------------------------------


def _recorded_stories() -> list[str]:
    from tests.golden.record import DATA_DIR

    return sorted(path.stem for path in DATA_DIR.glob("*.jsonl"))


@pytest.mark.parametrize("name", _recorded_stories())
async def test_recorded_stories_end_processing_exactly_where_the_engine_does(name: str) -> None:
    """Held: every golden wire recording (the demo's story, the directed stories and the
    seeded walks: stale and foreign correlation ids, early facts, deadlines, cancels, retries,
    archives, recorded completions) fed to the results service on every topic it consumes, in
    the recorded order: a batch is ``processing`` exactly when the engine ends with it
    ``processing_pipelines``, shows its latest completed run's final status otherwise, and a
    batch the engine does not have is not answered. (The old rule, outcomes newer than the
    latest completion, disagreed on five batches of these stories.)"""
    from tests.golden.record import DATA_DIR, load_lines
    from tests.golden.results import ResultsDriver, results_inputs

    driver = ResultsDriver()
    seen: set[str] = set()
    for line in results_inputs(name):
        data = line["message"]["data"]
        seen.add(str(data.get("batch_id") or data.get("entity_id")))
        await driver.handle(line)
    engine = load_lines(DATA_DIR / f"{name}.jsonl")[-1]["end"]["batches"]
    queries = ResultsQueries(driver.store)
    for batch_id in sorted(seen | set(engine)):
        view = await queries.batch_json(batch_id)
        if batch_id not in engine:
            assert view is None, (name, batch_id)
            continue
        if view is None:  # nothing of the batch reached the results service
            assert engine[batch_id] != "processing_pipelines", (name, batch_id)
            continue
        processing = engine[batch_id] == "processing_pipelines"
        assert (view["status"] == "processing") == processing, (name, batch_id, engine[batch_id], view)
        if not processing and view["latest_run"] is not None:
            assert view["status"] == view["latest_run"]["final_status"]
            assert view["in_progress"] == []
