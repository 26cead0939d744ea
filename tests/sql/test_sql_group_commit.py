"""Group commit against the real databases: concurrent ``handle_message`` calls on a SQL
store (SQLite and PostgreSQL) share units of work, and every accepted run still completes
exactly once, also when the callers race on one batch (two groups in flight lose
compare-and-sets to each other and fall back to one unit of work per call)."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Sequence
from typing import Any

from pipeline_state_sql import SqlStore
from sqlalchemy import event, text

from pipeline_state import HandleResult, InboundMessage, PipelineService, PipelineStateError
from pipeline_state.profiles.huleedu.events import Topic
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes

PHASES = ("spellcheck", "nlp", "cj_assessment", "ai_feedback")


def story(env: HuleEduEnvelopes, batch_id: str) -> list[InboundMessage]:
    """One batch from registration through a completed ``comprehensive`` run."""
    ids = env.item_ids(batch_id, 2)
    corr = str(uuid.uuid4())
    return [
        env.register(batch_id, items=2),
        env.provisioned(batch_id, ids),
        env.request(batch_id, "comprehensive", correlation_id=corr),
        *(env.outcome(batch_id, phase, corr, processed=ids) for phase in PHASES),
    ]


async def _caller(service: PipelineService, messages: Sequence[InboundMessage]) -> list[Any]:
    out: list[Any] = []
    for message in messages:
        try:
            out.append(await service.handle_message(*message))
        except PipelineStateError as exc:
            out.append(exc)
    return out


async def _outbox(store: SqlStore) -> Counter[str]:
    async with store.engine.connect() as conn:
        rows = await conn.execute(text("SELECT topic FROM outbox"))
        return Counter(topic for (topic,) in rows)


async def test_eight_callers_share_commits_and_every_run_completes_once(sql_store: SqlStore) -> None:
    env = HuleEduEnvelopes()
    stories = [story(env, f"g{n}") for n in range(8)]
    commits = 0

    def counted(*_: Any) -> None:
        nonlocal commits
        commits += 1

    event.listen(sql_store.engine.sync_engine, "commit", counted)
    service = PipelineService(sql_store)
    results = await asyncio.gather(*(_caller(service, s) for s in stories))
    event.remove(sql_store.engine.sync_engine, "commit", counted)

    assert all(isinstance(r, HandleResult) and not r.duplicate for rs in results for r in rs)
    assert commits < 56  # 56 calls, fewer units of work
    for n in range(8):
        batch = await service.get_batch(f"g{n}")
        assert batch.active_run is None
        assert len(batch.history) == 1
    assert (await _outbox(sql_store))[Topic.PIPELINE_COMPLETED.value] == 8


async def test_callers_racing_on_one_batch_apply_each_message_once(sql_store: SqlStore) -> None:
    env = HuleEduEnvelopes()
    messages = story(env, "race")
    service = PipelineService(sql_store)
    # Six callers deliver the same story at once (a redelivering transport, six times over).
    results = await asyncio.gather(*(_caller(service, messages) for _ in range(6)))

    applied = Counter(
        r.event_id for rs in results for r in rs if isinstance(r, HandleResult) and not r.duplicate
    )
    assert sorted(applied.values()) == [1] * len(messages)  # each message applied once
    for rs in results:  # every other delivery was answered as a duplicate or as early/ignored
        assert all(isinstance(r, HandleResult) for r in rs), rs
    batch = await service.get_batch("race")
    assert batch.active_run is None
    assert len(batch.history) == 1
    assert (await _outbox(sql_store))[Topic.PIPELINE_COMPLETED.value] == 1
