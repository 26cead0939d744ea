"""Concurrent workers on PostgreSQL: interleaved outcomes for the same batches, at once.

Four workers (each a PipelineService on its own engine and connection pool) take shuffled
shares of every round of deliveries, including redeliveries of the same event id and copies
with a fresh event id, and run them concurrently. The final states must equal a serial
in-memory run of the same input, every run must complete exactly once (one
``BatchPipelineCompletedV1`` row per run id in the outbox), and no update may be lost.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import Counter
from typing import Any

import attrs
import pytest
from pipeline_state_sql import SqlStore, open_store
from pipeline_state_sql.schema import OUTBOX
from sqlalchemy import select

from pipeline_state import HandleResult, InMemoryStore, ManualClock, PipelineService
from pipeline_state.ports import Run, RunStatus
from pipeline_state.profiles.huleedu.events import Topic
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes

pytestmark = pytest.mark.postgres

BATCHES = [f"batch-{i}" for i in range(6)]
WORKERS = 4
Delivery = tuple[str, dict[str, Any]]


def _copy_with_fresh_id(delivery: Delivery) -> Delivery:
    topic, envelope = delivery
    return topic, {**envelope, "event_id": str(uuid.uuid4())}


def _plan(env: HuleEduEnvelopes) -> tuple[list[Delivery], list[list[Delivery]]]:
    """Setup deliveries (serial) and the rounds of outcomes (each round concurrent)."""
    setup: list[Delivery] = []
    spell, middle, final, again = [], [], [], []
    for batch_id in BATCHES:
        essays = env.item_ids(batch_id, 3)
        corr = str(uuid.uuid4())
        setup += [
            env.register(batch_id, items=3),
            env.provisioned(batch_id, essays),
            env.request(batch_id, "comprehensive", correlation_id=corr),
        ]
        spell.append(env.outcome(batch_id, "spellcheck", corr, processed=essays[:2], failed=essays[2:]))
        middle.append(env.outcome(batch_id, "cj_assessment", corr, processed=essays[:2]))
        middle.append(env.outcome(batch_id, "nlp", corr, processed=essays[:1], failed=essays[1:2]))
        final.append(env.outcome(batch_id, "ai_feedback", corr, processed=essays[:1]))
        again.append(env.request(batch_id, "nlp"))  # everything pruned: completes at once
    return setup, [spell, middle, final, again]


def _with_duplicates(round_: list[Delivery], *, fresh_copies: bool) -> list[Delivery]:
    out = []
    for delivery in round_:
        out += [delivery, delivery]  # a redelivery of the same event id
        if fresh_copies:
            out.append(_copy_with_fresh_id(delivery))  # the same outcome under a new id
    return out


def _without_command_ids(runs: list[Run]) -> list[Run]:
    """``runs`` with every phase's ``command_event_id`` blanked (compared apart)."""
    return [
        attrs.evolve(run, phases=tuple(attrs.evolve(p, command_event_id=None) for p in run.phases))
        for run in runs
    ]


async def _worker(service: PipelineService, share: list[Delivery]) -> list[HandleResult]:
    results = []
    for topic, envelope in share:
        results.append(await service.handle_message(topic, envelope))
        await asyncio.sleep(0)
    return results


async def test_concurrent_workers_equal_a_serial_run(pg: Any) -> None:
    env = HuleEduEnvelopes()
    setup, rounds = _plan(env)
    clock = ManualClock()

    serial_store = InMemoryStore()
    serial = PipelineService(serial_store, clock=clock)
    for delivery in setup + [d for round_ in rounds for d in round_]:
        await serial.handle_message(*delivery)

    stores: list[SqlStore] = [
        await open_store(pg.url, schema=pg.schema, upgrade=(i == 0)) for i in range(WORKERS)
    ]
    try:
        workers = [PipelineService(s, clock=clock, max_attempts=50) for s in stores]
        for delivery in setup:
            await workers[0].handle_message(*delivery)
        rng = random.Random(20250101)
        results: list[HandleResult] = []
        for number, round_ in enumerate(rounds):
            # Requests are not copied under fresh ids: a second request would be a new run.
            batch = _with_duplicates(round_, fresh_copies=number < 3)
            rng.shuffle(batch)
            shares = [batch[i::WORKERS] for i in range(WORKERS)]
            done = await asyncio.gather(*(_worker(w, s) for w, s in zip(workers, shares, strict=True)))
            results += [r for worker_results in done for r in worker_results]
        # The workers really raced: some commits lost the compare-and-set and were retried.
        assert any(r.attempts > 1 for r in results)
        assert any(r.duplicate for r in results)

        async with stores[0].engine.connect() as conn:
            written = set((await conn.execute(select(OUTBOX.c.event_id))).scalars())
        for batch_id in BATCHES:
            expected = await serial_store.load(batch_id)
            stored = await stores[1].load(batch_id)
            assert stored is not None
            assert expected is not None
            # Each phase records the event id of the command that dispatched it. An outcome
            # delivered twice under two event ids dispatches the next phase from whichever copy
            # won the race, so that id may differ from the serial run's; it must name a command
            # that was really written, and everything else must be equal.
            history = await stores[1].history(batch_id)
            phases = [p for run in history for p in run.phases]
            assert all(p.command_event_id in written for p in phases), batch_id
            assert stored == expected, batch_id
            assert _without_command_ids(history) == _without_command_ids(
                await serial_store.history(batch_id)
            ), batch_id
            assert [r.status for r in history] == [
                RunStatus.COMPLETED_WITH_FAILURES,
                RunStatus.COMPLETED_SUCCESSFULLY,
            ]
            assert await stores[2].history(batch_id) == history

        async with stores[0].engine.connect() as conn:
            envelopes = (
                await conn.execute(
                    select(OUTBOX.c.envelope).where(OUTBOX.c.topic == Topic.PIPELINE_COMPLETED.value)
                )
            ).scalars()
            completions = Counter(e["data"]["run_id"] for e in envelopes)
        run_ids = {r.run_id for b in BATCHES for r in (await stores[0].history(b))}
        assert len(run_ids) == 2 * len(BATCHES)
        assert completions == dict.fromkeys(run_ids, 1)  # every run completed exactly once
    finally:
        for store in stores:
            await store.close()
