"""Admission: a pipeline request or a phase retry becomes a run, or a denial that is never
silent. The batch's ``start_run`` trigger carries the rules: its refusals (unknown batch,
active run, not ready) and its guards (the plan resolves, the profile's guards admit)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import attrs

from pipeline_state._catalog import Pipeline, Plan, Step
from pipeline_state._commands import RetryPhase
from pipeline_state._guards import AdmissionRequest, Denial
from pipeline_state._inputs import RequestPipeline
from pipeline_state._lifecycle import BatchStatus, Verdict
from pipeline_state._model import BatchState, Run, evolve
from pipeline_state._outbound import Notice
from pipeline_state._profile import Profile
from pipeline_state.errors import BadCommandError

from . import machines
from .context import BatchCtx, Session
from .ids import run_id_of
from .journal import ALREADY_HANDLED, Decision
from .registry import Inputs
from .run import RunEngine
from .text import check_free_text

__all__ = [
    "Admission",
    "accept_run",
    "admitted",
    "attach_prompt",
    "fresh_correlation",
    "no_active_run",
    "plan_order_for",
    "plan_resolved",
    "request",
    "retry_phase",
]


@attrs.define(slots=True)
class Admission:
    """A request to start a run, as the ``start_run`` guards and effects see it."""

    user_id: str
    requested: str
    resolve: Callable[[Session, Admission], Plan | Denial]
    prompt: Mapping[str, Any] | None = None
    is_retry: bool = False
    retry_reason: str | None = None
    plan_order: tuple[str, ...] | None = None
    plan: Plan | None = None
    denial: Denial | None = None


# -- handlers ----------------------------------------------------------------------------
def request(inputs: Inputs, p: RequestPipeline) -> Decision:
    """A pipeline request: a run starts, or a denial is emitted (even for an unknown batch)."""

    def resolve(session: Session, admission: Admission) -> Plan | Denial:
        if p.pipeline not in session.profile.catalog:
            return Denial("unknown_pipeline", f"no pipeline named {p.pipeline!r}")
        return session.profile.catalog.plan(p.pipeline, session.recorded().keys())

    admission = Admission(
        p.requested_by,
        p.pipeline,
        resolve,
        prompt=p.prompt,
        is_retry=p.is_retry,
        retry_reason=p.retry_reason,
    )
    return handled_already(inputs) or _start(inputs, admission)


def retry_phase(inputs: Inputs, p: RetryPhase) -> Decision:
    """Run one phase again over its dependencies' recorded outputs."""

    def resolve(session: Session, admission: Admission) -> Plan | Denial:
        profile = session.profile
        if not profile.is_phase(p.phase_name):
            return Denial("unknown_pipeline", f"no phase named {p.phase_name!r}")
        step = profile.catalog.step_definition(p.phase_name)
        missing = [d for d in step.depends_on if d not in session.recorded()]
        if missing:
            return Denial("dependencies_not_completed", f"run {missing} first")
        admission.plan_order = plan_order_for(profile, p.phase_name, step)
        return Plan(pipeline=_retry_pipeline(profile, p.phase_name), to_run=(step,), pruned=())

    admission = Admission(p.user_id, p.phase_name, resolve, is_retry=True, retry_reason=p.retry_reason)
    state = inputs.require_state()
    handled = handled_already(inputs)  # before ``after_runs``: its run may be archived since
    if handled is not None:
        return handled
    if p.after_runs is not None and state.past.count != p.after_runs:
        raise BadCommandError(
            f"batch {state.batch_id} has archived {state.past.count} runs, the retry was asked "
            f"after {p.after_runs}: look at the batch again",
            batch_id=state.batch_id,
        )
    return _start(inputs, admission)


def _start(inputs: Inputs, admission: Admission) -> Decision:
    check_free_text(admission.retry_reason, "retry reason", inputs.command.batch_id)
    state = inputs.state
    absent = state is None
    if state is None:
        # Admission rule 1: never silent, even for an unknown batch.
        now = inputs.now
        status = BatchStatus.AWAITING_CONTENT_VALIDATION
        state = BatchState(inputs.command.batch_id, status, 0, admission.user_id, "", 0, (), now, now)
    session = Session(inputs.profile, inputs.command, inputs.now, state)
    fired = machines.fire_batch(BatchCtx(session, admission=admission), "start_run", absent=absent)
    if isinstance(fired, machines.Refused):
        assert fired.verdict is Verdict.DENY
        denial = admission.denial if fired.guard is not None else Denial(fired.reason, fired.detail)
        assert denial is not None
        decision = deny(session, admission.user_id, admission.requested, denial)
        return attrs.evolve(decision, state=None) if absent else decision
    engine = session.run
    assert engine is not None
    engine.settle()
    return session.finish(run_id=engine.run.run_id)


def handled_already(inputs: Inputs) -> Decision | None:
    """The decision on a run-starting command that started its run already (the run, named
    after the command's event id, is active or archived): ignored as ``already_handled``.
    Its inbox entry was purged since and it came again (a consumer reset, a late
    re-injection, an HTTP retry); deciding it anew would start a second run under the same
    run id and emit under the first handling's event ids. ``None`` for any other command."""
    state = inputs.state
    if state is None:
        return None
    run_id = run_id_of(inputs.command.event_id)
    active = state.active_run
    if (active is not None and active.run_id == run_id) or state.past.started(run_id):
        return Decision(state, ignored=ALREADY_HANDLED, run_id=run_id)
    if state.past.reported_as(run_id):  # a report applied to a run's phase: it started none
        return Decision(state, ignored=ALREADY_HANDLED)
    return None


def deny(session: Session, user_id: str, requested: str, denial: Denial) -> Decision:
    """A denial is never silent: the profile's denial events and notice, nothing else."""
    state, outbound = session.state, session.profile.outbound
    session.journal.emit_all(outbound.denied(state, user_id, requested, denial))
    notice = Notice(
        "request_denied", state, session.command.correlation_id, requested=requested, denial=denial
    )
    session.journal.emit_all(outbound.notify(notice))
    return session.finish(denial=denial)


def plan_order_for(profile: Profile, phase: str, step: Step) -> tuple[str, ...]:
    """``phase`` and its dependencies in the plan order of the first pipeline holding it."""
    for name in profile.catalog.names:
        pipeline = profile.catalog.get(name)
        if phase in pipeline.step_names:
            wanted = {phase, *step.depends_on}
            return tuple(s for s in pipeline.step_names if s in wanted)
    return (*step.depends_on, phase)


def _retry_pipeline(profile: Profile, phase: str) -> Pipeline:
    """A pipeline of ``phase`` and its transitive dependencies (so it validates); only
    ``phase`` runs, its dependencies feed it their recorded outputs. ``phase`` is the only
    sink, hence the final step."""
    steps: dict[str, Step] = {}
    todo = [phase]
    while todo:
        name = todo.pop()
        if name not in steps:
            steps[name] = profile.catalog.step_definition(name)
            todo.extend(steps[name].depends_on)
    return Pipeline(name=phase, steps=tuple(steps.values()))


# -- guards of start_run ------------------------------------------------------------------------
def _admission(ctx: BatchCtx) -> Admission:
    assert ctx.admission is not None
    return ctx.admission


def no_active_run(ctx: BatchCtx) -> str | None:
    if ctx.session.state.active_run is None:
        return None
    _admission(ctx).denial = Denial("pipeline_already_active", "the batch has an active run")
    return "pipeline_already_active"


def fresh_correlation(ctx: BatchCtx) -> str | None:
    """A run's correlation id tells its outcomes from an earlier run's (``stale_run``): a
    request under the correlation id of an archived run of the batch (or one an outcome was
    applied under instead of its run's) is denied, not run under an id it would share."""
    session = ctx.session
    correlation = session.command.correlation_id
    if not session.state.past.is_archived(correlation):
        return None
    _admission(ctx).denial = Denial(
        "correlation_reused",
        f"correlation id {correlation} names an earlier run of the batch: send the request under a new one",
    )
    return "correlation_reused"


def plan_resolved(ctx: BatchCtx) -> str | None:
    admission = _admission(ctx)
    resolved = admission.resolve(ctx.session, admission)
    if isinstance(resolved, Denial):
        admission.denial = resolved
        return resolved.reason
    admission.plan = resolved
    return None


def admitted(ctx: BatchCtx) -> str | None:
    admission = _admission(ctx)
    session = ctx.session
    assert admission.plan is not None
    request = AdmissionRequest(
        batch=session.state,
        plan=admission.plan,
        user_id=admission.user_id,
        prompt_payload=admission.prompt,
        now=session.now,
    )
    for guard in session.profile.guards:
        denial = guard.check(request)
        if denial is not None:
            admission.denial = denial
            return denial.reason
    return None


# -- effects of start_run ---------------------------------------------------------------------
def attach_prompt(ctx: BatchCtx) -> None:
    prompt = _admission(ctx).prompt
    session = ctx.session
    if prompt and session.state.prompt_ref is None:
        ref = prompt.get("prompt_ref") or prompt.get("assignment_id") or "inline"
        session.state = evolve(session.state, prompt_ref=str(ref))


def accept_run(ctx: BatchCtx) -> None:
    admission = _admission(ctx)
    session = ctx.session
    plan = admission.plan
    assert plan is not None
    run_id = run_id_of(session.command.event_id)
    run = Run(
        run_id=run_id,
        pipeline_name=admission.requested,
        correlation_id=session.command.correlation_id,
        requested_by=admission.user_id,
        accepted_at=session.now,
        final_step=plan.pipeline.final_step,
        phases=(),
        pruned=plan.pruned,
        is_retry=admission.is_retry,
        retry_reason=admission.retry_reason,
        plan=admission.plan_order if admission.plan_order is not None else plan.pipeline.step_names,
    )
    RunEngine.accept(session, run, plan)
