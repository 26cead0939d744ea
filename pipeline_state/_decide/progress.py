"""A run's progress: worker outcomes, deadlines, and phases an operator records."""

from __future__ import annotations

from pipeline_state._commands import ExpireOverdue, RecordPhaseCompletion
from pipeline_state._inputs import PhaseOutcome
from pipeline_state._lifecycle import BatchStatus, PhaseStatus, RunStatus
from pipeline_state._model import RECORDED_PIPELINE_PREFIX, PhaseRun, Run
from pipeline_state._wire import is_id_text
from pipeline_state.errors import BadCommandError, UnknownPipelineError

from . import machines
from .admission import handled_already, plan_order_for
from .context import PhaseCtx, RunCtx, Session
from .ids import run_id_of
from .journal import CORRELATION_MISMATCH, Decision
from .registry import Inputs
from .run import RunEngine, apply_phase, fan_in

__all__ = [
    "OUTCOME_TRIGGERS",
    "batch_idle",
    "dependencies_recorded",
    "expire",
    "outcome",
    "record_completion",
]

OUTCOME_TRIGGERS = {
    "completed_successfully": "succeed",
    "completed_with_failures": "partially_succeed",
    "failed_critically": "fail",
}
"""The phase trigger of each outcome status a worker reports."""


def _session(inputs: Inputs) -> Session:
    return Session(inputs.profile, inputs.command, inputs.now, inputs.require_state())


def outcome(inputs: Inputs, p: PhaseOutcome) -> Decision:
    """Apply a phase outcome to the active run.

    Addressing: an outcome whose correlation id is an archived run's is ignored
    (``stale_run``); one whose id belongs to no run of the batch is applied to the active run
    and flagged ``correlation_mismatch`` (on its phase move and in ``Decision.flags``),
    since workers have been seen to lose correlation ids - unless the profile has
    ``strict_correlation``, which ignores it as ``stale_run``. The phase lifecycle then
    decides: its refusals (``phase_not_in_run``, ``duplicate_outcome``,
    ``phase_not_dispatched``) and its ``items_sent`` guard, which raises
    :class:`~pipeline_state.errors.ItemMismatchError` when the outcome names items that
    were not sent to the phase, twice, or both processed and failed. A
    ``completed_successfully`` outcome that names failed items completes the phase with
    failures (``partially_succeed``).
    """
    session = _session(inputs)
    if not inputs.profile.is_phase(p.phase):
        raise UnknownPipelineError(p.phase, batch_id=p.batch_id, kind="phase")
    engine = RunEngine.of(session)
    if engine is None:
        return session.finish(ignored="no_active_run")
    trigger = OUTCOME_TRIGGERS.get(p.status)
    if trigger is None:
        raise BadCommandError(
            f"unknown outcome status {p.status!r} (one of {', '.join(map(repr, OUTCOME_TRIGGERS))})",
            batch_id=p.batch_id,
        )
    if trigger == "succeed" and p.failed:
        # A success that names failed items is the partial success it reports: the run it
        # belongs to does not end ``completed_successfully`` with items failed.
        trigger = "partially_succeed"
    note = None
    corr = p.correlation_id
    if p.phase in engine.phases and corr != engine.run.correlation_id:
        past = session.state.past
        if session.profile.strict_correlation or past.is_archived(corr, engine.run.run_id):
            return session.finish(ignored="stale_run")
        note = CORRELATION_MISMATCH
    outputs = p.processed
    failed = p.failed
    changes: dict[str, object] = {"finished_at": session.now, "outputs": outputs, "failed_item_ids": failed}
    given = engine.phases.get(p.phase)
    if trigger == "fail":
        changes["error"] = "failed_critically"
        if given is not None:
            # A failed phase passes nothing on: every item it was given failed, whatever the
            # outcome's lists say (they are still checked against what was sent), as when
            # it times out or an operator reports it failed.
            changes["outputs"] = ()
            changes["failed_item_ids"] = tuple(e.item_id for e in given.inputs)
    ctx = PhaseCtx(engine, p.phase, changes, note=note, outputs=outputs, failed=failed)
    fired = engine.fire_phase(ctx, trigger)
    if isinstance(fired, machines.Refused):
        return session.finish(ignored=fired.reason)
    run_id = engine.run.run_id
    if note is not None:
        session.journal.flags.append(note)
        # The same answer again, once this run is over, is stale: not one for a later run.
        if is_id_text(corr):  # what a store keeps (a profile's ids may be looser)
            session.change(past=session.state.past.answering(run_id, corr))
    engine.settle()
    return session.finish(run_id=run_id)


def expire(inputs: Inputs, p: ExpireOverdue) -> Decision:
    """The sweeper: each active phase past its deadline has its command re-sent (same outbox
    event id, in ``Decision.resend``; a fresh deadline) while it has been re-sent fewer than
    the profile's ``max_resends`` times, and then fails with ``timeout`` - the two guarded
    alternatives of the phase trigger ``expire``. A phase dispatched before commands' event
    ids were recorded fails at once."""
    session = _session(inputs)
    engine = RunEngine.of(session)
    if engine is None:
        return session.finish(ignored="no_active_run")
    run_id = engine.run.run_id
    moved = failed_any = False
    for name in list(engine.phases):
        phase = engine.phases[name]
        if not phase.is_active:
            continue
        fired = machines.PHASE.fire(PhaseCtx(engine, name), phase.status.value, "expire", _apply_expiry)
        if isinstance(fired, machines.Refused):
            continue  # not overdue (held)
        moved = True
        failed_any = failed_any or fired.dest == PhaseStatus.FAILED
    if not moved:
        return session.finish(ignored="nothing_overdue")
    engine.settle()
    # Re-sends alone are no progress: the run keeps showing as stalled while nobody answers.
    return session.finish(run_id=run_id, progress=failed_any)


def _apply_expiry(ctx: PhaseCtx, option: machines.PhaseOption) -> None:
    """The move of an overdue phase: a re-send (a fresh deadline), or a failure when no
    re-send is left (no outcome came: every item the phase was given counts as failed)."""
    phase = ctx.engine.phases[ctx.name]
    if option.dest == PhaseStatus.FAILED:
        failed = tuple(e.item_id for e in phase.inputs)
        now = ctx.engine.session.now
        ctx.changes = {"finished_at": now, "error": "timeout", "outputs": (), "failed_item_ids": failed}
    else:
        ctx.changes = {"resends": phase.resends + 1, "deadline_at": ctx.engine.deadline(phase)}
    apply_phase(ctx, option)


def record_completion(inputs: Inputs, p: RecordPhaseCompletion) -> Decision:
    """An operator reports a phase done (or failed) outside the engine: on the active run's
    phase (``mark_succeeded`` / ``mark_failed``), or, on an idle batch, as a run of its own
    (run: ``record``) whose outputs later runs reuse."""
    session = _session(inputs)
    if not inputs.profile.is_phase(p.phase_name):
        raise UnknownPipelineError(p.phase_name, batch_id=p.batch_id, kind="phase")
    handled = handled_already(inputs)  # its recorded run: the same report again
    if handled is not None:
        return handled
    engine = RunEngine.of(session)
    now = session.now
    if engine is not None:
        phase = engine.phases.get(p.phase_name)
        if p.success:
            changes = {"finished_at": now, "outputs": phase.inputs if phase is not None else ()}
            trigger = "mark_succeeded"
        else:  # every item the phase was given failed (it was dispatched: see the lifecycle)
            failed = () if phase is None else tuple(e.item_id for e in phase.inputs)
            changes = {"finished_at": now, "error": "reported_failed", "outputs": ()}
            changes["failed_item_ids"] = failed
            trigger = "mark_failed"
        fired = engine.fire_phase(PhaseCtx(engine, p.phase_name, changes), trigger)
        if isinstance(fired, machines.Refused):
            return session.finish(ignored=fired.reason)
        # The same report again (its inbox entry purged) finds it handled, as on an idle batch.
        session.change(past=session.state.past.reporting(run_id_of(inputs.command.event_id)))
        run_id = engine.run.run_id
        engine.settle()
        return session.finish(run_id=run_id)
    if not p.success:
        return session.finish(ignored="failure_outside_run")
    step = session.profile.catalog.step_definition(p.phase_name)
    order = plan_order_for(session.profile, p.phase_name, step)
    names = sorted(step.depends_on, key=order.index)
    deps = [session.recorded().get(d) for d in names]
    # Each dependency's latest recorded outputs, merged as a run's fan-in merges them.
    recorded = [d for d in deps if d is not None]
    if not deps:
        outputs = session.state.items
    elif len(recorded) < len(deps):
        outputs = ()
    elif len(recorded) == 1:
        outputs = recorded[0]
    else:
        outputs = fan_in(session.profile.fan_in, names, recorded)
    run_id = run_id_of(session.command.event_id)
    manual = PhaseRun(
        p.phase_name,
        step.depends_on,
        PhaseStatus.COMPLETED_SUCCESSFULLY,
        dispatched_at=now,
        finished_at=now,
        inputs=outputs,
        outputs=outputs,
    )
    record = Run(
        run_id=run_id,
        pipeline_name=f"{RECORDED_PIPELINE_PREFIX}{p.phase_name}",
        correlation_id=session.command.correlation_id,
        requested_by="operator",
        accepted_at=now,
        final_step=p.phase_name,
        phases=(manual,),
        status=RunStatus.COMPLETED_SUCCESSFULLY,
        completed_at=now,
    )
    fired = RunEngine.record(session, record)
    if isinstance(fired, machines.Refused):
        return session.finish(ignored=fired.reason)
    return session.finish(run_id=run_id)


# -- guards of the run's record ---------------------------------------------------------------
def batch_idle(ctx: RunCtx) -> str | None:
    status = ctx.session.state.status
    if status is BatchStatus.READY_FOR_PIPELINE_EXECUTION:
        return None
    return f"unexpected:record_phase_completion in {status.value}"


def dependencies_recorded(ctx: RunCtx) -> str | None:
    (phase,) = ctx.engine.run.phases
    recorded = ctx.session.recorded()
    return None if all(d in recorded for d in phase.depends_on) else "dependencies_not_completed"
