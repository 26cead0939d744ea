"""The core end to end through the SQL store: the same deliveries give the same messages,
states and history as the in-memory runtime, with the relay publishing to an InMemoryBus."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import attrs
from pipeline_state_sql import SqlStore

from pipeline_state import (
    BatchStatus,
    CancelBatch,
    InMemoryBus,
    InMemoryRuntime,
    ManualClock,
    OutboxRelay,
    PipelineService,
)
from pipeline_state._snapshot import snapshot
from pipeline_state.ports import OutboxMessage, RunStatus
from pipeline_state.profiles.huleedu.events import Topic
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes

C1 = "11111111-1111-4111-8111-111111111111"
C2 = "22222222-2222-4222-8222-222222222222"
C3 = "33333333-3333-4333-8333-333333333333"

Script = list[tuple[str, Any]]


def _script() -> Script:
    """Deliveries (and one operator command) with fixed ids, so both runs see the same input."""
    env = HuleEduEnvelopes()
    n = iter(range(1, 1000))

    def eid() -> str:
        return f"00000000-0000-4000-8000-{next(n):012d}"

    b1 = env.item_ids("b1", 3)
    b2 = env.item_ids("b2", 2)
    outcome_cj = env.outcome("b1", "cj_assessment", C1, processed=b1[:2], event_id=eid())
    return [
        ("msg", env.register("b1", items=3, event_id=eid())),
        ("msg", env.provisioned("b1", b1, event_id=eid())),
        ("msg", env.register("b2", items=2, group_id="class-9", event_id=eid())),
        ("msg", env.provisioned("b2", b2, event_id=eid())),
        ("msg", env.group_confirmed("b2", "class-9", b2, event_id=eid())),
        ("msg", env.request("b1", "comprehensive", correlation_id=C1, event_id=eid())),
        ("msg", env.request("b1", "nlp", event_id=eid())),  # denied: a run is active
        ("msg", env.outcome("b1", "spellcheck", C1, processed=b1[:2], failed=b1[2:], event_id=eid())),
        ("msg", outcome_cj),
        ("msg", outcome_cj),  # redelivered: no effect
        ("msg", env.outcome("b1", "nlp", C1, processed=b1[:2], event_id=eid())),
        ("msg", env.outcome("b1", "ai_feedback", C1, failed=b1[:2], event_id=eid())),
        ("msg", env.request("b1", "nlp", correlation_id=C2, event_id=eid())),  # all pruned
        ("msg", env.request("b1", "ai_feedback", correlation_id=C3, event_id=eid())),
        ("msg", env.outcome("b1", "ai_feedback", C3, processed=b1[:2], event_id=eid())),
        ("cancel", ("b2", eid())),
    ]


async def _run_sql(
    script: Script, store: SqlStore, clock: ManualClock, bus: InMemoryBus
) -> list[OutboxMessage]:
    service = PipelineService(store, clock=clock)
    relay = OutboxRelay(store, bus, clock)
    for kind, item in script:
        clock.advance(1.5)
        if kind == "msg":
            await service.handle_message(*item)
        else:
            await service.execute(CancelBatch(item[0]), event_id=item[1])
        await relay.drain()
    return bus.messages()


async def _run_memory(script: Script, rt: InMemoryRuntime) -> list[OutboxMessage]:
    for kind, item in script:
        rt.clock.advance(1.5)
        if kind == "msg":
            await rt.deliver(*item)
        else:
            await rt.execute(CancelBatch(item[0]), event_id=item[1])
    return rt.bus.messages()


def _event_id(message: OutboxMessage) -> str:
    return message.event_id


def _per_key(messages: list[OutboxMessage]) -> dict[str | None, list[str]]:
    out: dict[str | None, list[str]] = {}
    for m in messages:
        out.setdefault(m.key, []).append(m.event_id)
    return out


async def test_full_flow_matches_the_in_memory_runtime(sql_store: SqlStore) -> None:
    script = _script()
    bus = InMemoryBus()
    sql_clock = ManualClock()
    published = await _run_sql(script, sql_store, sql_clock, bus)
    rt = InMemoryRuntime()
    expected = await _run_memory(script, rt)

    # The same messages, and per key in the same order (across keys the relay may interleave).
    assert sorted(published, key=_event_id) == sorted(expected, key=_event_id)
    assert _per_key(published) == _per_key(expected)
    assert len(published) > 20
    completions = [m for m in published if m.topic == Topic.PIPELINE_COMPLETED.value]
    assert [m.value["data"]["final_status"] for m in completions] == [
        "failed_critically",
        "completed_successfully",
        "completed_successfully",
    ]
    assert await sql_store.pending_count() == 0

    for batch_id in ("b1", "b2"):
        stored = await sql_store.load(batch_id)
        assert stored is not None
        assert stored == await rt.store.load(batch_id)
        history = await sql_store.history(batch_id)
        assert history == await rt.store.history(batch_id)
        assert snapshot(attrs.evolve(stored, history=tuple(history))) == await rt.snapshot(batch_id)

    b1 = await sql_store.load("b1")
    assert b1 is not None
    assert b1.status is BatchStatus.READY_FOR_PIPELINE_EXECUTION
    assert b1.history == ()
    b1 = attrs.evolve(b1, history=tuple(await sql_store.history("b1")))
    assert [r.status for r in b1.history] == [
        RunStatus.FAILED_CRITICALLY,
        RunStatus.COMPLETED_SUCCESSFULLY,
        RunStatus.COMPLETED_SUCCESSFULLY,
    ]
    assert [s.batch_id for s in await sql_store.list_batches(BatchStatus.CANCELLED)] == ["b2"]
    # Runs by completion time: the window [start, end) picks the two later runs.
    first_done = b1.history[0].completed_at
    assert first_done is not None
    window = await sql_store.runs_completed_between(first_done + timedelta(microseconds=1), sql_clock.now())
    assert [(r.batch_id, r.seq, r.run.run_id) for r in window] == [
        ("b1", 1, b1.history[1].run_id),
        ("b1", 2, b1.history[2].run_id),
    ]
    # The transition log holds the moves of the batch, from registration to the last run.
    log = await sql_store.transitions("b1")
    batch_moves = [(t.source, t.dest) for t in log if t.entity == "batch"]
    assert batch_moves[:2] == [
        ("", "awaiting_content_validation"),
        ("awaiting_content_validation", "ready_for_pipeline_execution"),
    ]
    assert batch_moves[-1] == ("processing_pipelines", "ready_for_pipeline_execution")
    assert {t.correlation_id for t in log if t.run_id == b1.history[0].run_id} == {C1}
