"""The SQL store (layout 4, archived ids looked up in the runs table) must decide
exactly like the in-memory store (which keeps the ids in ``Past``) for the same messages.

A random sequence of actions (requests, outcomes of the active run, stale outcomes of an
archived run, redeliveries after the inbox purge, operator retries / recorded completions
with repeated keys, cancels, group commits via ``handle_many``, deadline sweeps, waiting
sweeps) is played on both stores with identical clocks and identical messages; every
result and the final batch must agree.

It found a difference (fixed): a denied request delivered again after the inbox purge, its
denial still unpublished in the outbox, was a duplicate on the SQL store (the outbox's unique
event id) and was decided again on the memory store, which wrote a second row under the same
event id. The memory store now keeps outbox event ids unique as the SQL store does (the store
contract's ``test_an_event_emitted_again_by_the_same_inbound_event_is_a_duplicate``).
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pipeline_state_sql import open_store

from pipeline_state import (
    CancelRun,
    HandleResult,
    InMemoryStore,
    ManualClock,
    PipelineService,
    RetryPhase,
)
from pipeline_state._commands import RecordPhaseCompletion
from pipeline_state.errors import PipelineStateError
from pipeline_state.ports import Retention, purge_expired
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes

DAY = 86_400.0
ITEMS = 2

ACTIONS = [
    "req",
    "out",
    "out",
    "out",
    "fail",
    "stale",
    "redeliver",
    "redeliver_out",
    "purge",
    "retry",
    "record",
    "cancel",
    "group",
    "expire",
    "sweep",
    "early",
    "foreign",
    "concurrent",
    "other_process",
    "stale",
    "redeliver",
]


def _summary(result: object) -> object:
    if isinstance(result, BaseException):
        return ("error", type(result).__name__)
    if isinstance(result, list):
        return [_summary(r) for r in result]
    assert isinstance(result, HandleResult), result
    return (
        result.label,
        result.ignored,
        result.duplicate,
        result.waiting,
        tuple((m.topic, m.event_id) for m in result.all_messages),
        tuple(_summary(r) for r in result.resumed),
    )


class Side:
    def __init__(self, store: Any) -> None:
        self.store = store
        self.clock = ManualClock(datetime(2025, 3, 1, tzinfo=UTC))
        self.service = PipelineService(store, clock=self.clock)

    async def call(self, coro_fn: Any) -> object:
        try:
            return await coro_fn(self)
        except PipelineStateError as exc:
            return exc

    async def shown(self) -> object:
        state = await self.service.shown_batch("b1")
        if state is None:
            return None
        active = state.active_run
        return (
            state.status,
            state.version,
            None if active is None else (active.run_id, active.correlation_id, active.status),
            tuple((r.run_id, r.correlation_id, r.status) for r in state.history),
            state.past.count,
        )


class Play:
    def __init__(self, memory: Side, sql: Side) -> None:
        self.sides = (memory, sql)
        self.env = HuleEduEnvelopes()
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.outcomes: list[tuple[str, dict[str, Any]]] = []
        self.log: list[str] = []
        self.n = 0
        self.other: Any = None
        self.url = ""

    def fresh(self, what: str) -> str:
        self.n += 1
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{what}-{self.n}"))

    async def both(self, what: str, fn: Any) -> None:
        self.log.append(what)
        got = []
        for side in self.sides:
            side.clock.advance(1)
            got.append(_summary(await side.call(fn)))
        assert got[0] == got[1], (self.log, got)

    async def memory_state(self) -> Any:
        return await self.sides[0].store.load("b1")

    async def message_for(self, action: str, draw: Any) -> tuple[str, dict[str, Any]] | None:
        env = self.env
        state = await self.memory_state()
        phases = ["spellcheck", "nlp", "cj_assessment"]
        if action == "req":
            pipeline = draw(st.sampled_from(["nlp", "cj_assessment"]))
            corr = self.fresh("corr")
            msg = env.request("b1", pipeline, correlation_id=corr, event_id=self.fresh("req"))
            self.requests.append(msg)
            return msg
        if action in ("out", "fail"):
            run = None if state is None else state.active_run
            if run is None:
                return None
            active = [p for p in run.phases if p.is_active]
            if not active:
                return None
            phase = active[0]
            ids = [e.item_id for e in phase.inputs]
            if action == "fail":
                msg = env.outcome(
                    "b1",
                    phase.name,
                    run.correlation_id,
                    status="failed_critically",
                    failed=ids,
                    event_id=self.fresh("out"),
                )
            else:
                msg = env.outcome(
                    "b1", phase.name, run.correlation_id, processed=ids, event_id=self.fresh("out")
                )
            self.outcomes.append(msg)
            return msg
        if action == "early":
            run = None if state is None else state.active_run
            if run is None:
                return None
            pending = [p for p in run.phases if not p.is_active and p.status.value == "pending_dependencies"]
            if not pending:
                pending = list(run.phases)
            phase = draw(st.sampled_from(pending))
            msg = env.outcome(
                "b1",
                phase.name,
                run.correlation_id,
                processed=env.item_ids("b1", ITEMS),
                event_id=self.fresh("early"),
            )
            self.outcomes.append(msg)
            return msg
        if action == "foreign":
            phase = draw(st.sampled_from(phases))
            msg = env.outcome(
                "b1",
                phase,
                self.fresh("fcorr"),
                processed=env.item_ids("b1", ITEMS),
                event_id=self.fresh("f"),
            )
            self.outcomes.append(msg)
            return msg
        if action == "stale":
            history = await self.sides[0].store.history("b1")
            if not history:
                return None
            old = draw(st.sampled_from(history))
            phase = draw(st.sampled_from(phases))
            msg = env.outcome(
                "b1",
                phase,
                old.correlation_id,
                processed=env.item_ids("b1", ITEMS),
                event_id=self.fresh("st"),
            )
            return msg
        if action == "redeliver":
            if not self.requests:
                return None
            return draw(st.sampled_from(self.requests))
        if action == "redeliver_out":
            if not self.outcomes:
                return None
            return draw(st.sampled_from(self.outcomes))
        raise AssertionError(action)

    async def step(self, action: str, draw: Any) -> None:
        if action in ("req", "out", "fail", "stale", "redeliver", "redeliver_out", "early", "foreign"):
            msg = await self.message_for(action, draw)
            if msg is None:
                return
            await self.both(f"{action}", lambda s, m=msg: s.service.handle_message(*m))
        elif action == "purge":
            for side in self.sides:
                side.clock.advance(31 * DAY)
            await self.both("purge", lambda s: _purge(s))
        elif action == "retry":
            key = draw(st.sampled_from(["retry-a", "retry-b"]))
            phase = draw(st.sampled_from(["spellcheck", "nlp", "cj_assessment"]))
            corr = str(uuid.uuid5(uuid.NAMESPACE_URL, key))
            cmd = RetryPhase("b1", phase, "ops", retry_reason="x")
            await self.both(
                f"retry {key} {phase}",
                lambda s: s.service.execute(cmd, event_id=key, correlation_id=corr),
            )
        elif action == "record":
            key = draw(st.sampled_from(["rec-a", "rec-b"]))
            phase = draw(st.sampled_from(["spellcheck", "nlp", "cj_assessment"]))
            corr = str(uuid.uuid5(uuid.NAMESPACE_URL, key))
            cmd = RecordPhaseCompletion("b1", phase, True)
            await self.both(
                f"record {key} {phase}",
                lambda s: s.service.execute(cmd, event_id=key, correlation_id=corr),
            )
        elif action == "cancel":
            key = self.fresh("cancel")
            cmd = CancelRun("b1", "ops", "x")
            await self.both("cancel", lambda s: s.service.execute(cmd, event_id=key, correlation_id=key))
        elif action == "group":
            size = draw(st.integers(2, 4))
            msgs = []
            for _ in range(size):
                sub = draw(
                    st.sampled_from(
                        ["req", "out", "stale", "redeliver", "redeliver_out", "early", "foreign", "out"]
                    )
                )
                msg = await self.message_for(sub, draw)
                if msg is not None:
                    msgs.append(msg)
                    self.log.append(f"  group+{sub}")
            if not msgs:
                return
            await self.both("group", lambda s: _many(s, msgs))
        elif action == "concurrent":
            size = draw(st.integers(2, 4))
            msgs = []
            for _ in range(size):
                sub = draw(
                    st.sampled_from(["req", "out", "stale", "redeliver", "redeliver_out", "early", "foreign"])
                )
                msg = await self.message_for(sub, draw)
                if msg is not None:
                    msgs.append(msg)
                    self.log.append(f"  conc+{sub}")
            if not msgs:
                return
            await self.both("concurrent", lambda s: _concurrent(s, msgs))
        elif action == "other_process":
            # the SQL side swaps to a second store on the same database (another process)
            sql = self.sides[1]
            if self.other is None:
                self.other = await open_store(self.url, upgrade=False)
            sql.store, self.other = self.other, sql.store
            sql.service = PipelineService(sql.store, clock=sql.clock)
        elif action == "expire":
            step = draw(st.sampled_from([60.0, 3600.0, 2 * DAY]))
            for side in self.sides:
                side.clock.advance(step)
            await self.both("expire", lambda s: _expire(s))
        elif action == "sweep":
            for side in self.sides:
                side.clock.advance(1000)
            await self.both("sweep", lambda s: _sweep(s))
        else:
            raise AssertionError(action)


async def _purge(side: Side) -> object:
    await purge_expired(side.store, Retention(), side.clock.now())
    return []


async def _many(side: Side, msgs: list[Any]) -> object:
    out = await side.service.handle_many(msgs)
    return list(out)


async def _concurrent(side: Side, msgs: list[Any]) -> object:
    out = await asyncio.gather(*(side.service.handle_message(*m) for m in msgs), return_exceptions=True)
    return list(out)


async def _expire(side: Side) -> object:
    return list(await side.service.expire_overdue())


async def _sweep(side: Side) -> object:
    async def dead(_: object) -> None:
        return None

    swept = await side.service.sweep_waiting(dead)
    return [
        HandleResult("sweep", "b1", None, waiting=f"{swept.resumed}/{swept.denied}/{swept.dead_lettered}")
    ]


async def _play(tmp: Path, draw: Any, actions: list[str]) -> None:
    url = f"sqlite+aiosqlite:///{tmp / (uuid.uuid4().hex + '.db')}"
    sql = await open_store(url)
    play = Play(Side(InMemoryStore()), Side(sql))
    play.url = url
    try:
        env = play.env
        items = env.item_ids("b1", ITEMS)
        for msg in (env.register("b1", items=ITEMS), env.provisioned("b1", items)):
            m = msg
            await play.both("setup", lambda s, m=m: s.service.handle_message(*m))
        for action in actions:
            await play.step(action, draw)
        shown = [await side.shown() for side in play.sides]
        assert shown[0] == shown[1], (play.log, shown)
    finally:  # the SQL side's store and the other one (swapped by "other_process")
        await play.sides[1].store.close()
        if play.other is not None:
            await play.other.close()


@settings(max_examples=50, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_memory_and_sqlite_decide_alike(tmp_path: Path, data: st.DataObject) -> None:
    actions = data.draw(st.lists(st.sampled_from(ACTIONS), min_size=5, max_size=25))
    asyncio.run(asyncio.wait_for(_play(tmp_path, data.draw, actions), 15))
