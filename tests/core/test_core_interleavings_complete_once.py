"""Every accepted run completes exactly once under shuffled stories (early facts, outcomes before
dispatch, redeliveries under the same and under fresh event ids) mixed with cancels, operator
retries, deadline sweeps and waiting sweeps, handled (a) by concurrent ``handle_message`` calls
over a store that suspends on every read and commit (group commits, lost compare-and-sets), and
(b) by ``handle_many`` in random chunks compared with one by one. Checked: no run completes
twice, no phase is dispatched twice in a run, and once every dispatched phase is answered every
accepted run completed exactly once and no batch is left processing.
"""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from collections import Counter
from collections.abc import Sequence
from typing import Any

import pytest

from pipeline_state import InMemoryStore, ManualClock, PipelineService, PipelineStateError
from pipeline_state._commands import CancelRun, RetryPhase
from pipeline_state.ports import Change
from pipeline_state.profiles.huleedu.events import Topic
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes

PHASES = ("spellcheck", "nlp", "cj_assessment", "ai_feedback")
PIPELINES = ("nlp", "comprehensive", "cj_assessment", "ai_feedback")
Msg = tuple[str, dict[str, Any]]


def _stories(rng: random.Random, batches: int) -> list[list[Msg]]:
    env = HuleEduEnvelopes()
    out = []
    for n in range(batches):
        b = f"b{n}"
        ids = env.item_ids(b, 2)
        regular = rng.random() < 0.4
        story: list[Msg] = [env.register(b, items=2, group_id=f"c{b}" if regular else None)]
        story.append(env.provisioned(b, ids))
        if regular:
            story += [env.group_confirmed(b, f"c{b}", ids), env.items_ready(b, ids)]
        for _ in range(rng.randint(1, 2)):
            corr = str(uuid.UUID(int=rng.getrandbits(128)))
            story.append(env.request(b, rng.choice(PIPELINES), correlation_id=corr))
            for phase in PHASES:
                fail = rng.random() < 0.15
                story.append(
                    env.outcome(
                        b, phase, corr, processed=ids[1:] if fail else ids, failed=ids[:1] if fail else []
                    )
                )
        out.append(story)
    return out


def _interleave(rng: random.Random, stories: list[list[Msg]], shuffle: float) -> list[Msg]:
    msgs: list[Msg] = []
    while any(stories):
        story = rng.choice([s for s in stories if s])
        msgs.append(story.pop(rng.randrange(len(story)) if rng.random() < shuffle else 0))
        if rng.random() < 0.1:
            msgs.append(rng.choice(msgs))  # same event id
        if rng.random() < 0.05:
            topic, raw = rng.choice(msgs)  # fresh event id
            msgs.append((topic, {**raw, "event_id": str(uuid.UUID(int=rng.getrandbits(128)))}))
    return msgs


class _SuspendingStore(InMemoryStore):
    """Every read and commit gives the loop 0-3 turns, as a database's I/O does."""

    def __init__(self, rng: random.Random) -> None:
        super().__init__()
        self.rng = rng

    async def _turns(self) -> None:
        for _ in range(self.rng.randint(0, 3)):
            await asyncio.sleep(0)

    async def load_for_event(self, batch_id: str, event_id: str) -> Any:
        await self._turns()
        return await super().load_for_event(batch_id, event_id)

    async def load_for_events(self, events: Sequence[tuple[str, str]]) -> Any:
        await self._turns()
        return await super().load_for_events(events)

    async def load_with_waiting(self, batch_id: str) -> Any:
        await self._turns()
        return await super().load_with_waiting(batch_id)

    async def commit(self, change: Change) -> None:
        await self._turns()
        await super().commit(change)

    async def commit_many(self, changes: Sequence[Change]) -> None:
        await self._turns()
        await super().commit_many(changes)


def _check(store: InMemoryStore) -> tuple[set[str], Counter[str]]:
    completed: Counter[str] = Counter()
    started: set[str] = set()
    for m in store.outbox_messages():
        data = m.value["data"]
        if m.topic == Topic.PIPELINE_COMPLETED.value:
            completed[data["run_id"]] += 1
        elif (
            m.topic == Topic.TEACHER_NOTIFICATION.value
            and data["notification_type"] == "batch_processing_started"
        ):
            started.add(data["payload"]["run_id"])
    dispatched = Counter(
        (t.run_id, t.name)
        for t in store.transitions()
        if t.entity == "phase" and t.dest == "dispatch_initiated" and t.source != "dispatch_initiated"
    )
    assert not {r: n for r, n in completed.items() if n > 1}, "a run completed twice"
    assert not {k: n for k, n in dispatched.items() if n > 1}, "a phase dispatched twice in one run"
    return started, completed


async def _answer_everything(svc: PipelineService, batches: int) -> None:
    env = HuleEduEnvelopes()
    for _ in range(12):
        moved = False
        for n in range(batches):
            state = await svc.store.load(f"b{n}")
            if state is None or state.active_run is None:
                continue
            run = state.active_run
            for phase in run.phases:
                if phase.is_active:
                    done = [e.item_id for e in phase.inputs]
                    await svc.handle_message(
                        *env.outcome(state.batch_id, phase.name, run.correlation_id, processed=done)
                    )
                    moved = True
        if not moved:
            return


@pytest.mark.parametrize("seed", range(12))
async def test_concurrent_calls_with_operators_and_sweeps_complete_every_run_once(seed: int) -> None:
    logging.getLogger("pipeline_state").setLevel(logging.CRITICAL)
    rng = random.Random(seed)
    batches = rng.randint(1, 2)
    msgs = _interleave(rng, _stories(rng, batches), rng.choice([0.0, 0.3, 0.7]))
    clock = ManualClock()
    store = _SuspendingStore(random.Random(seed * 7))
    svc = PipelineService(store, clock=clock)
    ops: list[tuple[Any, ...]] = []
    for m in msgs:
        ops.append(("msg", m))
        r, b = rng.random(), f"b{rng.randrange(batches)}"
        if r < 0.08:
            ops.append(("cancel", b))
        elif r < 0.16:
            ops.append(("retry", b, rng.choice(PHASES)))
        elif r < 0.30:
            ops.append(("tick", rng.choice([10, 1000, 4000])))
        elif r < 0.36:
            ops.append(("sweep", 1000))

    async def letter(_: object) -> None:
        return None

    async def one(op: tuple[Any, ...], turns: int) -> object:
        for _ in range(turns):
            await asyncio.sleep(0)
        try:
            if op[0] == "msg":
                return await svc.handle_message(*op[1])
            if op[0] == "cancel":
                return await svc.execute(CancelRun(op[1], reason="x"))
            if op[0] == "retry":
                return await svc.execute(RetryPhase(op[1], op[2], "teacher-1"))
            clock.advance(op[1])
            if op[0] == "tick":
                return await svc.expire_overdue()
            return await svc.sweep_waiting(letter)
        except PipelineStateError as exc:
            return exc

    await asyncio.gather(*(one(op, rng.randint(0, 6)) for op in ops))
    _check(store)
    await _answer_everything(svc, batches)
    started, completed = _check(store)
    assert started <= set(completed), f"runs never completed: {started - set(completed)}"
    for n in range(batches):
        state = await store.load(f"b{n}")
        assert state is None or state.status.value != "processing_pipelines"


@pytest.mark.parametrize("seed", range(8))
async def test_handle_many_of_shuffled_stories_equals_one_by_one(seed: int) -> None:
    logging.getLogger("pipeline_state").setLevel(logging.CRITICAL)
    rng = random.Random(1000 + seed)
    batches = rng.randint(1, 3)
    msgs = _interleave(rng, _stories(rng, batches), 0.7)
    one_by_one = PipelineService(InMemoryStore(), clock=ManualClock())
    expected = []
    for m in msgs:
        try:
            expected.append(await one_by_one.handle_message(*m))
        except PipelineStateError as exc:
            expected.append(exc)  # type: ignore[arg-type]
    grouped = PipelineService(InMemoryStore(), clock=ManualClock())
    got: list[object] = []
    i = 0
    while i < len(msgs):
        k = rng.randint(1, 10)
        got.extend(await grouped.handle_many(msgs[i : i + k]))
        i += k

    def view(r: object) -> object:
        if isinstance(r, BaseException):
            return (type(r).__name__, str(r))
        return (
            r.event_id,
            r.decision,
            [(m.event_id, m.value) for m in r.messages],
            r.waiting,  # type: ignore[attr-defined]
            [view(x) for x in r.resumed],
        )  # type: ignore[attr-defined]

    assert [view(r) for r in got] == [view(r) for r in expected]
    for n in range(batches):
        assert await grouped.store.load(f"b{n}") == await one_by_one.store.load(f"b{n}")
    assert await grouped.store.list_waiting(limit=10_000) == await one_by_one.store.list_waiting(limit=10_000)
    _check(grouped.store)  # type: ignore[arg-type]
