"""Who asked (issue 15.3): an operator's command carries ``requested_by`` onto every transition
log row it makes; messages carry none. A republish of parked outbox rows is decided like any
operator command and recorded on the batch's log."""

from __future__ import annotations

from datetime import timedelta

import pytest

from pipeline_state import ArchiveBatch, InMemoryStore, ManualClock, PipelineService
from pipeline_state._commands import Command, RepublishOutbox
from pipeline_state.errors import BadCommandError, BatchNotFoundError
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes


async def _ready(service: PipelineService, env: HuleEduEnvelopes, batch_id: str) -> None:
    await service.handle_message(*env.register(batch_id, items=1))
    await service.handle_message(*env.provisioned(batch_id, env.item_ids(batch_id, 1)))


async def test_an_operator_command_writes_who_asked_on_its_log_rows() -> None:
    store = InMemoryStore()
    service, env = PipelineService(store), HuleEduEnvelopes()
    await _ready(service, env, "b1")

    command = Command(ArchiveBatch("b1"), "archive-1", "corr-1", requested_by="alice")
    result = await service.handle(command, topic="operator.ArchiveBatch")

    assert result.label == "applied"
    rows = store.transitions("b1")
    assert [(r.trigger, r.requested_by) for r in rows] == [
        ("register", None),
        ("provision_guest", None),
        ("archive", "alice"),
    ]
    assert Command(ArchiveBatch("b1"), "e", "c").requested_by is None  # positional use unchanged


async def test_republish_requeues_parked_rows_and_logs_a_move_that_keeps_progress_time() -> None:
    clock = ManualClock()
    store = InMemoryStore()
    service, env = PipelineService(store, clock=clock), HuleEduEnvelopes()
    await _ready(service, env, "b1")
    (row,) = await store.claim(clock.now())
    await store.mark_failed(row.id, "down", clock.now(), retry_at=clock.now() + timedelta(hours=1), park=True)
    before = await service.get_batch("b1")
    clock.advance(60)

    payload = RepublishOutbox("b1", (row.message.event_id, row.message.event_id))
    result = await service.handle(Command(payload, "rp-1", "c", requested_by="dave"), topic="operator.x")

    assert result.decision is not None
    # An operator's republish un-parks (only rows still parked), it is no phase re-send.
    assert (result.decision.unpark, result.decision.resend) == ((row.message.event_id,), ())
    after = await service.get_batch("b1")
    assert (after.status, after.version, after.updated_at) == (
        before.status,
        before.version + 1,
        before.updated_at,
    )
    assert await store.parked() == []
    (requeued,) = await store.claim(clock.now())
    assert (requeued.message.event_id, requeued.attempts) == (row.message.event_id, 0)
    last = store.transitions("b1")[-1]
    assert (last.trigger, last.source, last.dest, last.requested_by) == (
        "republish_outbox",
        "ready_for_pipeline_execution",
        "ready_for_pipeline_execution",
        "dave",
    )
    again = await service.handle(Command(payload, "rp-1", "c", requested_by="dave"), topic="operator.x")
    assert again.duplicate


async def test_a_second_operator_s_republish_never_delivers_a_row_again() -> None:
    """Was a defect (found by an attack on ``outbox republish`` racing ``serve``): Bob read the
    row as parked, Alice's republish applied and the relay published it, then Bob's (another
    event id: the batch's version had moved) re-queued the *published* row and the
    completion went out twice. Now a republish re-queues only rows still parked."""
    clock = ManualClock()
    store = InMemoryStore()
    service, env = PipelineService(store, clock=clock), HuleEduEnvelopes()
    await _ready(service, env, "b1")
    (row,) = await store.claim(clock.now())
    await store.mark_failed(row.id, "down", clock.now(), retry_at=clock.now() + timedelta(hours=1), park=True)
    payload = RepublishOutbox("b1", (row.message.event_id,))

    alice = await service.handle(Command(payload, "rp-alice", "c", requested_by="alice"), topic="operator.x")
    (requeued,) = await store.claim(clock.now())
    await store.mark_published([requeued.id], clock.now())
    bob = await service.handle(Command(payload, "rp-bob", "c", requested_by="bob"), topic="operator.x")

    assert (alice.label, bob.label) == ("applied", "applied")  # both asked; the log says so
    assert await store.claim(clock.now() + timedelta(days=1)) == []
    assert await store.pending_count() == 0
    assert [r.requested_by for r in store.transitions("b1")[-2:]] == ["alice", "bob"]


async def test_republish_needs_a_known_batch_and_at_least_one_row() -> None:
    service, env = PipelineService(InMemoryStore()), HuleEduEnvelopes()
    with pytest.raises(BatchNotFoundError):
        await service.handle(Command(RepublishOutbox("nope", ("x",)), "e1", "c"), topic="operator.x")
    await _ready(service, env, "b1")
    with pytest.raises(BadCommandError, match="names no outbox row"):
        await service.handle(Command(RepublishOutbox("b1", ()), "e2", "c"), topic="operator.x")
