"""The run engine: a run's phases, what becomes ready, dispatch, outcomes, deadlines and
cancellation - the guards and effects of the phase lifecycle and of a run's start."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from pipeline_state._catalog import Plan
from pipeline_state._fan_in import DependencyRef, FanIn, gather
from pipeline_state._lifecycle import ABSENT, PHASE_LIFECYCLE, PhaseStatus, RunStatus
from pipeline_state._model import ItemRef, PhaseRun, Run, all_terminal, evolve, evolver
from pipeline_state._outbound import Notice, RunSummary
from pipeline_state._profile import COMMAND_OVERHEAD_BYTES, CommandSpec, command_fields
from pipeline_state._wire import MAX_ITEM_ID_LENGTH
from pipeline_state.errors import CorruptStateError, ItemMismatchError
from pipeline_state.ports import CLOCK_STEP_HORIZON_SECONDS

from . import machines
from .context import PhaseCtx, RunCtx, Session
from .ids import outbox_event_id
from .journal import Move

__all__ = ["RunEngine", "apply_phase", "apply_run", "duplicates", "fan_in"]

_PENDING = PhaseStatus.PENDING_DEPENDENCIES
_evolve_phase = evolver(PhaseRun)
_evolve_run = evolver(Run)
_LIFECYCLE_STATES = frozenset(PHASE_LIFECYCLE.states)


def fan_in(
    policy: FanIn, dependencies: Sequence[str], outputs: Sequence[tuple[ItemRef, ...]]
) -> tuple[ItemRef, ...]:
    """The inputs of a phase fed by several ``dependencies`` (plan order) whose ``outputs``
    are given in the same order: the items that succeeded in every one, each with the ref
    the profile's ``policy`` merges (see :func:`~pipeline_state._fan_in.gather`)."""
    return gather(policy, dependencies, outputs)[0]


def _long_refs(inputs: Sequence[ItemRef], listed: Mapping[str, tuple[DependencyRef, ...]] | None) -> bool:
    """Whether a ref is longer than the profile's item-count bound assumes (its own wire may
    not bound them as the default profile's does): the command is then measured whatever
    its item count."""
    for ref in inputs:
        if len(ref.item_id) > MAX_ITEM_ID_LENGTH or len(ref.content_ref or "") > MAX_ITEM_ID_LENGTH:
            return True
    if listed:
        for refs in listed.values():
            for dep in refs:
                if len(dep.content_ref or "") > MAX_ITEM_ID_LENGTH:
                    return True
    return False


def duplicates(ids: Iterable[str]) -> tuple[str, ...]:
    """The ids that occur more than once, in order of their second occurrence."""
    seen: set[str] = set()
    twice: dict[str, None] = {}
    for i in ids:
        if i in seen:
            twice[i] = None
        seen.add(i)
    return tuple(twice)


class RunEngine:
    """The open run of one decision and its phases, by name in plan order.

    Phase moves go through :data:`machines.PHASE`, run moves through :data:`machines.RUN`;
    the engine applies them to its own copies and logs them in the session's journal.
    """

    __slots__ = ("advance_due", "finished", "phases", "plan", "run", "session", "summary")

    def __init__(self, session: Session, run: Run) -> None:
        self.session = session
        self.run = run
        self.phases: dict[str, PhaseRun] = {}
        for phase in run.phases:
            self.phases[phase.name] = phase
            if phase.status not in _LIFECYCLE_STATES:
                raise CorruptStateError(
                    session.batch_id,
                    f"phase {phase.name!r} of run {run.run_id} is {phase.status.value!r}, "
                    "a status the phase lifecycle never enters",
                )
        self.advance_due = False
        self.plan: Plan | None = None
        self.finished: Run | None = None
        self.summary: RunSummary | None = None

    @classmethod
    def accept(cls, session: Session, run: Run, plan: Plan) -> RunEngine:
        """Open a new ``run`` of ``plan`` (run: ``accept``) as the session's run."""
        engine = cls(session, run)
        engine.plan = plan
        session.run = engine
        machines.RUN.fire(RunCtx(session, engine), ABSENT, "accept", apply_run)
        return engine

    @classmethod
    def record(cls, session: Session, run: Run) -> machines.Fired:
        """Record a ``run`` completed outside the engine (run: ``record``)."""
        return machines.RUN.fire(RunCtx(session, cls(session, run)), ABSENT, "record", apply_run)

    @classmethod
    def of(cls, session: Session) -> RunEngine | None:
        """The engine of the batch's active run, if it has one (opened once per decision)."""
        if session.run is None:
            active = session.state.active_run
            if active is not None:
                session.run = cls(session, active)
        return session.run

    def snapshot(self) -> Run:
        return _evolve_run(self.run, phases=tuple(self.phases.values()))

    def close(self) -> None:
        self.phases = {}
        if self.session.run is self:
            self.session.run = None

    # -- moves ---------------------------------------------------------------------------
    def fire_phase(self, ctx: PhaseCtx, trigger: str) -> machines.Fired:
        phase = self.phases.get(ctx.name)
        return machines.PHASE.fire(ctx, ABSENT if phase is None else phase.status, trigger, apply_phase)

    def close_run(self, trigger: str) -> None:
        """Fire the run ``trigger`` (``finish``, ``fail``, ``cancel``) on the open run."""
        ctx = RunCtx(self.session, self)
        machines.require(machines.RUN.fire(ctx, self.run.status, trigger, apply_run), self.session.batch_id)

    # -- what a phase gets -----------------------------------------------------------------
    def dependency_outputs(self, dep: str) -> tuple[ItemRef, ...] | None:
        """Outputs of a dependency: from this run, else the recorded (pruned) execution.
        ``None`` while the dependency has not finished in this run."""
        phase = self.phases.get(dep)
        if phase is None:
            return self.session.recorded().get(dep, ())
        if phase.is_done:
            return phase.outputs
        return None if not phase.is_terminal else ()

    def inputs_for(
        self, phase: PhaseRun
    ) -> tuple[tuple[ItemRef, ...], Mapping[str, tuple[DependencyRef, ...]]] | None:
        """The items ``phase`` gets and, for a fan-in, the dependency refs its command lists
        for each (see :mod:`pipeline_state._fan_in`); ``None`` while a dependency runs."""
        depends_on = phase.depends_on
        if not depends_on:
            return self.session.state.items, {}
        if len(depends_on) == 1:
            out = self.dependency_outputs(depends_on[0])
            return None if out is None else (out, {})
        order = {name: i for i, name in enumerate(self.plan_order())}
        deps = sorted(phase.depends_on, key=lambda d: order.get(d, -1))
        outputs: list[tuple[ItemRef, ...]] = []
        for dep in deps:
            out = self.dependency_outputs(dep)
            if out is None:
                return None
            outputs.append(out)
        return gather(self.session.profile.fan_in, deps, outputs)

    def plan_order(self) -> tuple[str, ...]:
        return self.run.plan or self.run.pruned + tuple(self.phases)

    def deadline(self, phase: PhaseRun) -> datetime | None:
        seconds = phase.deadline_seconds
        return self.session.now + timedelta(seconds=seconds) if seconds else None

    def phase_command(
        self,
        spec: CommandSpec,
        inputs: tuple[ItemRef, ...],
        listed: Mapping[str, tuple[DependencyRef, ...]] | None = None,
    ) -> dict[str, Any] | None:
        """The field values of the command that starts a phase over ``inputs``, each item
        with the dependency refs ``listed`` for it (a fan-in's, when the model has room for
        them); ``None`` when it would exceed the profile's ``max_command_bytes`` (measured,
        by building it, only when the item count allows it)."""
        state = self.session.state
        names = command_fields(spec.model)
        if listed and names.dependency_refs is not None:
            items = [
                names.listing(e, listed[e.item_id]) if e.item_id in listed else names.item(e) for e in inputs
            ]
        else:
            items = names.items_of(inputs)
        data = {
            names.batch_id: state.batch_id,
            names.items: items,
            names.language: state.language,
            names.category: state.category,
            names.group_id: state.group_id,
        }
        profile = self.session.profile
        if len(inputs) > profile.measure_above_items or _long_refs(inputs, listed):
            payload = spec.model.model_validate(data)
            size = COMMAND_OVERHEAD_BYTES + len(payload.__pydantic_serializer__.to_json(payload))
            if size > profile.max_command_bytes:
                return None
        return data

    # -- progress --------------------------------------------------------------------------
    def settle(self) -> None:
        """Run a due ``advance``: dispatch what is ready, finish the run when nothing is left."""
        while self.advance_due and self.session.run is self:
            self.advance_due = False
            self.dispatch_ready()
            if all_terminal(self.phases.values()):
                self.close_run("finish")

    def dispatch_ready(self) -> None:
        """Fire ``dispatch`` on every pending phase, in plan order: sent, skipped when it has
        no items, or held by its guards (dependencies running, parallel limit)."""
        for name in list(self.phases):
            # Re-read: skipping an earlier phase may have skipped this one already.
            if self.phases[name].status is _PENDING:
                self.fire_phase(PhaseCtx(self, name), "dispatch")

    def cancel_open_phases(self) -> None:
        now = self.session.now
        for name, phase in list(self.phases.items()):
            if not phase.is_terminal:
                self.must_fire(PhaseCtx(self, name, {"finished_at": now, "error": "cancelled"}), "cancel")

    def skip_dependents(self, failed: str, reason: str) -> None:
        """Skip every pending phase that depends on ``failed``, transitively, in plan order."""
        frontier = {failed}
        for name, phase in self.phases.items():
            if phase.status is _PENDING and frontier.intersection(phase.depends_on):
                ctx = PhaseCtx(self, name, _skipped(self, f"{reason}:{failed}"), skip_reason=reason)
                self.must_fire(ctx, "skip_dependency_failed")
                frontier.add(name)

    def must_fire(self, ctx: PhaseCtx, trigger: str) -> None:
        """Fire a phase trigger an effect needs; a refusal there is a bug (or a corrupt state)."""
        machines.require(self.fire_phase(ctx, trigger), self.session.batch_id)


def _skipped(engine: RunEngine, error: str) -> dict[str, Any]:
    return {"finished_at": engine.session.now, "error": error}


def apply_phase(ctx: PhaseCtx, option: machines.PhaseOption) -> None:
    engine = ctx.engine
    name = ctx.name
    engine.phases[name] = _evolve_phase(engine.phases[name], status=option.status, **ctx.changes)
    engine.session.journal.moves.append(
        Move("phase", name, option.trigger, option.source, option.dest, engine.run.run_id, ctx.note)
    )


def apply_run(ctx: RunCtx, option: machines.RunOption) -> None:
    engine, session = ctx.engine, ctx.session
    run = engine.run
    if option.creates:
        if run.status != option.status:
            run = engine.run = evolve(run, status=option.status)
        session.journal.moves.append(Move("run", run.run_id, option.trigger, ABSENT, option.dest, run.run_id))
        if run.status is not RunStatus.ACTIVE:
            engine.finished = run
        return
    engine.finished = _evolve_run(
        run, status=option.status, phases=tuple(engine.phases.values()), completed_at=session.now
    )
    session.journal.moves.append(
        Move("run", run.run_id, option.trigger, option.source, option.dest, run.run_id)
    )


# -- phase guards --------------------------------------------------------------------------
def inputs_ready(ctx: PhaseCtx) -> str | None:
    engine = ctx.engine
    gathered = engine.inputs_for(engine.phases[ctx.name])
    if gathered is None:
        ctx.inputs = None
        return "dependencies_running"
    ctx.inputs, ctx.listed = gathered
    return None


def below_parallel_limit(ctx: PhaseCtx) -> str | None:
    limit = ctx.engine.session.profile.max_parallel
    if limit is None or sum(1 for p in ctx.engine.phases.values() if p.is_active) < limit:
        return None
    return "parallel_limit"


def has_inputs(ctx: PhaseCtx) -> str | None:
    return None if ctx.inputs else "no_items_to_process"


def lacks_inputs(ctx: PhaseCtx) -> str | None:
    return "items_to_process" if ctx.inputs else None


def items_sent(ctx: PhaseCtx) -> str | None:
    """An outcome may only name items sent to its phase, each once, none both processed and
    failed; so a phase's figures never exceed its inputs. Raises :class:`ItemMismatchError`."""
    phase = ctx.engine.phases[ctx.name]
    processed = [e.item_id for e in ctx.outputs]
    failed = ctx.failed
    sent = {e.item_id for e in phase.inputs}
    named = {*processed, *failed}
    if len(named) == len(processed) + len(failed) and named <= sent:
        return None  # each named once, none twice or both, all sent: the usual case
    batch_id = ctx.engine.session.batch_id
    twice = duplicates(processed) + duplicates(ctx.failed)
    if twice:
        raise ItemMismatchError("duplicate_items", batch_id=batch_id, ids=twice, phase=phase.name)
    unsent = tuple(i for i in (*processed, *ctx.failed) if i not in sent)
    if unsent:
        raise ItemMismatchError(
            "items_not_sent_to_phase",
            batch_id=batch_id,
            ids=unsent,
            phase=phase.name,
            detail=f"{len(sent)} items were sent to it",
        )
    done = set(processed)
    both = tuple(i for i in ctx.failed if i in done)
    if both:
        raise ItemMismatchError("processed_and_failed", batch_id=batch_id, ids=both, phase=phase.name)
    return None


def overdue(ctx: PhaseCtx) -> str | None:
    """Past its deadline, or the deadline is further ahead than the phase's own span and
    :data:`~pipeline_state.ports.CLOCK_STEP_HORIZON_SECONDS` allow: a process whose clock
    was ahead set it, and it would block the batch until that time came."""
    phase = ctx.engine.phases[ctx.name]
    deadline = phase.deadline_at
    if deadline is None:
        return "not_overdue"
    now = ctx.engine.session.now
    if deadline <= now:
        return None
    span = timedelta(seconds=(phase.deadline_seconds or 0) + CLOCK_STEP_HORIZON_SECONDS)
    return None if deadline > now + span else "not_overdue"


def resends_left(ctx: PhaseCtx) -> str | None:
    phase = ctx.engine.phases[ctx.name]
    if phase.command_event_id is not None and phase.resends < ctx.engine.session.profile.max_resends:
        return None
    return "resends_exhausted"


# -- phase effects -------------------------------------------------------------------------
def prepare_command(ctx: PhaseCtx) -> None:
    engine = ctx.engine
    session = engine.session
    inputs = ctx.inputs
    assert inputs is not None
    spec = session.profile.phase_commands[ctx.name]
    ctx.payload = engine.phase_command(spec, inputs, ctx.listed)
    if ctx.payload is None:
        # Never build a command the producer would refuse: the phase fails at once.
        ctx.changes = {"dispatched_at": session.now, "inputs": inputs}
        return
    ctx.changes = {
        "dispatched_at": session.now,
        "deadline_at": engine.deadline(engine.phases[ctx.name]),
        "inputs": inputs,
        "command_event_id": outbox_event_id(session.command.event_id, len(session.journal.emits)),
    }


def send_command(ctx: PhaseCtx) -> None:
    engine = ctx.engine
    session = engine.session
    if ctx.payload is None:
        failed = tuple(e.item_id for e in ctx.inputs or ())
        changes = {
            "finished_at": session.now,
            "error": "command_too_large",
            "outputs": (),
            "failed_item_ids": failed,
        }
        engine.must_fire(PhaseCtx(engine, ctx.name, changes), "abort")
        return
    spec = session.profile.phase_commands[ctx.name]
    session.journal.emit_lazy(
        spec.topic, session.batch_id, spec.model, ctx.payload, engine.run.correlation_id
    )


def resend_command(ctx: PhaseCtx) -> None:
    command_event_id = ctx.engine.phases[ctx.name].command_event_id
    assert command_event_id is not None
    ctx.engine.session.journal.resend.append(command_event_id)


def announce_skip(ctx: PhaseCtx) -> None:
    engine = ctx.engine
    session = engine.session
    run = engine.run
    _announce(session, run, ctx.name, ctx.skip_reason)


def prepare_skip(ctx: PhaseCtx) -> None:
    ctx.changes = _skipped(ctx.engine, "no_items_to_process")
    ctx.skip_reason = "no_items_to_process"


def skip_dependents(ctx: PhaseCtx) -> None:
    ctx.engine.skip_dependents(ctx.name, "dependency_failed")


def advance(ctx: PhaseCtx | RunCtx) -> None:
    ctx.engine.advance_due = True


# -- a run's start ---------------------------------------------------------------------------
def plan_phases(ctx: RunCtx) -> None:
    engine = ctx.engine
    plan = _plan(ctx)
    profile = ctx.session.profile
    for step in plan.to_run:
        engine.phases[step.name] = PhaseRun(
            step.name,
            step.depends_on,
            PhaseStatus.REQUESTED_BY_USER,
            deadline_seconds=profile.deadline_for(step),
        )
        engine.must_fire(PhaseCtx(engine, step.name), "plan")


def announce_pruned(ctx: RunCtx) -> None:
    session, run = ctx.session, ctx.engine.run
    for pruned in _plan(ctx).pruned:
        _announce(session, run, pruned, "already_completed")


def _announce(session: Session, run: Run, phase: str, reason: str) -> None:
    session.journal.emit_all(session.profile.outbound.phase_skipped(session.state, run, phase, reason))


def notify_started(ctx: RunCtx) -> None:
    session, run = ctx.session, ctx.engine.run
    plan = _plan(ctx)
    notice = Notice(
        "run_started",
        session.state,
        run.correlation_id,
        run=run,
        phases=tuple(s.name for s in plan.to_run),
        skipped=plan.pruned,
    )
    session.journal.emit_all(session.profile.outbound.notify(notice))


def cancel_open_phases(ctx: RunCtx) -> None:
    ctx.engine.cancel_open_phases()


def _plan(ctx: RunCtx) -> Plan:
    plan = ctx.engine.plan
    assert plan is not None
    return plan
