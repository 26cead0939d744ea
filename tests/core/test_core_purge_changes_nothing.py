"""random stories of runs on one batch, with redeliveries (the same envelope,
or an outcome retried under a fresh event id) and inbox purges between any two steps,
compared with the same story without the purges. Purging must change nothing a story
decides: the same history (run statuses, phase statuses), the same completions, no event id
published twice. Outcomes under lost correlation ids are kept below ``ALIASES_KEPT`` per
batch (past that, see ``test_core_aliases_kept.py``); only accepted requests are
redelivered (a denied one is documented to be decided again)."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline_state import InMemoryBus, InMemoryStore, ManualClock, OutboxRelay, PipelineService
from pipeline_state.ports import Retention, purge_expired
from pipeline_state.profiles.huleedu.events import Topic
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes

DAY = 86_400.0

Step = tuple[str, Any]


@st.composite
def stories(draw: st.DrawFn) -> list[Step]:
    """Steps: ("deliver", envelope) | ("again", index of an earlier delivery, fresh id?) |
    ("purge", None). Runs use ``nlp`` (spellcheck, nlp) or ``ai_feedback``."""
    env = HuleEduEnvelopes()
    ids = env.item_ids("b1", 2)
    steps: list[Step] = [("deliver", env.register("b1", items=2)), ("deliver", env.provisioned("b1", ids))]
    lost = 0
    for _ in range(draw(st.integers(1, 4))):
        corr = str(uuid.UUID(int=len(steps)))  # of this run only
        pipeline = draw(st.sampled_from(["nlp", "ai_feedback"]))
        steps.append(("request", env.request("b1", pipeline, correlation_id=corr)))
        phases = ["spellcheck", "nlp"] + (["ai_feedback"] if pipeline == "ai_feedback" else [])
        for phase in phases:
            status = draw(st.sampled_from(["completed_successfully", "failed_critically"]))
            use = corr
            if lost < 8 and draw(st.booleans()):
                lost += 1
                use = str(uuid.UUID(int=2**65 + lost))  # a fresh lost id each time
            if status == "completed_successfully":
                outcome = env.outcome("b1", phase, use, processed=ids)
            else:
                outcome = env.outcome("b1", phase, use, failed=ids, status=status)
            steps.append(("deliver", outcome))
            for _ in range(draw(st.integers(0, 2))):
                kind = draw(st.sampled_from(["again", "again_fresh", "purge"]))
                if kind == "purge":
                    steps.append(("purge", None))
                else:
                    steps.append((kind, draw(st.integers(0, len(steps) - 1))))
    return steps


async def _play(steps: list[Step], *, purge: bool) -> tuple[list[Any], Counter[str], int]:
    clock = ManualClock(datetime(2025, 3, 1, tzinfo=UTC))
    store = InMemoryStore()
    service, bus = PipelineService(store, clock=clock), InMemoryBus()
    relay = OutboxRelay(store, bus, clock)
    delivered: list[tuple[str, dict[str, Any]] | None] = []
    for kind, value in steps:
        clock.advance(1)
        envelope: tuple[str, dict[str, Any]] | None = None
        if kind in ("deliver", "request"):
            envelope = value
            result = await service.handle_message(*value)
            if kind == "request" and result.label != "applied":
                envelope = None  # denied (a run still active): never redelivered
        elif kind in ("again", "again_fresh"):
            earlier = delivered[value]
            if earlier is not None:
                topic, body = earlier
                if kind == "again_fresh" and "outcome" in topic:  # a worker's retry
                    body = {**body, "event_id": str(uuid.uuid5(uuid.NAMESPACE_OID, body["event_id"] + "x"))}
                await service.handle_message(topic, body)
        else:
            clock.advance(31 * DAY)
            if purge:
                await purge_expired(store, Retention(), clock.now())
        delivered.append(envelope)
        await relay.drain()
    state = await service.get_batch("b1")
    shape = [
        (r.pipeline_name, r.status.value, tuple((p.name, p.status.value) for p in r.phases))
        for r in state.runs()
    ]
    published = Counter(m.event_id for m in bus.messages())
    return shape, published, len(bus.messages(Topic.PIPELINE_COMPLETED.value))


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stories())
async def test_purges_change_nothing_a_story_decides(steps: list[Step]) -> None:
    kept = await _play(steps, purge=False)
    purged = await _play(steps, purge=True)
    assert purged[0] == kept[0]
    assert purged[2] == kept[2]
    assert [e for e, c in purged[1].items() if c > 1] == []
