"""Helpers of the generated-path tests: replay a :class:`~pipeline_state.testing.paths.Path`
through a :class:`~pipeline_state.PipelineService` (in memory or on SQLite) into a
comparable :class:`Trace`, and feed it to the reference model.

Not a test module: ``conftest.py`` puts this folder on ``sys.path``.
"""

from __future__ import annotations

import pathlib
import shutil
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import attrs
from pipeline_state_sql import SqlStore, create_engine, create_or_upgrade
from pipeline_state_sql.driver import lean_creator
from sqlalchemy.engine import make_url

from pipeline_state import CancelRun, InMemoryStore, ManualClock, PipelineService, Profile, RetryPhase
from pipeline_state._commands import ExpireOverdue
from pipeline_state._decide import Decision
from pipeline_state._model import BatchState, Run, evolve
from pipeline_state._snapshot import snapshot
from pipeline_state.ports import (
    ContentReady,
    GroupConfirmed,
    ItemRef,
    ItemsReady,
    PhaseOutcome,
    RegisterBatch,
    RequestPipeline,
    TransitionRecord,
    ValidationFailed,
)
from pipeline_state.profiles.huleedu import HULEEDU_INBOUND
from pipeline_state.profiles.huleedu.events import Topic
from pipeline_state.profiles.huleedu.testing.reference import Expectation, ReferenceModel
from pipeline_state.testing import START, replay
from pipeline_state.testing.paths import Path, Step

__all__ = [
    "StepTrace",
    "Trace",
    "check_steps",
    "reference_problems",
    "replay_memory",
    "replay_tree_sqlite",
]

Message = tuple[str, str, str | None, dict[str, Any]]


@attrs.frozen
class StepTrace:
    """What one step did on a service: its verdict, the outbox rows written, the decision,
    the batch afterwards (snapshot) and whether redelivering it was a no-op duplicate."""

    label: str
    verdict: str
    messages: tuple[Message, ...]
    decision: Decision | None
    state: dict[str, Any] | None
    redelivered: str | None


@attrs.frozen
class Trace:
    """What a path did on a service, step by step, and the transition log it left."""

    steps: tuple[StepTrace, ...]
    log: tuple[tuple[Any, ...], ...]
    """The transition log: (entity, name, trigger, source, dest, run id, event id, note)."""


async def _trace_step(
    service: PipelineService, clock: ManualClock, profile: Profile, step: Step
) -> StepTrace:
    """Handle ``step``, then redeliver it (the inbox must answer ``duplicate`` for a step
    that was recorded, the same error for one that raised)."""
    (done,) = await replay(Path(profile, (step,)), service, clock)
    messages: tuple[Message, ...] = ()
    decision = None
    if done.error is not None:
        verdict = f"raised:{type(done.error).__name__}"
    else:
        assert done.result is not None
        verdict = done.result.label
        messages = tuple((m.event_id, m.topic, m.key, dict(m.value)) for m in done.result.messages)
        decision = done.result.decision
    (again,) = await replay(Path(profile, (step,)), service, clock)
    if again.error is not None:
        redelivered = f"raised:{type(again.error).__name__}"
    else:
        assert again.result is not None
        redelivered = again.result.label
    loaded = await service.shown_batch(step.command.batch_id)
    state = None if loaded is None else snapshot(loaded)
    return StepTrace(step.label, verdict, messages, decision, state, redelivered)


def _log(rows: list[TransitionRecord]) -> tuple[tuple[Any, ...], ...]:
    return tuple((r.entity, r.name, r.trigger, r.source, r.dest, r.run_id, r.event_id, r.note) for r in rows)


async def replay_memory(path: Path) -> Trace:
    """Replay ``path`` through a service on a fresh :class:`InMemoryStore`."""
    store = InMemoryStore()
    clock = ManualClock(START)
    service = PipelineService(store, profile=path.profile, clock=clock)
    steps = [await _trace_step(service, clock, path.profile, step) for step in path.steps]
    return Trace(tuple(steps), _log(store.transitions(_batch_id(path))))


async def replay_tree_sqlite(
    paths: Sequence[Path], workdir: pathlib.Path
) -> tuple[dict[int, StepTrace], dict[int, tuple[tuple[Any, ...], ...]]]:
    """Replay ``paths`` on SQLite, each step of their prefix tree once: where paths part,
    the database file is copied (its connections closed first, so the copy is whole) and
    each branch goes on from a copy of its own. One engine serves every file (its
    connections open the current one), so compiled statements are reused. Returns the
    trace of every step (by ``id``) and the transition log at the end of every path (by
    the ``id`` of its last step)."""
    children: dict[int | None, list[Step]] = {}
    for path in paths:
        parent: int | None = None
        for step in path.steps:
            kids = children.setdefault(parent, [])
            if all(k is not step for k in kids):
                kids.append(step)
            parent = id(step)
    profile = {id(s): p.profile for p in paths for s in p.steps}
    current = [workdir / "template.db"]

    async def connect() -> Any:
        return await lean_creator(make_url(_url(current[0])))()

    engine = create_engine(_url(current[0]), synchronous="OFF", async_creator=connect)
    await create_or_upgrade(engine)
    await engine.dispose()
    traces: dict[int, StepTrace] = {}
    logs: dict[int, tuple[tuple[Any, ...], ...]] = {}

    async def visit(parent: int | None, origin: pathlib.Path, level: int) -> None:
        for step in children.get(parent, []):
            work = workdir / f"work-{level}.db"
            shutil.copyfile(origin, work)
            current[0] = work
            store = SqlStore(engine)
            clock = ManualClock(START)
            service = PipelineService(store, profile=profile[id(step)], clock=clock)
            node = step
            try:
                while True:
                    traces[id(node)] = await _trace_step(service, clock, profile[id(node)], node)
                    kids = children.get(id(node), [])
                    if not kids:
                        logs[id(node)] = _log(await store.transitions(node.command.batch_id))
                    if len(kids) != 1:
                        break
                    node = kids[0]
            finally:
                await store.close()
                await engine.dispose()
            if len(children.get(id(node), [])) > 1:
                fork = workdir / f"fork-{level}.db"
                shutil.move(work, fork)
                await visit(id(node), fork, level + 1)

    try:
        await visit(None, workdir / "template.db", 0)
    finally:
        await engine.dispose()
    return traces, logs


def _url(file: pathlib.Path) -> str:
    return f"sqlite+aiosqlite:///{file}"


def _batch_id(path: Path) -> str:
    return path.steps[0].command.batch_id if path.steps else ""


def check_steps(path: Path, trace: Trace, where: str) -> None:
    """The service did what ``decide`` said each step would: same verdict, same decision,
    same state; a redelivered step changed nothing; the log holds exactly the moves."""
    expected_log: list[tuple[Any, ...]] = []
    archived: list[Run] = []
    for index, (step, seen) in enumerate(zip(path.steps, trace.steps, strict=True)):
        label = f"{where}: step {index + 1} ({step.label}) of\n{path.describe()}\n"
        assert seen.verdict == step.verdict, f"{label}verdict {seen.verdict}, decide said {step.verdict}"
        if step.decision is not None:
            assert seen.decision == step.decision, f"{label}the service decided otherwise than decide"
            assert [m[1] for m in seen.messages] == [e.topic for e in step.decision.emits], label
        archived += () if step.decision is None else step.decision.archived
        expected = None if step.state is None else snapshot(_shown(step.state, archived))
        assert seen.state == expected, f"{label}state {seen.state} != {expected}"
        duplicate = seen.verdict if seen.verdict.startswith("raised:") else "duplicate"
        assert seen.redelivered == duplicate, f"{label}redelivered: {seen.redelivered}, want {duplicate}"
        expected_log.extend(
            (m.entity, m.name, m.trigger, m.source, m.dest, m.run_id, step.command.event_id, m.note)
            for m in step.moves
        )
    assert list(trace.log) == expected_log, f"{where}: the transition log differs from the moves"


# --- the reference model -----------------------------------------------------------------


def reference_for(profile: Profile) -> ReferenceModel:
    """A reference model of ``profile``: its catalog with each step's effective deadline."""
    catalog = profile.catalog
    pipelines = {
        name: {
            "steps": [
                {
                    "name": step.name,
                    "depends_on": list(step.depends_on),
                    "deadline_seconds": profile.deadline_for(step),
                }
                for step in catalog.get(name).steps
            ]
        }
        for name in catalog.names
    }
    return ReferenceModel(
        {"pipelines": pipelines},
        max_parallel=profile.max_parallel,
        max_resends=profile.max_resends,
        strict_correlation=profile.strict_correlation,
    )


def _refs(items: Any) -> dict[str, str | None]:
    """Item id -> content reference, for the engine's ``ItemRef`` s and the reference model's
    wire refs alike."""
    pairs = (
        (e.item_id, e.content_ref) if isinstance(e, ItemRef) else (e.essay_id, e.text_storage_id)
        for e in items
    )
    return dict(pairs)


_UNMODELLED = ("register_too_many", "register_legacy", "cancel_batch", "archive")


def _feed(model: ReferenceModel, step: Step) -> Expectation | None:
    """Give ``step`` to the reference model; ``None`` when the model does not describe it."""
    event_id = step.command.event_id
    payload = step.command.payload
    if step.label in _UNMODELLED or step.label.startswith("record:"):
        return None
    if isinstance(payload, RegisterBatch):  # the reference model reads HuleEdu's registration
        return model.register(event_id, HULEEDU_INBOUND.encode(payload)[1])
    batch = model.batches.get(step.command.batch_id)
    if isinstance(payload, ContentReady):
        return model.provision(event_id, payload.batch_id, _refs(payload.items))
    if isinstance(payload, GroupConfirmed):
        return model.confirm_associations(event_id, payload.batch_id)
    if isinstance(payload, ItemsReady):
        return model.essays_ready(event_id, payload.batch_id, _refs(payload.items))
    if isinstance(payload, ValidationFailed):
        if payload.critical and batch is not None and batch.active is not None:
            return None  # a critical failure during a run is not modelled
        return model.validation_errors(event_id, payload.batch_id, critical=payload.critical)
    if isinstance(payload, RequestPipeline):
        return model.request(
            event_id,
            payload.batch_id,
            payload.pipeline,
            step.command.correlation_id,
            prompt=bool(payload.prompt),
        )
    if isinstance(payload, PhaseOutcome):
        return model.outcome(
            event_id,
            payload.batch_id,
            payload.phase,
            payload.correlation_id,
            payload.status,
            _refs(payload.processed),
            list(payload.failed),
        )
    if isinstance(payload, ExpireOverdue):
        return model.expire()
    if isinstance(payload, CancelRun):
        return model.cancel(event_id, payload.batch_id)
    if isinstance(payload, RetryPhase):
        return model.retry(event_id, payload.batch_id, payload.phase_name, step.command.correlation_id)
    return None


def _kind(step: Step) -> tuple[str, str | None]:
    decision = step.decision
    if decision is None:
        return "raised", None
    if decision.denial is not None:
        return "denied", decision.denial.reason
    if decision.ignored is not None:
        return "ignored", None
    return "applied", None


def reference_problems(path: Path) -> tuple[int, list[str]]:
    """Feed ``path`` to the reference model until a step it does not describe (an operator
    command it lacks, a fact it would keep waiting where the path decides it at once);
    return how many steps it described and what it disagreed on."""
    model = reference_for(path.profile)
    command_phase = {spec.topic: phase for phase, spec in path.profile.phase_commands.items()}
    previous: datetime = START
    problems: list[str] = []
    described = 0
    archived: list[Run] = []
    for index, step in enumerate(path.steps):
        model.advance_clock((step.now - previous).total_seconds())
        previous = step.now
        expected = _feed(model, step)
        if expected is None or expected.kind == "waiting":
            break
        described += 1
        where = f"step {index + 1} ({step.label})"
        kind, denial = _kind(step)
        if (kind, denial) != (expected.kind, expected.denial):
            problems.append(
                f"{where}: engine {kind} {denial or ''}, reference {expected.kind} {expected.denial}"
            )
            break
        decision = step.decision
        archived += () if decision is None else decision.archived
        emits = () if decision is None else decision.emits
        dispatched = sorted(
            (command_phase[e.topic], _sorted_refs(getattr(e.payload, "essays_to_process", ())))
            for e in emits
            if e.topic in command_phase
        )
        want = sorted((d.phase, tuple(sorted(d.essays.items()))) for d in expected.all_dispatched())
        if dispatched != want:
            problems.append(f"{where}: dispatched {dispatched}, reference {want}")
        finals = [
            e.payload.model_dump()["final_status"] for e in emits if e.topic == Topic.PIPELINE_COMPLETED
        ]
        completions = [c.final_status for c in expected.all_completed()]
        if finals != completions:
            problems.append(f"{where}: completions {finals}, reference {completions}")
        resent = 0 if decision is None else len(decision.resend)
        if resent != len(expected.resent):
            problems.append(f"{where}: re-sent {resent}, reference {expected.resent}")
        problems.extend(f"{where}: {p}" for p in _same_view(model, step, path.profile, archived))
        if problems:
            break
    return described, problems


def _sorted_refs(items: Any) -> tuple[tuple[str, str | None], ...]:
    return tuple(sorted(_refs(items).items()))


def _shown(state: BatchState, archived: list[Run]) -> BatchState:
    """``state`` as the service shows it: with the runs archived along the path so far."""
    return evolve(state, history=tuple(archived))


def _same_view(model: ReferenceModel, step: Step, profile: Profile, archived: list[Run]) -> list[str]:
    state = None if step.state is None else _shown(step.state, archived)
    if state is None:
        return [] if not model.batches else ["the reference knows a batch the engine does not"]
    if state.batch_id not in model.batches:
        return ["the engine knows a batch the reference does not"]
    snap = snapshot(state)
    ref = model.view(state.batch_id)
    problems = []
    if snap["status"] != ref["status"]:
        problems.append(f"status {snap['status']}, reference {ref['status']}")
    active, mine = snap["active_run"], ref["active_run"]
    if (active is None) != (mine is None):
        problems.append(f"active run {active}, reference {mine}")
    elif active is not None and mine is not None:
        for field in ("correlation_id", "pipeline_name", "skipped_phases"):
            if active[field] != mine[field]:
                problems.append(f"active run {field} {active[field]}, reference {mine[field]}")
        problems.extend(_phases(model, state.batch_id, active["phases"], mine["phases"], profile))
    history = [
        {k: run[k] for k in ("correlation_id", "pipeline_name", "final_status", "phases")}
        | {"completed_phases": run["completed_phases"], "skipped_phases": run["skipped_phases"]}
        for run in snap["history"]
    ]
    if history != ref["history"]:
        problems.append(f"history {history}, reference {ref['history']}")
    return problems


def _phases(
    model: ReferenceModel, batch_id: str, engine: dict[str, str], ref: dict[str, str], profile: Profile
) -> list[str]:
    """Phase statuses must match, with the harness's one tolerance: under ``max_parallel``
    the engine may leave a phase whose dependencies left it no essays pending until a slot
    frees up, where the reference skips it at once."""
    if set(engine) != set(ref):
        return [f"phases {sorted(engine)}, reference {sorted(ref)}"]
    run = model.batches[batch_id].active
    problems = []
    for name, status in engine.items():
        if status == ref[name]:
            continue
        deferred = (
            profile.max_parallel is not None
            and status == "pending_dependencies"
            and run is not None
            and run.phases[name].skip_origin == "no_essays"
        )
        if not deferred:
            problems.append(f"phase {name} is {status}, reference {ref[name]}")
    return problems
