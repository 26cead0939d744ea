"""Group commit: deterministic groups (two units of work held in flight while the
messages under test queue), compared with the same messages handled one by one."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from typing import Any

from pipeline_state import (
    HandleResult,
    InboundMessage,
    InMemoryStore,
    ManualClock,
    PipelineService,
)
from pipeline_state.ports import Change
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes
from tests.group_kit import PHASES, Outcome, comparable, outcome_of


class SlowStore(InMemoryStore):
    """Commits suspend once, as a real store's I/O does; records units of work."""

    def __init__(self) -> None:
        super().__init__()
        self.units: list[int] = []
        self.gate: asyncio.Future[None] | None = None
        self.held = 0
        self.many = 0

    async def commit(self, change: Change) -> None:
        if self.gate is not None:
            self.held += 1
            await self.gate
        await asyncio.sleep(0)
        self.units.append(1)
        await super().commit(change)

    async def commit_many(self, changes: Sequence[Change]) -> None:
        await asyncio.sleep(0)
        self.many += 1
        self.units.append(len(changes))
        await super().commit_many(changes)


async def in_one_group(
    svc: PipelineService, store: SlowStore, env: HuleEduEnvelopes, messages: Sequence[InboundMessage]
) -> list[Outcome]:
    """Two lead calls hold both slots; ``messages`` queue in order, then go as groups."""
    loop = asyncio.get_running_loop()
    store.gate = loop.create_future()
    leads = [
        asyncio.ensure_future(svc.handle_message(*env.register(f"lead-{uuid.uuid4()}", items=1)))
        for _ in range(2)
    ]
    for _ in range(20):
        if store.held >= 2:
            break
        await asyncio.sleep(0)
    assert store.held == 2
    gate, store.gate = store.gate, None
    queued = [asyncio.ensure_future(outcome_of(svc, m)) for m in messages]
    for _ in range(3):
        await asyncio.sleep(0)
    gate.set_result(None)
    await asyncio.gather(*leads)
    return list(await asyncio.gather(*queued))


async def one_by_one(messages: Sequence[InboundMessage]) -> tuple[PipelineService, list[Outcome]]:
    svc = PipelineService(InMemoryStore(), clock=ManualClock())
    return svc, [await outcome_of(svc, m) for m in messages]


def story(env: HuleEduEnvelopes, batch_id: str, corr: str | None = None) -> list[InboundMessage]:
    ids = env.item_ids(batch_id, 2)
    corr = corr or str(uuid.uuid5(uuid.NAMESPACE_OID, batch_id))
    return [
        env.register(batch_id, items=2),
        env.provisioned(batch_id, ids),
        env.request(batch_id, "comprehensive", correlation_id=corr),
        *(env.outcome(batch_id, phase, corr, processed=ids) for phase in PHASES),
    ]


async def check_equivalent(messages: Sequence[InboundMessage], batches: Sequence[str]) -> list[Outcome]:
    env = HuleEduEnvelopes()
    store = SlowStore()
    svc = PipelineService(store, clock=ManualClock())
    got = await in_one_group(svc, store, env, messages)
    assert store.many >= 1  # the messages did go together
    ref, expected = await one_by_one(messages)
    assert [comparable(r) for r in got] == [comparable(r) for r in expected]
    for b in batches:
        assert await svc.store.load(b) == await ref.store.load(b)
        assert await svc.store.list_waiting(b) == await ref.store.list_waiting(b)
    # The messages, not their trace context (another test's tracer makes it random).
    mine = sorted(
        repr((m.event_id, m.topic, m.key, m.value))
        for m in store.outbox_messages()
        if not m.key or "lead-" not in str(m.value)
    )
    theirs = sorted(repr((m.event_id, m.topic, m.key, m.value)) for m in ref.store.outbox_messages())  # type: ignore[attr-defined]
    assert mine == theirs
    return got


async def test_a_whole_story_of_one_batch_in_one_group_equals_one_by_one() -> None:
    env = HuleEduEnvelopes()
    got = await check_equivalent(story(env, "s1"), ["s1"])
    assert all(isinstance(r, HandleResult) and not r.duplicate for r in got)


async def test_early_facts_then_creation_in_one_group_equals_one_by_one() -> None:
    env = HuleEduEnvelopes()
    msgs = story(env, "e1")
    # outcomes and provisioning before the registration; a redelivery of each in the group
    order = [msgs[1], msgs[2], msgs[3], msgs[1], msgs[0], msgs[4], msgs[5], msgs[6], msgs[3]]
    await check_equivalent(order, ["e1"])


async def test_duplicate_ids_for_different_batches_in_one_group() -> None:
    env = HuleEduEnvelopes()
    a = env.register("d1", items=1)
    b_topic, b_raw = env.register("d2", items=1)
    b = (b_topic, {**b_raw, "event_id": a[1]["event_id"]})  # type: ignore[index,dict-item]
    await check_equivalent([a, b, a], ["d1", "d2"])


async def test_a_dead_lettered_fact_replayed_twice_in_one_group_equals_one_by_one() -> None:
    env = HuleEduEnvelopes()
    msgs = story(env, "r1")
    fact = msgs[1]  # provisioning before registration: waits, then expires

    async def prepared(store: InMemoryStore) -> tuple[PipelineService, ManualClock]:
        clock = ManualClock()
        svc = PipelineService(store, clock=clock)
        first = await svc.handle_message(*fact)
        assert first.waiting is not None
        clock.advance(3600)
        letters: list[Any] = []

        async def dead_letter(expired: Any) -> None:
            letters.append(expired)

        await svc.sweep_waiting(dead_letter)
        assert len(letters) == 1
        return svc, clock

    store = SlowStore()
    svc, _ = await prepared(store)
    got = await in_one_group(svc, store, env, [msgs[0], fact, fact, msgs[2], fact])
    ref, _ = await prepared(InMemoryStore())
    expected = [await outcome_of(ref, m) for m in [msgs[0], fact, fact, msgs[2], fact]]
    assert [comparable(r) for r in got] == [comparable(r) for r in expected]
    assert await svc.store.load("r1") == await ref.store.load("r1")
    assert store.many >= 1
