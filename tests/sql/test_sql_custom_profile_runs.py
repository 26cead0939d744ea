"""Runs of a custom profile (the bakery of
:mod:`tests.bakery_kit`, its own wire, a diamond with a deadline) on the
in-memory store and on SQLite, driven through one hostile story: a request and a station
report before the order exists, redeliveries of every message, an outcome before its
phase is dispatched, a failed branch, a timeout with a re-send, a cancel with late
reports, a phase retry, pruning by an earlier run, and an archive. Every accepted run
must complete exactly once, the order must be ready after each, and both stores must
answer every step alike."""

from __future__ import annotations

import uuid
from typing import Any

from pipeline_state_sql import open_store

from pipeline_state import InMemoryStore, ManualClock, PipelineService
from pipeline_state._commands import ArchiveBatch, CancelRun, RetryPhase
from pipeline_state.errors import PipelineStateError
from pipeline_state.testing import Envelopes
from tests.bakery_kit import bakery

PROFILE = bakery(deadlines={"decorate": 30}, max_resends=1)
DONE = "bakery.order.done"
Message = dict[str, Any]
_NS = uuid.UUID("7f3b3c52-1a4e-4e43-9d0c-2b1e51b1c0aa")


class Story:
    """Drives one service and writes down every verdict and published topic."""

    def __init__(self, service: PipelineService, clock: ManualClock) -> None:
        self.service, self.clock = service, clock
        self.env = Envelopes(profile=PROFILE)
        self.trace: list[tuple[str, str, tuple[str, ...]]] = []
        self.published: list[Message] = []
        self.n = 0

    def _fix(self, delivery: tuple[str, Message]) -> tuple[str, Message]:
        """The delivery with a deterministic event id (both stores see the same ids)."""
        topic, value = delivery
        self.n += 1
        return topic, {**value, "event_id": str(uuid.uuid5(_NS, str(self.n)))}

    async def deliver(self, step: str, delivery: tuple[str, Message], *, fix: bool = True) -> list[Message]:
        sent = self._fix(delivery) if fix else delivery
        result = await self.service.handle_message(*sent)
        out = [m.as_dict() for m in result.all_messages]
        self.published += out
        self.trace.append((step, result.label, tuple(m["topic"] for m in out)))
        return out

    async def redeliver(self, step: str, delivery: tuple[str, Message]) -> list[Message]:
        return await self.deliver(step, delivery, fix=False)

    async def operator(self, step: str, payload: Any) -> list[Message]:
        self.n += 1
        try:
            result = await self.service.execute(payload, event_id=str(uuid.uuid5(_NS, str(self.n))))
        except PipelineStateError as exc:
            self.trace.append((step, f"raised:{type(exc).__name__}", ()))
            return []
        out = [m.as_dict() for m in result.all_messages]
        self.published += out
        self.trace.append((step, result.label, tuple(m["topic"] for m in out)))
        return out

    async def expire(self, step: str) -> None:
        results = await self.service.expire_overdue()
        out = [m.as_dict() for r in results for m in r.all_messages]
        self.published += out
        self.trace.append((step, ",".join(r.label for r in results), tuple(m["topic"] for m in out)))

    def command(self, out: list[Message], phase: str) -> Message:
        [found] = [m for m in out if self.env.phase_of(m) == phase]
        return found

    def completions(self) -> list[str]:
        return [m["value"]["data"]["outcome"] for m in self.published if m["topic"] == DONE]


async def play(service: PipelineService, clock: ManualClock) -> Story:
    s = Story(service, clock)
    env = s.env
    cakes = env.item_ids("o1", 3)

    # early facts: the request and the batter come before the order
    request = s._fix(env.request("o1", "bread"))
    await s.redeliver("request early", request)
    await s.deliver("batter early", env.provisioned("o1", cakes))
    registered = s._fix(env.register("o1", item_ids=cakes, prompt=None))
    out = await s.redeliver("register", registered)
    await s.redeliver("register again", registered)
    await s.redeliver("request again", request)

    # run 1, bread: proof -> bake, every report delivered twice
    proof = s.command(out, "proof")
    answer = s._fix(env.answer(proof))
    out = await s.redeliver("proof done", answer)
    await s.redeliver("proof done again", answer)
    bake = s.command(out, "bake")
    answer = s._fix(env.answer(bake, failed=[cakes[2]]))
    await s.redeliver("bake partial", answer)
    await s.redeliver("bake partial again", answer)
    assert s.completions() == ["completed_with_failures"]

    # run 2, cake: proof and bake pruned; box reported before it is dispatched; glaze
    # fails for every cake, so box is skipped; decorate times out after one re-send
    out = await s.deliver("request cake", env.request("o1", "cake"))
    glaze, decorate = s.command(out, "glaze"), s.command(out, "decorate")
    correlation = glaze["value"]["correlation_id"]
    await s.deliver("box early", env.outcome("o1", "box", correlation, processed=cakes[:2]))
    await s.deliver("glaze burnt", env.answer(glaze, failed=list(cakes[:2])))
    clock.advance(31)
    await s.expire("decorate overdue")
    clock.advance(31)
    await s.expire("decorate timed out")
    await s.deliver("decorate late", env.answer(decorate))
    assert s.completions() == ["completed_with_failures", "failed_critically"]

    # run 3, retry decorate, then cancel it with reports arriving after
    out = await s.operator("retry decorate", RetryPhase("o1", "decorate", "owner-1", "again"))
    decorate = s.command(out, "decorate")
    await s.operator("cancel", CancelRun("o1", "owner-1", "oven broke"))
    await s.deliver("decorate after cancel", env.answer(decorate))
    await s.operator("cancel again", CancelRun("o1", "owner-1", "oven broke"))
    assert s.completions()[-1] == "cancelled"

    # run 4, cake again: glaze, decorate and box run (none completed), all succeed
    out = await s.deliver("request cake 2", env.request("o1", "cake"))
    pending = [m for m in out if env.phase_of(m) is not None]
    while pending:
        message = pending.pop(0)
        pending += [
            m
            for m in await s.deliver(f"{env.phase_of(message)} ok", env.answer(message))
            if env.phase_of(m) is not None
        ]
    assert s.completions()[-1] == "completed_successfully"

    # archive: the next request is refused, not kept waiting
    await s.operator("archive", ArchiveBatch("o1"))
    await s.deliver("request after archive", env.request("o1", "bread"))
    return s


async def check(story: Story) -> list[tuple[str, str, tuple[str, ...]]]:
    state = await story.service.get_batch("o1")
    assert state.active_run is None
    assert state.status.value == "archived"
    runs = [r for r in state.history if not r.recorded]
    assert len(runs) == len(story.completions()) == 4
    assert [r.status.value for r in runs] == story.completions()
    assert await story.service.waiting_count() == 0
    labels = dict((step, label) for step, label, _ in story.trace)
    assert labels["request early"].startswith("deferred:")
    assert labels["box early"] == "deferred:phase_dispatch:box"
    for again in ("register again", "request again", "proof done again", "bake partial again"):
        assert labels[again] == "duplicate", (again, labels[again])
    assert labels["decorate late"].startswith("ignored:")
    assert labels["decorate after cancel"].startswith("ignored:")
    assert labels["cancel again"] == "raised:IllegalTransitionError"
    assert labels["request after archive"].startswith("denied:") or labels[
        "request after archive"
    ].startswith("ignored:")
    cake = next(r for r in runs if r.pipeline_name == "cake")
    assert list(cake.pruned) == ["proof", "bake"]
    assert cake.phase_statuses["box"] == "skipped_due_to_dependency_failure"
    assert cake.phase_statuses["decorate"] == "failed"
    return story.trace


async def test_memory_and_sqlite_play_the_bakery_story_alike(sqlite_url: str) -> None:
    clock = ManualClock()
    memory = await check(await play(PipelineService(InMemoryStore(), profile=PROFILE, clock=clock), clock))
    clock = ManualClock()
    store = await open_store(sqlite_url)
    try:
        sqlite = await check(await play(PipelineService(store, profile=PROFILE, clock=clock), clock))
    finally:
        await store.close()
    for mine, theirs in zip(memory, sqlite, strict=True):
        assert mine == theirs, f"memory {mine} != sqlite {theirs}"
