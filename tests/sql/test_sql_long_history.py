"""One batch with many archived runs (a client re-requesting a pipeline whose
phases are all done: each request is a run that completes at once)."""

from __future__ import annotations

import time
import uuid
from typing import Any

from sqlalchemy import text

from pipeline_state import InMemoryBus, ManualClock, OutboxRelay, PipelineService
from pipeline_state._snapshot import snapshot
from pipeline_state.profiles.huleedu.events import Topic
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes

RUNS = 60


async def test_many_runs_on_one_batch_archive_in_order_and_a_real_run_still_completes_once(
    make_store: Any,
) -> None:
    store = await make_store()
    clock = ManualClock()
    service, bus = PipelineService(store, clock=clock), InMemoryBus()
    relay = OutboxRelay(store, bus, clock)
    env = HuleEduEnvelopes()
    items = env.item_ids("b", 2)
    first = str(uuid.uuid4())
    for delivery in (
        env.register("b", items=2),
        env.provisioned("b", items),
        env.request("b", "nlp", correlation_id=first),
        env.outcome("b", "spellcheck", first, processed=items),
        env.outcome("b", "nlp", first, processed=items),
    ):
        clock.advance(1)
        await service.handle_message(*delivery)
    started = time.monotonic()
    for _ in range(RUNS - 1):  # every phase done already: each run completes at once
        clock.advance(1)
        result = await service.handle_message(*env.request("b", "nlp", correlation_id=str(uuid.uuid4())))
        assert result.decision is not None
        assert result.decision.run_id is not None
    assert time.monotonic() - started < 15
    await relay.drain()

    shown = await service.get_batch("b")
    history = shown.history
    assert len(history) == RUNS
    assert [r.accepted_at for r in history] == sorted(r.accepted_at for r in history)
    assert len({r.run_id for r in history}) == RUNS
    completions = bus.messages(Topic.PIPELINE_COMPLETED.value)
    assert sorted(m.value["data"]["run_id"] for m in completions) == sorted(r.run_id for r in history)
    view = snapshot(shown)
    assert len(view["history"]) == RUNS
    assert view["active_run"] is None
    async with store.engine.connect() as conn:
        seqs = (await conn.execute(text("SELECT seq FROM runs WHERE batch_id = 'b' ORDER BY seq"))).scalars()
        assert list(seqs) == list(range(RUNS))

    # A run with a phase to do: dispatched once, completes once, archived last.
    corr = str(uuid.uuid4())
    sent = bus.count()
    await service.handle_message(*env.request("b", "ai_feedback", correlation_id=corr))
    await relay.drain()
    [command] = bus.messages(Topic.AI_FEEDBACK.value)
    assert command.value["correlation_id"] == corr
    await service.handle_message(*env.outcome("b", "ai_feedback", corr, processed=items))
    await relay.drain()
    done = [m for m in bus.messages(since=sent) if m.topic == Topic.PIPELINE_COMPLETED.value]
    assert len(done) == 1
    assert done[0].value["data"]["final_status"] == "completed_successfully"
    last = (await store.history("b"))[-1]
    assert last.correlation_id == corr
    assert len(await store.history("b")) == RUNS + 1
