"""``record_refusal``: a command the batch's state refuses is recorded under its event id, so
a repeat of that id (a client's idempotency key) is a duplicate and never applies to a
state the first attempt did not see; without it (the default) a refusal records nothing."""

from __future__ import annotations

import pytest
from core_flow import Flow

from pipeline_state import CancelRun, IllegalTransitionError
from pipeline_state._refusal import RESULT_LIMIT, RecordedRefusal, read_refusal, refusal_result
from pipeline_state.errors import BatchNotFoundError, UnknownPipelineError


async def test_a_recorded_refusal_makes_the_repeat_a_duplicate_that_changes_nothing(flow: Flow) -> None:
    service = flow.rt.service
    await flow.ready("b1")
    before = await flow.state("b1")
    with pytest.raises(IllegalTransitionError):
        await service.execute(CancelRun("b1"), event_id="op-1", record_refusal=True)
    entry = await service.store.inbox_entry("op-1")
    assert entry is not None
    assert entry.result == (
        "rejected:IllegalTransitionError?lifecycle=run&state=ready_for_pipeline_execution&trigger=cancel"
    )
    assert await flow.state("b1") == before  # the batch itself is untouched

    started = await flow.start("b1", "nlp")
    again = await service.execute(CancelRun("b1"), event_id="op-1", record_refusal=True)
    assert again.duplicate
    state = await flow.state("b1")
    assert state.active_run is not None
    assert state.active_run.correlation_id == started.correlation_id
    assert state.version > before.version  # moved by the request only


async def test_without_it_a_refusal_records_nothing_and_the_id_applies_later(flow: Flow) -> None:
    service = flow.rt.service
    await flow.ready("b1")
    with pytest.raises(IllegalTransitionError):
        await service.execute(CancelRun("b1"), event_id="op-2")
    assert await service.store.inbox_entry("op-2") is None
    await flow.start("b1", "nlp")
    applied = await service.execute(CancelRun("b1"), event_id="op-2")
    assert not applied.duplicate
    assert (await flow.state("b1")).active_run is None


async def test_a_refusal_on_an_unknown_batch_is_recorded_and_the_batch_can_still_register(
    flow: Flow,
) -> None:
    service = flow.rt.service
    with pytest.raises(BatchNotFoundError):
        await service.execute(CancelRun("ghost"), event_id="op-3", record_refusal=True)
    entry = await service.store.inbox_entry("op-3")
    assert entry is not None
    assert (entry.batch_id, entry.result) == ("ghost", "rejected:BatchNotFoundError")
    await flow.ready("ghost")  # the inbox entry holds no state: registration goes on as usual
    assert (await flow.state("ghost")).status.value == "ready_for_pipeline_execution"
    assert service.counters["refused"] == 1


def test_a_recorded_refusal_keeps_what_fits_and_never_cuts_a_value() -> None:
    """The result names the error and what it refused, URL-encoded; a value that would not
    fit in the result column is left out whole, and what is kept reads back exactly."""
    short = refusal_result(IllegalTransitionError("run", "completed", "cancel&x=1"))
    assert read_refusal(short) == RecordedRefusal(
        "IllegalTransitionError", {"lifecycle": "run", "state": "completed", "trigger": "cancel&x=1"}
    )
    long = refusal_result(UnknownPipelineError("p" * 300, kind="phase"))
    assert len(long) <= RESULT_LIMIT
    assert read_refusal(long) == RecordedRefusal("UnknownPipelineError", {"kind": "phase"})
    bare = refusal_result(BatchNotFoundError("b1"))
    assert bare == "rejected:BatchNotFoundError"
    assert read_refusal(bare) == RecordedRefusal("BatchNotFoundError", {})
    assert read_refusal("applied") is None
