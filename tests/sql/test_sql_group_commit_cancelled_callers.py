"""Group commit on a real SQLite store under caller cancellation (asyncio.wait_for timeouts)."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import Counter
from collections.abc import Sequence

import pytest
from pipeline_state_sql import SqlStore
from sqlalchemy import text

from pipeline_state import (
    InboundMessage,
    InMemoryStore,
    ManualClock,
    PipelineService,
    PipelineStateError,
)
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes
from tests.group_kit import story


async def outbox_ids(store: SqlStore) -> Counter[str]:
    async with store.engine.connect() as conn:
        rows = await conn.execute(text("SELECT event_id FROM outbox"))
        return Counter(e for (e,) in rows)


async def _cancelling_callers(
    svc: PipelineService, rnd: random.Random, orders: Sequence[Sequence[InboundMessage]], *, early: bool
) -> int:
    """One caller per message list, all at once, each call under a random short timeout
    (cancelled, then delivered again, as a consumer whose poll timed out would) until it
    ends; how many calls were cancelled. ``early``: the lists hold messages out of order, so
    a call may fail for good (a fact that can never apply), and the caller goes on; else
    such an error propagates and a cancelled caller pauses before delivering again."""
    cancels = 0

    async def caller(messages: Sequence[InboundMessage]) -> None:
        nonlocal cancels
        for message in messages:
            for attempt in range(50):
                timeout = rnd.choice([0.0, 0.0005, 0.001, 0.003, 10.0]) if attempt < 40 else 10.0
                try:
                    await asyncio.wait_for(svc.handle_message(*message), timeout)
                    break
                except TimeoutError:
                    cancels += 1
                    if not early:
                        await asyncio.sleep(rnd.choice([0, 0, 0.001]))
                except PipelineStateError:
                    if not early:
                        raise
                    break

    await asyncio.wait_for(asyncio.gather(*(caller(o) for o in orders)), 15)
    return cancels


@pytest.mark.parametrize("seed", range(6))
async def test_cancelled_callers_redelivering_end_like_one_by_one(sql_store: SqlStore, seed: int) -> None:
    rnd = random.Random(seed)
    env = HuleEduEnvelopes()
    stories = [story(env, f"c{seed}-{n}") for n in range(6)]
    clock = ManualClock()
    svc = PipelineService(sql_store, clock=clock)
    cancels = await _cancelling_callers(svc, rnd, stories, early=False)
    assert cancels > 0
    # Later callers are not wedged.
    more = story(env, f"after{seed}")
    for m in more:
        await asyncio.wait_for(svc.handle_message(*m), 5)

    ref = PipelineService(InMemoryStore(), clock=ManualClock())
    for s in [*stories, more]:
        for m in s:
            await ref.handle_message(*m)
    for n in range(6):
        got = await svc.get_batch(f"c{seed}-{n}")
        assert got == await ref.get_batch(f"c{seed}-{n}")
        assert got.active_run is None
        assert len(got.history) == 1
    ids = await outbox_ids(sql_store)
    assert ids == Counter(m.event_id for m in ref.store.outbox_messages())  # type: ignore[attr-defined]


@pytest.mark.parametrize("seed", range(4))
async def test_cancelled_callers_with_early_facts_end_like_one_by_one(sql_store: SqlStore, seed: int) -> None:
    """As above, each batch's messages in a shuffled order (early facts wait and are resumed
    under cancellation), some delivered twice."""
    rnd = random.Random(1000 + seed)
    env = HuleEduEnvelopes()
    orders = []
    for n in range(5):
        s = story(env, f"e{seed}-{n}")
        order = s[:]
        rnd.shuffle(order)
        order += rnd.sample(s, 2)
        orders.append(order)
    svc = PipelineService(sql_store, clock=ManualClock())
    cancels = await _cancelling_callers(svc, rnd, orders, early=True)
    assert cancels > 0
    ref = PipelineService(InMemoryStore(), clock=ManualClock())
    for o in orders:
        for m in o:
            with contextlib.suppress(PipelineStateError):
                await ref.handle_message(*m)
    for n in range(5):
        b = f"e{seed}-{n}"
        assert await sql_store.load(b) == await ref.store.load(b)
        assert [f.event_id for f in await sql_store.list_waiting(b)] == [
            f.event_id for f in await ref.store.list_waiting(b)
        ]
    ids = await outbox_ids(sql_store)
    assert ids == Counter(m.event_id for m in ref.store.outbox_messages())  # type: ignore[attr-defined]
