"""An operator's reason for a cancel is recorded on the run's ``cancel`` row of the
transition log (the first 200 characters, the log's width); a reason no store can keep
(a NUL, more than the wire's free-text bound) is refused as a bad command, whatever route
the command came by."""

from __future__ import annotations

import pytest
from core_flow import Flow

from pipeline_state import CancelBatch, CancelRun, RetryPhase
from pipeline_state._wire import MAX_FREE_TEXT_LENGTH
from pipeline_state.errors import BadCommandError


def _cancel_rows(flow: Flow, batch_id: str) -> list[str | None]:
    return [
        r.note for r in flow.rt.store.transitions(batch_id) if r.entity == "run" and r.trigger == "cancel"
    ]


async def test_a_cancel_reason_is_noted_on_the_runs_cancel_row(flow: Flow) -> None:
    """Was a defect (fixed): ``run cancel --reason`` and the HTTP cancel's ``reason`` were
    documented as recorded, but the engine dropped them: they were in no state, log row or
    event."""
    await flow.ready("b1")
    await flow.start("b1", "nlp")
    await flow.rt.service.execute(CancelRun("b1", "alice", "worker 7 stuck since monday"))
    assert _cancel_rows(flow, "b1") == ["worker 7 stuck since monday"]


async def test_a_batch_cancel_notes_its_reason_on_the_active_runs_cancel(flow: Flow) -> None:
    await flow.ready("b1")
    await flow.start("b1", "nlp")
    await flow.rt.service.execute(CancelBatch("b1", "course withdrawn"))
    assert _cancel_rows(flow, "b1") == ["course withdrawn"]


async def test_a_long_reason_keeps_its_first_characters_and_no_reason_notes_nothing(flow: Flow) -> None:
    await flow.ready("b1")
    await flow.start("b1", "nlp")
    await flow.rt.service.execute(CancelRun("b1", "alice", "r" * 2_000))
    await flow.start("b1", "nlp")
    await flow.rt.service.execute(CancelRun("b1", "alice"))
    long_note, none = _cancel_rows(flow, "b1")
    assert long_note == "r" * 199 + "\u2026"
    assert none is None


@pytest.mark.parametrize("reason", ["a\x00b", "x" * (MAX_FREE_TEXT_LENGTH + 1), "\ud800"])
async def test_a_reason_no_store_can_keep_is_a_bad_command(flow: Flow, reason: str) -> None:
    await flow.ready("b1")
    started = await flow.start("b1", "nlp")
    with pytest.raises(BadCommandError, match="reason"):
        await flow.rt.service.execute(CancelRun("b1", "alice", reason))
    with pytest.raises(BadCommandError, match="reason"):
        await flow.rt.service.execute(RetryPhase("b1", "spellcheck", "alice", reason))
    state = await flow.state("b1")
    assert state.active_run is not None
    assert state.active_run.correlation_id == started.correlation_id
