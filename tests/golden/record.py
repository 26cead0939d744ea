"""Golden wire recordings: every message the engine emits, pinned byte for byte.

Each scenario is a list of *steps* played against a fresh :class:`~pipeline_state.InMemoryRuntime`
(the real :class:`~pipeline_state.PipelineService`, in-memory store, relay and bus, a
:class:`~pipeline_state.ManualClock` starting at 2025-01-01T00:00:00Z). A step sets the clock
to the instant it names, then does one thing: deliver an inbound message
(``handle_message``), deliver several in one unit of work (``handle_many``), run an operator
command (``execute``), run the deadline sweeper (``expire_overdue``) or sweep the waiting
set (``sweep_waiting``). What the step emitted is every outbox row it wrote (re-sent
commands included), in the order written, each as the Kafka record the adapter's
:func:`~pipeline_state_kafka.codec.encode_message` builds: topic, key, headers and the value
*bytes* (kept as the exact JSON text). The step also records what handling said (the inbox
label: ``applied``, ``ignored:<reason>``, ``denied:<reason>``, ``deferred:<what>``,
``duplicate``; flags; re-sent event ids; waiting facts resumed; or the error class raised)
and never the names of internal moves or triggers.

Scenarios (one ``data/<name>.jsonl`` each: a header line, one line per step, an end line
with every batch's status and the waiting set):

* ``demo-seed7-batches2``: the story ``pipeline-state demo`` plays (seed 7, 2 batches),
  recorded by playing the demo on a runtime that logs every inbound message it is handed,
  with the simulated clock's instant;
* ``directed-*``: short stories written out step by step, each showing one family of
  behaviour for sure (fan-in and pruning, early facts, deadlines, denials and duplicates,
  cancels and failures, admission guards) whatever the walks happen to draw;
* ``walk-NN``: seeded random walks (``random.Random("golden-walk:<NN>")``, no Hypothesis,
  so a library upgrade cannot change them) in the spirit of ``tests/properties``: guest and
  regular registrations, readiness, requests for every pipeline of the catalog and their
  denials, phase outcomes of all three statuses, fan-in, redeliveries, replays, stale and
  foreign correlation ids, early facts that wait, deadlines (re-send, then timeout),
  cancels, retries, archive, recorded completions, validation errors, bad input, and
  batched delivery; over the shipped HuleEdu profile and variants of it (sequential,
  short deadlines, strict correlation, credits, rate limit, no default deadline).

The walks pick each next input by looking at the engine's state; the files then hold the
inputs, so the test (``test_golden_wire.py``) replays exactly the stored inputs and compares
every line. Regenerate (only when a wire change is intended) with::

    .venv/bin/python -m tests.golden.record            # rewrite data/*.jsonl
    .venv/bin/python -m tests.golden.record --check    # compare only, exit 1 on a difference
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import logging
import random
import sys
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import attrs
from pipeline_state_kafka.codec import encode_message

from pipeline_state import (
    ArchiveBatch,
    BatchStatus,
    CancelBatch,
    CancelRun,
    HandleResult,
    InMemoryCreditLedger,
    InMemoryRuntime,
    ManualClock,
    Profile,
    RateLimitGuard,
    RetryPhase,
    WireModel,
)
from pipeline_state._commands import ExpireOverdue, RecordPhaseCompletion
from pipeline_state._service import ExpiredFact
from pipeline_state.errors import ItemMismatchError, PipelineStateError
from pipeline_state.ports import AdmissionGuard, BatchState, OutboxMessage
from pipeline_state.profiles.huleedu.events import TOPICS, Topic
from pipeline_state.profiles.huleedu.profile import huleedu_profile

__all__ = [
    "DATA_DIR",
    "SCENARIOS",
    "Driver",
    "Scenario",
    "describe_difference",
    "dump_line",
    "load_lines",
    "main",
    "record",
    "replay",
]

FORMAT = 1
DATA_DIR = Path(__file__).resolve().parent / "data"
START = datetime(2025, 1, 1, tzinfo=UTC)
"""Where every scenario's clock starts (the ``ManualClock`` default)."""

Line = dict[str, Any]

_IDS = uuid.UUID("5d0c9a3e-2b7f-4f52-9d7e-a01dea000000")
"""Namespace of the walks' event and correlation ids (uuid5 of ``<scenario>:<n>``)."""
_OPERATOR = {
    "ArchiveBatch": ArchiveBatch,
    "CancelBatch": CancelBatch,
    "CancelRun": CancelRun,
    "ExpireOverdue": ExpireOverdue,
    "RecordPhaseCompletion": RecordPhaseCompletion,
    "RetryPhase": RetryPhase,
}
_WIRE_MODELS: dict[str, type[WireModel]] = {
    spec.model.__name__: spec.model for spec in TOPICS.values() if spec.direction == "in"
}
"""Inbound payloads ``execute`` takes by name: what arrives by another route (HTTP)."""
_STEP_KEYS = (
    "step",
    "clock",
    "op",
    "topic",
    "message",
    "messages",
    "command",
    "args",
    "event_id",
    "correlation_id",
)


# -- profiles --------------------------------------------------------------------------------


def build_profile(spec: Mapping[str, Any]) -> Profile:
    """The shipped HuleEdu profile with the overrides ``spec`` names (``{}``: as shipped).

    Keys: the keyword arguments of :func:`~pipeline_state.profiles.huleedu.profile.huleedu_profile`
    (``max_parallel``, ``max_resends``, ``strict_correlation``, ``deadlines``,
    ``default_deadline_seconds``), plus ``credits`` (balances of an in-memory credit
    ledger) and ``rate_limit`` (``[max_runs, window_seconds]``)."""
    kwargs = {k: v for k, v in spec.items() if k not in ("credits", "rate_limit")}
    guards: list[AdmissionGuard] = []
    if "rate_limit" in spec:
        max_runs, window = spec["rate_limit"]
        guards.append(RateLimitGuard(max_runs, window))
    if "credits" in spec:
        kwargs["credits"] = InMemoryCreditLedger(dict(spec["credits"]))
    return huleedu_profile(extra_guards=guards, **kwargs)


_SHORT_DEADLINES = {"spellcheck": 20, "cj_assessment": 30, "nlp": 45, "ai_feedback": 60}

PROFILE_VARIANTS: tuple[tuple[str, Mapping[str, Any]], ...] = (
    ("shipped", {}),
    ("sequential", {"max_parallel": 1}),
    ("short-deadlines", {"deadlines": _SHORT_DEADLINES, "max_resends": 1}),
    ("strict", {"strict_correlation": True, "deadlines": _SHORT_DEADLINES, "max_resends": 0}),
    ("credits", {"credits": {"teacher-1": 12, "org-rich": 1000}}),
    ("rate-limited", {"rate_limit": [2, 120], "deadlines": _SHORT_DEADLINES}),
    ("no-default-deadline", {"default_deadline_seconds": None, "max_parallel": 1, "max_resends": 0}),
)


# -- scenarios -------------------------------------------------------------------------------


@attrs.frozen
class Scenario:
    """One recording: ``kind`` is ``demo`` (seed, batches), ``walk`` (seed, variant) or
    ``script`` (a directed story of :data:`SCRIPTS`, its name after ``directed-``)."""

    name: str
    kind: str
    seed: int
    profile: Mapping[str, Any] = attrs.field(factory=dict)
    variant: str = "shipped"
    batches: int = 2

    @property
    def path(self) -> Path:
        return DATA_DIR / f"{self.name}.jsonl"

    def header(self) -> Line:
        origin: dict[str, Any] = {"kind": self.kind, "seed": self.seed}
        if self.kind == "demo":
            origin["batches"] = self.batches
        else:
            origin["variant"] = self.variant
        if self.kind == "script":
            del origin["seed"]
        return {"format": FORMAT, "scenario": self.name, "origin": origin, "profile": dict(self.profile)}


WALKS = 40

_SCRIPT_PROFILES: Mapping[str, tuple[str, Mapping[str, Any]]] = {
    "fan-in-and-pruning": PROFILE_VARIANTS[0],
    "early-facts": PROFILE_VARIANTS[0],
    "deadlines": ("short-deadlines-2-resends", {"deadlines": _SHORT_DEADLINES, "max_resends": 2}),
    "denials-and-duplicates": PROFILE_VARIANTS[0],
    "cancel-and-failures": PROFILE_VARIANTS[1],
    "guards": PROFILE_VARIANTS[4],
    "rate-limit": PROFILE_VARIANTS[5],
}
"""The directed stories (:data:`SCRIPTS`) and the profile variant each plays on."""


def _scenarios() -> tuple[Scenario, ...]:
    out = [Scenario("demo-seed7-batches2", "demo", 7, {}, batches=2)]
    for name, (variant, spec) in _SCRIPT_PROFILES.items():
        out.append(Scenario(f"directed-{name}", "script", 0, spec, variant=variant))
    for i in range(WALKS):
        variant, spec = PROFILE_VARIANTS[i % len(PROFILE_VARIANTS)]
        out.append(Scenario(f"walk-{i:02d}", "walk", i, spec, variant=variant))
    return tuple(out)


SCENARIOS: tuple[Scenario, ...] = _scenarios()


# -- the driver: one step in, its record out -------------------------------------------------


def wire_record(message: OutboxMessage) -> Line:
    """The Kafka record of an outbox message as the adapter encodes it; ``value`` is the
    exact UTF-8 JSON text of the record value."""
    record = encode_message(message)
    return {
        "topic": record.topic,
        "key": None if record.key is None else record.key.decode("utf-8"),
        "headers": [[name, value.decode("utf-8")] for name, value in record.headers],
        "value": record.value.decode("utf-8"),
    }


def _error(exc: PipelineStateError) -> Line:
    out: Line = {"error": type(exc).__name__}
    if isinstance(exc, ItemMismatchError):
        out["reason"] = exc.reason
    return out


def _summary(result: HandleResult, *, with_id: bool = False) -> Line:
    out: Line = {"label": result.label}
    if with_id:
        out["event_id"] = result.event_id
    decision = result.decision
    if decision is not None and decision.flags:
        out["flags"] = list(decision.flags)
    if decision is not None and decision.resend:
        out["resend"] = list(decision.resend)
    if result.resumed:
        out["resumed"] = [
            _summary(r, with_id=True) if isinstance(r, HandleResult) else _error(r) for r in result.resumed
        ]
    return out


def _copy(value: Any) -> Any:
    return json.loads(json.dumps(value))


class Driver:
    """A fresh in-memory runtime on a manual clock, played one step at a time."""

    def __init__(self, profile: Mapping[str, Any]) -> None:
        self.clock = ManualClock(START)
        self.rt = InMemoryRuntime(build_profile(profile), clock=self.clock)

    @property
    def now(self) -> datetime:
        return self.clock.now()

    async def step(self, step: Mapping[str, Any]) -> Line:
        """Play ``step`` (its ``result`` and ``out``, if any, are not read); returns the
        step with what it did."""
        at = datetime.fromisoformat(step["clock"])
        if at != self.clock.now():
            self.clock.set(at)
        result = await self._perform(step)
        out = await self._flush()
        line = {k: step[k] for k in _STEP_KEYS if k in step}
        line["result"] = result
        line["out"] = out
        return line

    async def _perform(self, step: Mapping[str, Any]) -> Line:
        service = self.rt.service
        op = step["op"]
        if op == "deliver":
            try:
                return _summary(await service.handle_message(step["topic"], _copy(step["message"])))
            except PipelineStateError as exc:
                return _error(exc)
        if op == "deliver_many":
            results = await service.handle_many([(t, _copy(m)) for t, m in step["messages"]])
            return {"results": [_summary(r) if isinstance(r, HandleResult) else _error(r) for r in results]}
        if op == "execute":
            name = step["command"]
            payload = (
                _OPERATOR[name](**step["args"])
                if name in _OPERATOR
                else _WIRE_MODELS[name].model_validate(step["args"])
            )
            try:
                result = await service.execute(
                    payload, event_id=step["event_id"], correlation_id=step["correlation_id"]
                )
            except PipelineStateError as exc:
                return _error(exc)
            return _summary(result)
        if op == "expire":
            expired = await service.expire_overdue()
            return {"results": [{"batch_id": r.batch_id, **_summary(r)} for r in expired]}
        if op == "sweep_waiting":
            letters: list[ExpiredFact] = []

            async def dead_letter(fact: ExpiredFact) -> None:
                letters.append(fact)

            sweep = await service.sweep_waiting(dead_letter, limit=10_000)
            return {
                "sweep": {
                    "resumed": sweep.resumed,
                    "denied": sweep.denied,
                    "dead_lettered": sweep.dead_lettered,
                },
                "dead_letters": [
                    {"event_id": f.event_id, "topic": f.topic, "reason": f.reason} for f in letters
                ],
            }
        raise ValueError(f"unknown step op {op!r}")

    async def _flush(self) -> list[Line]:
        """The outbox rows the step wrote (the previous step's were all published), in the
        order written; then relay them and check the bus got exactly those."""
        store, bus = self.rt.store, self.rt.bus
        rows = store.outbox_messages()
        before = len(bus.messages())
        await self.rt.relay.drain()
        published = bus.messages()[before:]
        if store.outbox_messages():
            raise AssertionError("the relay left outbox rows unpublished")
        if Counter(m.event_id for m in published) != Counter(m.event_id for m in rows):
            raise AssertionError("the relay published other messages than the outbox rows")
        for key in {m.key for m in rows}:
            if [m.event_id for m in rows if m.key == key] != [m.event_id for m in published if m.key == key]:
                raise AssertionError(f"the relay changed the order of key {key!r}")
        return [wire_record(m) for m in rows]

    async def end(self) -> Line:
        """Every batch's status (as the profile names it) and the waiting set, after the last step."""
        store = self.rt.store
        names = self.rt.service.profile.state_names
        batches = await store.list_batches(limit=10_000)
        waiting = await store.list_waiting(limit=10_000)
        return {
            "end": {
                "batches": {b.batch_id: names.show(b.status.value) for b in batches},
                "waiting": [[f.event_id, f.batch_id, f.waits_for] for f in waiting],
            }
        }


async def replay(header: Mapping[str, Any], steps: Sequence[Mapping[str, Any]]) -> list[Line]:
    """Play the stored steps of a scenario; returns the lines its file must hold."""
    driver = Driver(header["profile"])
    lines: list[Line] = [dict(header)]
    for step in steps:
        lines.append(await driver.step(step))
    lines.append(await driver.end())
    return lines


# -- the demo --------------------------------------------------------------------------------


class _LoggingRuntime(InMemoryRuntime):
    """The demo's runtime, logging each inbound message with the instant it was handed in."""

    def __init__(self) -> None:
        super().__init__()
        self.inbound: list[tuple[datetime, str, Any]] = []
        self.emitted: list[list[dict[str, Any]]] = []

    async def deliver(self, topic: str, envelope: Mapping[str, Any] | str | bytes) -> list[dict[str, Any]]:
        self.inbound.append((self.clock.now(), topic, _copy(envelope)))
        emitted = await super().deliver(topic, envelope)
        self.emitted.append(emitted)
        return emitted


async def _demo_steps(scenario: Scenario) -> tuple[list[Line], list[list[str]]]:
    """The demo's inbound messages as steps, and the event ids each delivery emitted live."""
    from pipeline_state.profiles.huleedu.demo import play
    from pipeline_state.profiles.huleedu.demo.platform import Platform
    from pipeline_state.profiles.huleedu.demo.render import Renderer

    runtime = _LoggingRuntime()
    platform = Platform(scenario.seed, runtime=runtime)
    checks = await play(
        scenario.seed, scenario.batches, Renderer(plain=True, file=io.StringIO()), platform=platform
    )
    if not checks.ok:
        raise AssertionError(f"the demo story did not check out: {checks.violations}")
    steps = [
        {"step": i, "clock": at.isoformat(), "op": "deliver", "topic": topic, "message": message}
        for i, (at, topic, message) in enumerate(runtime.inbound)
    ]
    live = [[m["value"]["event_id"] for m in out] for out in runtime.emitted]
    return steps, live


async def _record_demo(scenario: Scenario) -> list[Line]:
    steps, live = await _demo_steps(scenario)
    lines = await replay(scenario.header(), steps)
    for step, ids in zip(lines[1:-1], live, strict=True):
        replayed = [json.loads(m["value"])["event_id"] for m in step["out"]]
        if replayed != ids:
            raise AssertionError(f"demo step {step['step']}: replay emitted {replayed}, the demo saw {ids}")
    return lines


# -- the walks -------------------------------------------------------------------------------

_SENDERS = {
    Topic.BATCH_REGISTER.value: "api_gateway_service",
    Topic.PIPELINE_REQUEST.value: "api_gateway_service",
    Topic.CONTENT_PROVISIONED.value: "essay_lifecycle_service",
    Topic.ESSAYS_READY.value: "essay_lifecycle_service",
    Topic.VALIDATION_ERRORS.value: "essay_lifecycle_service",
    Topic.PHASE_OUTCOME.value: "essay_lifecycle_service",
    Topic.ASSOCIATIONS_CONFIRMED.value: "class_management_service",
}
_NOT_READY = (
    BatchStatus.AWAITING_CONTENT_VALIDATION,
    BatchStatus.AWAITING_GROUP_VALIDATION,
    BatchStatus.GROUP_VALIDATION_COMPLETED,
)
_OUTCOME_KINDS = ("completed_successfully", "completed_with_failures", "failed_critically")


class Walker:
    """Chooses each next input of a walk from the seed and the engine's current state."""

    def __init__(self, scenario: Scenario, driver: Driver) -> None:
        self.name = scenario.name
        self.rng = random.Random(f"golden-walk:{scenario.seed}")
        self.driver = driver
        self.profile = driver.rt.service.profile
        self.max_batches = self.rng.choice([1, 2, 2, 3])
        self.registrations: dict[str, Line] = {}
        self.planned: dict[str, Line] = {}
        self.sent: list[Line] = []
        self.outcomes: list[Line] = []
        self.counter = 0
        self.lines: list[Line] = []

    # -- helpers ---------------------------------------------------------------------------
    def new_id(self) -> str:
        self.counter += 1
        return str(uuid.uuid5(_IDS, f"{self.name}:{self.counter}"))

    def envelope(self, topic: str, data: Line, correlation_id: str | None = None) -> Line:
        return {
            "event_id": self.new_id(),
            "event_type": topic,
            "event_timestamp": self.driver.now.isoformat(),
            "source_service": _SENDERS[topic],
            "schema_version": 1,
            "correlation_id": correlation_id or self.new_id(),
            "data": data,
            "metadata": None,
        }

    def deliver(self, topic: str, data: Line, correlation_id: str | None = None) -> Line:
        return {"op": "deliver", "topic": topic, "message": self.envelope(topic, data, correlation_id)}

    def execute(self, command: str, **args: Any) -> Line:
        return {
            "op": "execute",
            "command": command,
            "args": args,
            "event_id": self.new_id(),
            "correlation_id": self.new_id(),
        }

    async def state(self, batch_id: str) -> BatchState | None:
        return await self.driver.rt.store.load(batch_id)

    def next_batch(self) -> str | None:
        count = len(self.registrations)
        return f"b{count}" if count < self.max_batches else None

    def plan_registration(self, batch_id: str) -> Line:
        if batch_id in self.planned:
            return self.planned[batch_id]
        rng = self.rng
        essays = rng.randint(1, 4)
        guest = rng.random() < 0.5
        data: Line = {
            "batch_id": batch_id,
            "expected_essay_count": essays,
            "essay_ids": None if rng.random() < 0.25 else [f"{batch_id}-e{i}" for i in range(essays)],
            "user_id": "teacher-1",
            "class_id": None if guest else f"class-{batch_id}",
            "course_code": rng.choice(["ENG5", "ENG6", "SV1"]),
            "student_prompt_ref": "prompt-1" if rng.random() < 0.6 else None,
        }
        if rng.random() < 0.3:
            data["org_id"] = rng.choice(["org-rich", "org-1"])
        if rng.random() < 0.3:
            data["language"] = rng.choice(["en", "sv"])
        self.planned[batch_id] = data
        return data

    def essay_ids(self, batch_id: str) -> list[str]:
        data = self.registrations.get(batch_id) or self.plan_registration(batch_id)
        return [f"{batch_id}-e{i}" for i in range(int(data["expected_essay_count"]))]

    def subset(self, items: Sequence[str], *, min_size: int = 1) -> list[str]:
        chosen = [i for i in items if self.rng.random() < 0.7]
        if len(chosen) < min_size:
            chosen = list(items[:min_size])
        return chosen

    @staticmethod
    def refs(ids: Iterable[str], suffix: str) -> list[Line]:
        return [{"essay_id": e, "text_storage_id": f"{e}-{suffix}"} for e in ids]

    # -- inputs ----------------------------------------------------------------------------
    def register(self, batch_id: str) -> Line:
        data = self.plan_registration(batch_id)
        self.registrations[batch_id] = data
        return self.deliver(Topic.BATCH_REGISTER.value, data)

    def readiness(self, what: str, batch_id: str) -> Line:
        ids = self.essay_ids(batch_id)
        if what == "provision":
            chosen = ids if self.rng.random() < 0.8 else self.subset(ids)
            data: Line = {
                "batch_id": batch_id,
                "provisioned_count": len(chosen),
                "expected_count": len(ids),
                "essays_for_processing": self.refs(chosen, "raw"),
            }
            return self.deliver(Topic.CONTENT_PROVISIONED.value, data)
        if what == "associations":
            reg = self.registrations.get(batch_id) or self.plan_registration(batch_id)
            data = {
                "batch_id": batch_id,
                "class_id": reg.get("class_id") or "class-x",
                "associations": [
                    {"essay_id": e, "student_id": None if self.rng.random() < 0.2 else f"student-{e}"}
                    for e in ids
                ],
                "timeout_triggered": self.rng.random() < 0.2,
            }
            return self.deliver(Topic.ASSOCIATIONS_CONFIRMED.value, data)
        chosen = ids if self.rng.random() < 0.8 else self.subset(ids)
        return self.deliver(
            Topic.ESSAYS_READY.value, {"batch_id": batch_id, "ready_essays": self.refs(chosen, "ready")}
        )

    def validation_errors(self, batch_id: str, critical: bool | None = None) -> Line:
        flag = self.rng.random() < 0.7 if critical is None else critical
        data = {
            "batch_id": batch_id,
            "error_summary": {"total_errors": self.rng.randint(1, 3), "critical_failure": flag},
        }
        return self.deliver(Topic.VALIDATION_ERRORS.value, data)

    def request(self, batch_id: str, pipeline: str | None = None, *, prompt: bool | None = None) -> Line:
        rng = self.rng
        name = pipeline or rng.choice(list(self.profile.catalog.names))
        with_prompt = rng.random() < 0.6 if prompt is None else prompt
        retry = rng.random() < 0.15
        corr = self.new_id()
        data: Line = {
            "batch_id": batch_id,
            "requested_pipeline": name,
            "client_correlation_id": corr,
            "user_id": rng.choice(["teacher-1", "teacher-1", "teacher-2"]),
            "is_retry": retry,
            "retry_reason": "teacher asked again" if retry else None,
            "prompt_payload": {"prompt_ref": f"prompt-{rng.randint(2, 9)}"} if with_prompt else None,
        }
        return self.deliver(Topic.PIPELINE_REQUEST.value, data, corr)

    def outcome(
        self,
        batch_id: str,
        phase: str,
        corr: str,
        essays: Sequence[str],
        kind: str | None = None,
        *,
        extra: Sequence[str] = (),
    ) -> Line:
        status = kind or self.rng.choices(_OUTCOME_KINDS, weights=[55, 25, 20])[0]
        if status == "completed_successfully":
            processed = list(essays)
        elif status == "completed_with_failures":
            processed = self.subset(essays, min_size=min(1, len(essays)))
        else:
            processed = []
        failed = [e for e in essays if e not in processed]
        data = {
            "batch_id": batch_id,
            "phase_name": phase,
            "phase_status": status,
            "processed_essays": self.refs([*processed, *extra], f"{phase}-{self.counter}"),
            "failed_essay_ids": failed,
            "correlation_id": corr,
        }
        step = self.deliver(Topic.PHASE_OUTCOME.value, data, corr)
        self.outcomes.append(step)
        return step

    # -- choosing --------------------------------------------------------------------------
    async def choose(self) -> Line:
        """The next input (a step without its clock)."""
        rng = self.rng
        batches = sorted(self.registrations)
        states = {b: await self.state(b) for b in batches}
        options: list[tuple[str, int]] = []
        upcoming = self.next_batch()
        if upcoming is not None:
            options += [("register", 10 if not batches else 4), ("early_fact", 2)]
        for b, s in states.items():
            assert s is not None
            if s.status in _NOT_READY:
                options += [(f"ready:{b}", 10), (f"early_readiness:{b}", 2)]
            elif s.status is BatchStatus.READY_FOR_PIPELINE_EXECUTION:
                options += [(f"request:{b}", 10), (f"retry:{b}", 2), (f"record:{b}", 1), (f"rare:{b}", 1)]
            elif s.status is BatchStatus.PROCESSING_PIPELINES:
                options += [(f"answer:{b}", 14), (f"tick:{b}", 3), (f"disturb_run:{b}", 4)]
            else:
                options += [(f"terminal:{b}", 1)]
        options += [("disturb", 3)]
        if await self.driver.rt.store.count_waiting():
            options += [("sweep", 2)]
        kinds, weights = zip(*options, strict=True)
        choice = rng.choices(kinds, weights=weights)[0]
        kind, _, batch_id = choice.partition(":")
        state = states.get(batch_id)
        if kind == "register":
            assert upcoming is not None
            return self.register(upcoming)
        if kind == "early_fact":
            assert upcoming is not None
            return self.early_fact(upcoming)
        if kind == "ready":
            assert state is not None
            return self.readiness(self.next_readiness(state), batch_id)
        if kind == "early_readiness":
            assert state is not None
            return self.early_readiness(state)
        if kind == "request":
            return self.request(batch_id)
        if kind == "retry":
            phase = rng.choice([*self.profile.catalog.phases, "no_such_phase"])
            return self.execute(
                "RetryPhase", batch_id=batch_id, phase_name=phase, user_id="teacher-1", retry_reason="redo"
            )
        if kind == "record":
            phase = rng.choice([*self.profile.catalog.phases, "no_such_phase"])
            return self.execute(
                "RecordPhaseCompletion", batch_id=batch_id, phase_name=phase, success=rng.random() < 0.7
            )
        if kind == "rare":
            return self.rare(batch_id)
        if kind == "answer":
            assert state is not None
            return self.answer(state)
        if kind == "tick":
            assert state is not None
            return self.tick(state)
        if kind == "disturb_run":
            assert state is not None
            return self.disturb_run(state)
        if kind == "terminal":
            return self.terminal(batch_id)
        if kind == "sweep":
            return await self.sweep()
        return await self.disturb()

    @staticmethod
    def next_readiness(state: BatchState) -> str:
        return {
            BatchStatus.AWAITING_CONTENT_VALIDATION: "provision",
            BatchStatus.AWAITING_GROUP_VALIDATION: "associations",
            BatchStatus.GROUP_VALIDATION_COMPLETED: "essays_ready",
        }[state.status]

    def early_fact(self, batch_id: str) -> Line:
        """A fact for the batch the next registration creates, before it exists."""
        what = self.rng.choice(
            ["provision", "associations", "essays_ready", "request", "outcome", "validation"]
        )
        if what == "request":
            return self.request(batch_id, prompt=True)
        if what == "outcome":
            phase = self.rng.choice(list(self.profile.catalog.phases))
            return self.outcome(batch_id, phase, self.new_id(), self.essay_ids(batch_id))
        if what == "validation":
            return self.validation_errors(batch_id)
        return self.readiness(what, batch_id)

    def early_readiness(self, state: BatchState) -> Line:
        path = ["provision"] if not state.has_group else ["provision", "associations", "essays_ready"]
        later = path[path.index(self.next_readiness(state)) + 1 :]
        what = self.rng.choice([*later, "request"])
        if what == "request":
            return self.request(state.batch_id)
        return self.readiness(what, state.batch_id)

    def rare(self, batch_id: str) -> Line:
        what = self.rng.choice(
            [
                "archive",
                "cancel_batch",
                "validation",
                "misplaced",
                "misplaced",
                "cancel_idle",
                "unknown_pipeline",
            ]
        )
        if what == "archive":
            return self.execute("ArchiveBatch", batch_id=batch_id)
        if what == "cancel_batch":
            return self.execute("CancelBatch", batch_id=batch_id, reason="course dropped")
        if what == "validation":
            return self.validation_errors(batch_id)
        if what == "cancel_idle":
            return self.execute(
                "CancelRun", batch_id=batch_id, user_id="teacher-1", reason="nothing to cancel"
            )
        if what == "unknown_pipeline":
            return self.request(batch_id, "no_such_pipeline")
        return self.readiness(self.rng.choice(["provision", "associations", "essays_ready"]), batch_id)

    def answer(self, state: BatchState, kind: str | None = None) -> Line:
        run = state.active_run
        assert run is not None
        active = [p for p in run.phases if p.is_active]
        if not active:
            return self.tick(state)
        phase = self.rng.choice(active)
        essays = [e.item_id for e in phase.inputs]
        return self.outcome(state.batch_id, phase.name, run.correlation_id, essays, kind)

    def tick(self, state: BatchState) -> Line:
        """Time passes (often past the earliest deadline), then the sweeper runs."""
        run = state.active_run
        assert run is not None
        deadlines = [p.deadline_at for p in run.phases if p.is_active and p.deadline_at is not None]
        now = self.driver.now
        if deadlines and self.rng.random() < 0.75:
            seconds = max(0.0, (min(deadlines) - now).total_seconds()) + self.rng.choice([0, 1, 5])
        else:
            seconds = float(self.rng.randint(1, 15))
        self.driver.clock.advance(seconds)
        return {"op": "expire"}

    def disturb_run(self, state: BatchState) -> Line:
        """Something that meets an active run: a premature, replayed, stale, foreign or
        malformed outcome, a request while active, a cancel, a recorded completion..."""
        rng = self.rng
        run = state.active_run
        assert run is not None
        b = state.batch_id
        ids = [e.item_id for e in state.items]
        what = rng.choice(
            [
                "premature",
                "premature_http",
                "replay",
                "replay",
                "stale",
                "foreign",
                "foreign",
                "while_active",
                "cancel_run",
                "record_active",
                "bad_items",
                "unknown_phase",
                "burst",
                "validation",
                "cancel_batch",
                "misplaced",
                "expire_now",
            ]
        )
        pending = [p for p in run.phases if p.status.value == "pending_dependencies"]
        active = [p for p in run.phases if p.is_active]
        if what == "premature" and pending:
            phase = rng.choice(pending)
            return self.outcome(b, phase.name, run.correlation_id, ids)
        if what == "premature_http" and pending:
            # By another route (HTTP) an outcome never waits: ignored now.
            phase = rng.choice(pending)
            step = self.outcome(b, phase.name, run.correlation_id, ids)
            return self.execute("ELSBatchPhaseOutcomeV1", **step["message"]["data"])
        if what == "replay" and self.outcomes:
            mine = [o for o in self.outcomes if o["message"]["correlation_id"] == run.correlation_id]
            old = rng.choice(mine or self.outcomes)
            return self.deliver(old["topic"], old["message"]["data"], old["message"]["correlation_id"])
        if what == "stale" and state.history:
            corr = rng.choice(state.history).correlation_id
            phase = rng.choice(active or list(run.phases))
            return self.outcome(b, phase.name, corr, [e.item_id for e in phase.inputs] or ids)
        if what == "foreign" and active:
            phase = rng.choice(active)
            return self.outcome(b, phase.name, self.new_id(), [e.item_id for e in phase.inputs])
        if what == "cancel_run":
            return self.execute("CancelRun", batch_id=b, user_id="teacher-1", reason="teacher cancelled")
        if what == "record_active":
            phase = rng.choice(list(run.phases))
            return self.execute(
                "RecordPhaseCompletion", batch_id=b, phase_name=phase.name, success=rng.random() < 0.6
            )
        if what == "bad_items" and active:
            phase = rng.choice(active)
            essays = [e.item_id for e in phase.inputs]
            return self.outcome(
                b, phase.name, run.correlation_id, essays, "completed_successfully", extra=["intruder-e9"]
            )
        if what == "unknown_phase":
            return self.outcome(b, "no_such_phase", run.correlation_id, ids)
        if what == "burst" and active:
            phase = rng.choice(active)
            first = self.outcome(b, phase.name, run.correlation_id, [e.item_id for e in phase.inputs])
            second = self.request(b)
            messages = [
                [first["topic"], first["message"]],
                [first["topic"], first["message"]],
                [second["topic"], second["message"]],
            ]
            return {"op": "deliver_many", "messages": messages}
        if what == "validation":
            return self.validation_errors(b)
        if what == "cancel_batch" and rng.random() < 0.5:
            return self.execute("CancelBatch", batch_id=b, reason="course dropped")
        if what == "misplaced":
            return self.readiness(rng.choice(["provision", "associations", "essays_ready"]), b)
        if what == "expire_now":
            return self.execute("ExpireOverdue", batch_id=b)
        return self.request(b)

    def terminal(self, batch_id: str) -> Line:
        what = self.rng.choice(["request", "archive", "cancel_batch", "validation", "provision", "retry"])
        if what == "request":
            return self.request(batch_id)
        if what == "archive":
            return self.execute("ArchiveBatch", batch_id=batch_id)
        if what == "cancel_batch":
            return self.execute("CancelBatch", batch_id=batch_id)
        if what == "validation":
            return self.validation_errors(batch_id, critical=True)
        if what == "retry":
            return self.execute("RetryPhase", batch_id=batch_id, phase_name="spellcheck", user_id="teacher-1")
        return self.readiness("provision", batch_id)

    async def sweep(self) -> Line:
        """Time passes (not at all, past the oldest waiting fact's window, or past every
        waiting fact's), then the waiting set is swept."""
        window = self.driver.rt.service.waiting_window_seconds
        facts = await self.driver.rt.store.list_waiting(limit=10_000)
        now = self.driver.now
        ages = [(now - f.arrived_at).total_seconds() for f in facts]
        seconds = self.rng.choice([0.0, max(0.0, window + 1 - max(ages)), max(0.0, window + 1 - min(ages))])
        self.driver.clock.advance(seconds)
        return {"op": "sweep_waiting"}

    async def disturb(self) -> Line:
        """Global disruptions: redelivery with the same id, requests for a batch that does
        not exist (by Kafka they wait, by HTTP they are denied), unknown pipelines, input
        that breaks the contract."""
        rng = self.rng
        what = rng.choice(
            [
                "redeliver",
                "redeliver",
                "ghost_request",
                "ghost_http",
                "ghost_outcome",
                "unknown_pipeline",
                "invalid",
            ]
        )
        if what == "redeliver" and self.sent:
            return dict(rng.choice(self.sent))
        if what == "ghost_outcome":
            return self.outcome("ghost", "spellcheck", self.new_id(), ["ghost-e0"])
        if what == "ghost_http":
            step = self.request("ghost", prompt=True)
            return self.execute("ClientBatchPipelineRequestV1", **step["message"]["data"])
        if what == "unknown_pipeline" and self.registrations:
            return self.request(rng.choice(sorted(self.registrations)), "no_such_pipeline")
        if what == "invalid":
            step = self.request(rng.choice(sorted(self.registrations) or ["ghost"]))
            del step["message"]["data"]["requested_pipeline"]
            return step
        return self.request("ghost", prompt=True)

    async def finish(self) -> Line | None:
        """Answer the open runs (successfully, mostly) until none is left."""
        for batch_id in sorted(self.registrations):
            state = await self.state(batch_id)
            if state is not None and state.active_run is not None:
                kind = "completed_successfully" if self.rng.random() < 0.8 else "completed_with_failures"
                return self.answer(state, kind)
        return None

    # -- the walk --------------------------------------------------------------------------
    async def play_step(self, step: Line) -> Line:
        """Play ``step`` now; returns its line (kept in :attr:`lines`)."""
        if step["op"] in ("deliver", "execute"):
            self.sent.append(dict(step))
        full = {"step": len(self.lines), "clock": self.driver.now.isoformat(), **step}
        line = await self.driver.step(full)
        self.lines.append(line)
        return line

    async def play(self) -> list[Line]:
        total = self.rng.randint(12, 24)
        for i in range(total + 16):
            self.driver.clock.advance(self.rng.choice([0, 0, 1, 2, 3, 5, 10]))
            step = await self.choose() if i < total else await self.finish()
            if step is None:
                break
            await self.play_step(step)
        return self.lines

    # -- helpers of the directed stories ---------------------------------------------------
    def register_as(
        self, batch_id: str, *, essays: int = 3, guest: bool = True, prompt: bool = True, **extra: Any
    ) -> Line:
        data: Line = {
            "batch_id": batch_id,
            "expected_essay_count": essays,
            "essay_ids": [f"{batch_id}-e{i}" for i in range(essays)],
            "user_id": "teacher-1",
            "class_id": None if guest else f"class-{batch_id}",
            "course_code": "ENG5",
            "student_prompt_ref": "prompt-1" if prompt else None,
            **extra,
        }
        self.planned[batch_id] = data
        return self.register(batch_id)

    def provision(self, batch_id: str) -> Line:
        ids = self.essay_ids(batch_id)
        data = {
            "batch_id": batch_id,
            "provisioned_count": len(ids),
            "expected_count": len(ids),
            "essays_for_processing": self.refs(ids, "raw"),
        }
        return self.deliver(Topic.CONTENT_PROVISIONED.value, data)

    async def run_of(self, batch_id: str) -> Any:
        state = await self.state(batch_id)
        assert state is not None, f"{batch_id} does not exist"
        assert state.active_run is not None, f"{batch_id} has no active run"
        return state.active_run

    async def answer_phase(
        self, batch_id: str, phase: str, kind: str, processed: Sequence[int] | None = None
    ) -> Line:
        """The outcome of ``phase`` of the active run over the essays it was given;
        ``processed`` picks them by position (default: all, or none when failed)."""
        run = await self.run_of(batch_id)
        found = run.phase(phase)
        assert found is not None, f"{phase} is not in the run on {batch_id}"
        assert found.is_active, f"{phase} is not active on {batch_id}"
        essays = [e.item_id for e in found.inputs]
        chosen = essays if processed is None else [essays[i] for i in processed]
        if kind == "failed_critically":
            chosen = []
        data = {
            "batch_id": batch_id,
            "phase_name": phase,
            "phase_status": kind,
            "processed_essays": self.refs(chosen, f"{phase}-{self.counter}"),
            "failed_essay_ids": [e for e in essays if e not in chosen],
            "correlation_id": run.correlation_id,
        }
        step = self.deliver(Topic.PHASE_OUTCOME.value, data, run.correlation_id)
        self.outcomes.append(step)
        return step

    def advance(self, seconds: float) -> None:
        self.driver.clock.advance(seconds)


# -- directed stories ------------------------------------------------------------------------
# Each names, in order, what it must show; the walks add the random interleavings.


async def _fan_in_and_pruning(w: Walker) -> None:
    """Guest batch: ai_feedback (spellcheck partial, nlp, fan-in), comprehensive (three
    phases pruned, cj fed by spellcheck's outputs), nlp (all pruned: completes at once),
    retry of nlp (fails), recorded completions, archive, requests after archive."""
    await w.play_step(w.register_as("g1", essays=3))
    w.advance(2)
    await w.play_step(w.provision("g1"))
    w.advance(1)
    await w.play_step(w.request("g1", "ai_feedback", prompt=False))
    w.advance(4)
    await w.play_step(await w.answer_phase("g1", "spellcheck", "completed_with_failures", [0, 1]))
    w.advance(3)
    await w.play_step(await w.answer_phase("g1", "nlp", "completed_successfully"))
    w.advance(6)
    await w.play_step(await w.answer_phase("g1", "ai_feedback", "completed_with_failures", [1]))
    w.advance(5)
    await w.play_step(w.request("g1", "comprehensive", prompt=True))
    w.advance(7)
    await w.play_step(await w.answer_phase("g1", "cj_assessment", "completed_successfully"))
    w.advance(1)
    await w.play_step(w.request("g1", "nlp", prompt=False))
    w.advance(1)
    await w.play_step(
        w.execute("RetryPhase", batch_id="g1", phase_name="nlp", user_id="teacher-1", retry_reason="redo")
    )
    w.advance(3)
    await w.play_step(await w.answer_phase("g1", "nlp", "failed_critically"))
    w.advance(1)
    await w.play_step(w.execute("RecordPhaseCompletion", batch_id="g1", phase_name="nlp", success=True))
    await w.play_step(
        w.execute("RecordPhaseCompletion", batch_id="g1", phase_name="spellcheck", success=False)
    )
    await w.play_step(
        w.execute("RecordPhaseCompletion", batch_id="g1", phase_name="ai_feedback", success=True)
    )
    await w.play_step(w.request("g1", "ai_feedback", prompt=False))
    w.advance(1)
    await w.play_step(w.execute("ArchiveBatch", batch_id="g1"))
    await w.play_step(w.request("g1", "nlp", prompt=True))
    await w.play_step(w.execute("ArchiveBatch", batch_id="g1"))


async def _early_facts(w: Walker) -> None:
    """Facts ahead of their turn wait and resume in arrival order: provisioning and a
    request before the registration, essays-ready before the associations, an outcome
    before its phase is dispatched (by HTTP: ignored), an outcome of no run yet; then
    sweeps expire what never applies."""
    w.planned["r1"] = {
        "batch_id": "r1",
        "expected_essay_count": 3,
        "essay_ids": ["r1-e0", "r1-e1", "r1-e2"],
        "user_id": "teacher-1",
        "class_id": "class-r1",
        "course_code": "ENG5",
        "student_prompt_ref": "prompt-1",
    }
    await w.play_step(w.provision("r1"))
    w.advance(1)
    await w.play_step(w.request("r1", "nlp", prompt=False))
    w.advance(1)
    await w.play_step(w.register("r1"))
    w.advance(2)
    await w.play_step(w.readiness("essays_ready", "r1"))
    w.advance(2)
    await w.play_step(w.readiness("associations", "r1"))
    run = await w.run_of("r1")
    nlp_early = w.outcome(
        "r1", "nlp", run.correlation_id, ["r1-e0", "r1-e1", "r1-e2"], "completed_successfully"
    )
    w.advance(1)
    http = dict(w.execute("ELSBatchPhaseOutcomeV1", **nlp_early["message"]["data"]))
    await w.play_step(http)
    await w.play_step(nlp_early)
    w.advance(3)
    await w.play_step(await w.answer_phase("r1", "spellcheck", "completed_successfully"))
    w.advance(2)
    # An outcome whose correlation id is no run's, while no run is active: it waits for one.
    await w.play_step(w.outcome("r1", "spellcheck", w.new_id(), ["r1-e0"], "completed_successfully"))
    # A fact for a batch that never comes, and a request for it.
    await w.play_step(w.validation_errors("never", critical=True))
    await w.play_step(w.request("never", "cj_assessment", prompt=True))
    w.advance(400)
    await w.play_step({"op": "sweep_waiting"})
    w.advance(600)
    await w.play_step({"op": "sweep_waiting"})


async def _deadlines(w: Walker) -> None:
    """Short deadlines, two re-sends: a silent spellcheck is re-sent twice with the same
    event id, then fails with a timeout, its dependent is skipped and the run fails; the
    next request dispatches spellcheck again (failed phases are never pruned); a late
    outcome of the failed run is stale; a sweeper with nothing overdue."""
    await w.play_step(w.register_as("d1", essays=2))
    await w.play_step(w.provision("d1"))
    await w.play_step(w.request("d1", "nlp", prompt=False))
    failed_run = (await w.run_of("d1")).correlation_id
    for seconds in (19, 2, 21, 21):
        w.advance(seconds)
        await w.play_step({"op": "expire"})
    w.advance(1)
    await w.play_step(w.request("d1", "cj_assessment", prompt=False))
    w.advance(5)
    await w.play_step(w.execute("ExpireOverdue", batch_id="d1"))
    await w.play_step({"op": "expire"})
    await w.play_step(w.outcome("d1", "spellcheck", failed_run, ["d1-e0", "d1-e1"], "completed_successfully"))
    await w.play_step(await w.answer_phase("d1", "spellcheck", "completed_successfully"))
    w.advance(31)
    await w.play_step({"op": "expire"})
    w.advance(30)
    await w.play_step(await w.answer_phase("d1", "cj_assessment", "completed_successfully"))
    await w.play_step(w.execute("ExpireOverdue", batch_id="d1"))


async def _denials_and_duplicates(w: Walker) -> None:
    """Every admission denial, redeliveries (same event id), replays (new id), a foreign
    correlation id (applied, flagged), conflicting and repeated registrations, bad input."""
    ghost = w.request("ghost", "nlp", prompt=True)
    await w.play_step(w.execute("ClientBatchPipelineRequestV1", **ghost["message"]["data"]))
    await w.play_step(w.register_as("n1", essays=2, prompt=False))
    registration = w.sent[-1]
    await w.play_step(w.request("n1", "nlp", prompt=True))  # nothing waits on n1: denied, not ready
    await w.play_step(w.provision("n1"))
    await w.play_step(w.request("n1", "no_such_pipeline", prompt=True))
    await w.play_step(w.request("n1", "nlp", prompt=False))
    await w.play_step(w.execute("RetryPhase", batch_id="n1", phase_name="ai_feedback", user_id="teacher-1"))
    await w.play_step(w.execute("RetryPhase", batch_id="n1", phase_name="no_such_phase", user_id="teacher-1"))
    accepted = w.request("n1", "cj_assessment", prompt=True)
    await w.play_step(accepted)
    await w.play_step(accepted)
    await w.play_step(w.request("n1", "nlp", prompt=True))
    await w.play_step(w.execute("RetryPhase", batch_id="n1", phase_name="nlp", user_id="teacher-1"))
    w.advance(3)
    outcome = await w.answer_phase("n1", "spellcheck", "completed_successfully")
    await w.play_step(outcome)
    await w.play_step(outcome)
    await w.play_step(
        w.deliver(outcome["topic"], outcome["message"]["data"], outcome["message"]["correlation_id"])
    )
    run = await w.run_of("n1")
    w.advance(4)
    await w.play_step(
        w.outcome("n1", "cj_assessment", w.new_id(), ["n1-e0", "n1-e1"], "completed_with_failures")
    )
    await w.play_step(
        w.outcome("n1", "cj_assessment", run.correlation_id, ["n1-e0"], "completed_successfully")
    )
    await w.play_step(w.execute("CancelRun", batch_id="n1", user_id="teacher-1", reason="idle"))
    await w.play_step(w.deliver(Topic.BATCH_REGISTER.value, registration["message"]["data"]))
    await w.play_step(
        w.deliver(Topic.BATCH_REGISTER.value, {**registration["message"]["data"], "user_id": "teacher-9"})
    )
    await w.play_step(w.validation_errors("n1", critical=False))
    await w.play_step(w.outcome("ghost", "no_such_phase", w.new_id(), ["ghost-e0"]))
    bad = w.request("n1", "nlp", prompt=True)
    bad["message"]["event_type"] = Topic.PHASE_OUTCOME.value
    await w.play_step(bad)
    await w.play_step(w.register_as("n2", essays=1))
    http = w.request("n2", "cj_assessment", prompt=True)
    await w.play_step(w.execute("ClientBatchPipelineRequestV1", **http["message"]["data"]))


async def _cancel_and_failures(w: Walker) -> None:
    """Sequential dispatch on a regular batch: cancel a run, a failed phase skipping its
    dependents, a critical validation error during a run; a second batch cancelled while
    processing; a batched delivery (``handle_many``) with a duplicate inside."""
    await w.play_step(w.register_as("s1", essays=4, guest=False))
    await w.play_step(w.provision("s1"))
    w.advance(3)
    await w.play_step(w.readiness("associations", "s1"))
    await w.play_step(
        w.deliver(
            Topic.ESSAYS_READY.value,
            {"batch_id": "s1", "ready_essays": w.refs(["s1-e0", "s1-e1", "s1-e2", "s1-e3"], "ready")},
        )
    )
    await w.play_step(w.request("s1", "comprehensive", prompt=False))
    w.advance(4)
    await w.play_step(await w.answer_phase("s1", "spellcheck", "completed_with_failures", [0, 2, 3]))
    w.advance(2)
    await w.play_step(w.execute("CancelRun", batch_id="s1", user_id="teacher-1", reason="wrong rubric"))
    await w.play_step(w.request("s1", "ai_feedback", prompt=False))
    w.advance(3)
    await w.play_step(await w.answer_phase("s1", "nlp", "failed_critically"))
    await w.play_step(w.request("s1", "nlp", prompt=False))
    w.advance(1)
    first = await w.answer_phase("s1", "nlp", "completed_with_failures", [0])
    again = w.request("s1", "cj_assessment", prompt=False)
    await w.play_step(
        {
            "op": "deliver_many",
            "messages": [
                [first["topic"], first["message"]],
                [first["topic"], first["message"]],
                [again["topic"], again["message"]],
            ],
        }
    )
    w.advance(2)
    await w.play_step(w.validation_errors("s1", critical=True))
    await w.play_step(w.request("s1", "nlp", prompt=False))
    await w.play_step(w.validation_errors("s1", critical=True))
    await w.play_step(w.register_as("s2", essays=2))
    await w.play_step(w.provision("s2"))
    await w.play_step(w.request("s2", "cj_assessment", prompt=False))
    await w.play_step(w.execute("CancelBatch", batch_id="s2", reason="course dropped"))
    await w.play_step(w.execute("CancelBatch", batch_id="s2"))
    await w.play_step(w.execute("ArchiveBatch", batch_id="s2"))


async def _guards(w: Walker) -> None:
    """Credits: a request that costs more than the ledger holds is denied; the org's
    balance is used when the batch has one."""
    await w.play_step(w.register_as("c1", essays=4))
    await w.play_step(w.provision("c1"))
    await w.play_step(w.request("c1", "comprehensive", prompt=False))
    await w.play_step(w.request("c1", "nlp", prompt=False))
    await w.play_step(await w.answer_phase("c1", "spellcheck", "completed_successfully"))
    await w.play_step(await w.answer_phase("c1", "nlp", "completed_successfully"))
    await w.play_step(w.register_as("c2", essays=4, org_id="org-rich"))
    await w.play_step(w.provision("c2"))
    await w.play_step(w.request("c2", "comprehensive", prompt=False))


async def _rate_limit(w: Walker) -> None:
    """Rate limit (2 runs in 120 s): a run that completes at once (everything pruned) still
    counts; the third request is denied until the window has passed."""
    await w.play_step(w.register_as("l1", essays=2))
    await w.play_step(w.provision("l1"))
    await w.play_step(w.request("l1", "nlp", prompt=False))
    w.advance(5)
    await w.play_step(await w.answer_phase("l1", "spellcheck", "completed_successfully"))
    await w.play_step(await w.answer_phase("l1", "nlp", "completed_with_failures", [1]))
    await w.play_step(w.request("l1", "nlp", prompt=False))
    await w.play_step(w.request("l1", "cj_assessment", prompt=False))
    w.advance(121)
    await w.play_step(w.request("l1", "cj_assessment", prompt=False))


SCRIPTS = {
    "fan-in-and-pruning": _fan_in_and_pruning,
    "early-facts": _early_facts,
    "deadlines": _deadlines,
    "denials-and-duplicates": _denials_and_duplicates,
    "cancel-and-failures": _cancel_and_failures,
    "guards": _guards,
    "rate-limit": _rate_limit,
}


async def _record_walk(scenario: Scenario) -> list[Line]:
    driver = Driver(scenario.profile)
    walker = Walker(scenario, driver)
    if scenario.kind == "script":
        await SCRIPTS[scenario.name.removeprefix("directed-")](walker)
        steps = walker.lines
    else:
        steps = await walker.play()
    lines = [scenario.header(), *steps, await driver.end()]
    # The stored inputs alone must give the same lines (nothing hidden in the walker).
    again = await replay(scenario.header(), steps)
    if again != lines:
        raise AssertionError(f"{scenario.name}: replaying the recorded steps gives other lines")
    return lines


async def record(scenario: Scenario) -> list[Line]:
    """Play ``scenario`` from its seed and return the lines of its file."""
    if scenario.kind == "demo":
        return await _record_demo(scenario)
    return await _record_walk(scenario)


# -- files and differences -------------------------------------------------------------------


def dump_line(line: Mapping[str, Any]) -> str:
    return json.dumps(line, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def load_lines(path: Path) -> list[Line]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(text) for text in f if text.strip()]


def _value_diff(want: str, got: str, limit: int = 12) -> list[str]:
    """Field-level differences between two JSON record values (paths and values)."""
    try:
        a, b = json.loads(want), json.loads(got)
    except ValueError:
        return [f"expected bytes {want!r}", f"actual bytes   {got!r}"]
    out: list[str] = []

    def walk(x: Any, y: Any, path: str) -> None:
        if len(out) >= limit:
            return
        if isinstance(x, dict) and isinstance(y, dict):
            for k in list(x) + [k for k in y if k not in x]:
                if k not in y:
                    out.append(f"{path}.{k}: missing (expected {json.dumps(x[k])[:120]})")
                elif k not in x:
                    out.append(f"{path}.{k}: unexpected {json.dumps(y[k])[:120]}")
                else:
                    walk(x[k], y[k], f"{path}.{k}")
        elif isinstance(x, list) and isinstance(y, list) and len(x) == len(y):
            for i, (p, q) in enumerate(zip(x, y, strict=True)):
                walk(p, q, f"{path}[{i}]")
        elif x != y or type(x) is not type(y):
            out.append(f"{path}: expected {json.dumps(x)[:160]}, got {json.dumps(y)[:160]}")

    walk(a, b, "value")
    if not out:
        out.append("same JSON, different bytes (key order, spacing or escaping):")
        out.append(f"  expected {want[:300]}")
        out.append(f"  actual   {got[:300]}")
    return out


def _what(line: Mapping[str, Any]) -> str:
    op = line.get("op")
    if op == "deliver":
        data = line["message"].get("data", {})
        detail = data.get("phase_name") or data.get("requested_pipeline") or ""
        return f"deliver {line['topic']} {data.get('batch_id', '')} {detail}".rstrip()
    if op == "execute":
        return f"execute {line['command']} {json.dumps(line['args'], sort_keys=True)}"
    return str(op)


def describe_difference(name: str, expected: Sequence[Line], actual: Sequence[Line]) -> str | None:
    """``None`` when the lines are equal, else a message naming the scenario, the first
    differing step and message, and how they differ."""
    for index, (want, got) in enumerate(zip(expected, actual, strict=False)):
        if dump_line(want) == dump_line(got):
            continue
        where = f"scenario {name!r}, line {index + 1} of {name}.jsonl"
        if "step" in want:
            where += f" (step {want['step']} at {want['clock']}: {_what(want)})"
        lines = [f"golden wire mismatch in {where}"]
        if want.get("result") != got.get("result"):
            lines.append(f"  handling result: expected {dump_line(want.get('result', {}))}")
            lines.append(f"                   actual   {dump_line(got.get('result', {}))}")
        w_out, g_out = want.get("out", []), got.get("out", [])
        if w_out != g_out:
            lines.append(
                f"  emitted {len(g_out)} messages, expected {len(w_out)}: "
                f"expected topics {[m['topic'] for m in w_out]}, actual {[m['topic'] for m in g_out]}"
            )
            for i, (m, n) in enumerate(zip(w_out, g_out, strict=False)):
                if m == n:
                    continue
                lines.append(f"  first differing message: #{i} on {m['topic']}")
                for field in ("topic", "key", "headers"):
                    if m[field] != n[field]:
                        lines.append(f"    {field}: expected {m[field]!r}, got {n[field]!r}")
                if m["value"] != n["value"]:
                    lines.extend(f"    {d}" for d in _value_diff(m["value"], n["value"]))
                break
        if "end" in want:
            lines.append(f"  end state: expected {dump_line(want)}")
            lines.append(f"             actual   {dump_line(got)}")
        return "\n".join(lines)
    if len(expected) != len(actual):
        return f"golden wire mismatch in scenario {name!r}: {len(actual)} lines, expected {len(expected)}"
    return None


REGENERATE_HINT = (
    "If (and only if) this wire change is intended, regenerate the recordings with\n"
    "    .venv/bin/python -m tests.golden.record\n"
    "and review the diff of tests/golden/data/ before committing it."
)


def coverage(all_lines: Mapping[str, Sequence[Line]]) -> Counter[str]:
    """What the recordings exercise: labels, errors, topics, denial reasons, final statuses."""
    seen: Counter[str] = Counter()

    def results(result: Mapping[str, Any]) -> Iterable[Mapping[str, Any]]:
        if "results" in result:
            for r in result["results"]:
                yield from results(r)
            return
        yield result
        for r in result.get("resumed", ()):
            yield from results(r)

    for lines in all_lines.values():
        for line in lines:
            if "op" not in line:
                continue
            seen[f"op:{line['op']}"] += 1
            if line["op"] == "execute":
                seen[f"command:{line['command']}"] += 1
            if line["op"] == "sweep_waiting" and line["result"]["dead_letters"]:
                seen["sweep:dead_lettered"] += 1
            if line["op"] == "sweep_waiting" and line["result"]["sweep"]["denied"]:
                seen["sweep:denied"] += 1
            for r in results(line["result"]):
                if "label" in r:
                    label = r["label"]
                    seen[f"label:{label}"] += 1
                if "error" in r:
                    seen[f"error:{r['error']}"] += 1
                for flag in r.get("flags", ()):
                    seen[f"flag:{flag}"] += 1
                if r.get("resend"):
                    seen["resend"] += 1
            if line["op"] == "expire":
                for r in line["result"]["results"]:
                    seen["expire:resent" if r.get("resend") else f"expire:{r['label']}"] += 1
            if line["op"] == "deliver" and line["topic"] == Topic.PHASE_OUTCOME.value:
                seen[f"outcome:{line['message']['data']['phase_status']}"] += 1
            for m in line["out"]:
                seen[f"topic:{m['topic']}"] += 1
                data = json.loads(m["value"])["data"]
                if m["topic"] == Topic.PIPELINE_COMPLETED.value:
                    seen[f"final_status:{data['final_status']}"] += 1
                    seen[f"completed_pipeline:{data['pipeline_name']}"] += 1
                if m["topic"] == Topic.PHASE_SKIPPED.value:
                    seen[f"skip_reason:{data['skip_reason']}"] += 1
    return seen


async def _record_all(names: Sequence[str] | None) -> dict[str, list[Line]]:
    chosen = [s for s in SCENARIOS if names is None or s.name in names]
    return {s.name: await record(s) for s in chosen}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.golden.record", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--check", action="store_true", help="compare with the stored files, write nothing")
    parser.add_argument("--only", nargs="*", help="scenario names (default: all)")
    parser.add_argument("--coverage", action="store_true", help="print what the recordings exercise")
    args = parser.parse_args(argv)
    logging.getLogger("pipeline_state").setLevel(logging.CRITICAL)  # warnings are the point here
    recorded = asyncio.run(_record_all(args.only))
    failed = 0
    for name, lines in recorded.items():
        path = DATA_DIR / f"{name}.jsonl"
        if args.check:
            stored = load_lines(path) if path.exists() else []
            problem = describe_difference(name, stored, lines)
            if problem:
                failed += 1
                print(problem, file=sys.stderr)
            continue
        DATA_DIR.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(dump_line(line) + "\n" for line in lines), encoding="utf-8")
    if not args.check and args.only is None:
        known = {f"{s.name}.jsonl" for s in SCENARIOS}
        for stale in DATA_DIR.glob("*.jsonl"):
            if stale.name not in known:
                stale.unlink()
    messages = sum(len(line.get("out", ())) for lines in recorded.values() for line in lines)
    steps = sum(1 for lines in recorded.values() for line in lines if "op" in line)
    print(f"{len(recorded)} scenarios, {steps} steps, {messages} messages pinned")
    if args.coverage:
        for item, count in sorted(coverage(recorded).items()):
            print(f"  {count:6d}  {item}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
