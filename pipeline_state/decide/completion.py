"""How a run ends: its completion event (exactly once), the owner's notification, its
archiving into the batch's history and the batch's release. These are the effects of every
run transition that leaves ``active``."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pipeline_state.commands import ArchiveBatch, CancelBatch, CancelRun
from pipeline_state.errors import IllegalTransitionError
from pipeline_state.events import BatchPipelineCompletedV1, Topic
from pipeline_state.lifecycle import ABSENT, PhaseStatus, RunStatus, Verdict
from pipeline_state.model import BatchState, EssayRef, Run, evolve

from . import machines
from .context import BatchCtx, RunCtx, Session
from .journal import Decision
from .notify import notify
from .registry import Inputs
from .run import RunEngine

__all__ = [
    "all_succeeded",
    "archive",
    "archive_run",
    "cancel_active_run",
    "cancel_batch",
    "cancel_run",
    "completion_data",
    "emit_completion",
    "fail_active_run",
    "final_step_done",
    "notify_completion",
    "release_batch",
]


def completion_data(
    state: BatchState, run: Run, recorded: Mapping[str, tuple[EssayRef, ...]], now: datetime
) -> dict[str, Any]:
    """The field values of the finished ``run``'s completion event."""
    final = run.phase(run.final_step)
    # A pruned final step is not in run.phases: its recorded outputs came out of the run.
    out = recorded.get(run.final_step, ()) if final is None else (final.outputs if final.is_done else ())
    successful = {e.essay_id for e in out}
    entered = {e.essay_id for p in run.phases for e in p.inputs} | successful
    return {
        "batch_id": state.batch_id,
        "pipeline_name": run.pipeline_name,
        "run_id": run.run_id,
        "completed_phases": list(run.completed_phases),
        "skipped_phases": list(run.skipped_phases),
        "final_status": run.status.value,
        "processing_duration_seconds": max(0.0, (now - run.accepted_at).total_seconds()),
        "successful_essay_count": len(successful),
        "failed_essay_count": len(entered - successful),
        "phase_results": {
            p.name: {
                "status": p.status.value,
                "successful": len(p.outputs),
                "failed": len(p.failed_essay_ids),
                "duration_seconds": p.duration_seconds,
            }
            for p in run.phases
        },
        "correlation_id": run.correlation_id,
        "metadata": {"entity_id": state.batch_id, "timestamp": now},
    }


def emit_completion(ctx: RunCtx) -> None:
    session, engine = ctx.session, ctx.engine
    finished = engine.finished
    assert finished is not None
    data = completion_data(session.state, finished, session.recorded(), session.now)
    engine.completion = data
    topic = Topic.PIPELINE_COMPLETED.value
    session.journal.emit_lazy(
        topic, session.batch_id, BatchPipelineCompletedV1, data, finished.correlation_id
    )


def notify_completion(ctx: RunCtx) -> None:
    session, engine = ctx.session, ctx.engine
    finished, completion = engine.finished, engine.completion
    assert finished is not None
    assert completion is not None
    dest = finished.status.value
    clean = completion["failed_essay_count"] == 0 and finished.status is RunStatus.COMPLETED_SUCCESSFULLY
    notify(
        session.journal,
        batch_id=session.batch_id,
        owner=session.state.user_id,
        kind="pipeline_completed",
        priority="high" if clean else "immediate",
        action=not clean,
        payload={
            "run_id": finished.run_id,
            "pipeline_name": finished.pipeline_name,
            "final_status": dest,
            "completed_phases": list(completion["completed_phases"]),
            "successful_essays": completion["successful_essay_count"],
            "failed_essays": completion["failed_essay_count"],
            "duration_seconds": completion["processing_duration_seconds"],
            "message": f"Pipeline {finished.pipeline_name} finished: {dest}",
        },
        correlation_id=finished.correlation_id,
    )


def archive_run(ctx: RunCtx) -> None:
    session, engine = ctx.session, ctx.engine
    finished = engine.finished
    assert finished is not None
    session.state = evolve(session.state, active_run=None, history=(*session.state.history, finished))
    engine.close()


def release_batch(ctx: RunCtx) -> None:
    fired = machines.fire_batch(BatchCtx(ctx.session), "finish_run")
    if isinstance(fired, machines.Refused):
        raise fired.error(ctx.session.batch_id)


# -- guards of a run's finish ----------------------------------------------------------------
def all_succeeded(ctx: RunCtx) -> str | None:
    phases = ctx.engine.phases.values()
    return (
        None if all(p.status is PhaseStatus.COMPLETED_SUCCESSFULLY for p in phases) else "not_all_succeeded"
    )


def final_step_done(ctx: RunCtx) -> str | None:
    final = ctx.engine.phases.get(ctx.engine.run.final_step)
    return "final_step_not_done" if final is not None and not final.is_done else None


# -- a batch ends or releases its run -------------------------------------------------------------
def cancel_active_run(ctx: BatchCtx) -> None:
    engine = RunEngine.of(ctx.session)
    if engine is not None:
        engine.close_run("cancel")


def fail_active_run(ctx: BatchCtx) -> None:
    engine = RunEngine.of(ctx.session)
    if engine is not None:
        engine.close_run("fail")


# -- operator handlers ------------------------------------------------------------------------
def _session(inputs: Inputs) -> Session:
    return Session(inputs.profile, inputs.command, inputs.now, inputs.require_state())


def cancel_run(inputs: Inputs, p: CancelRun) -> Decision:
    """Cancel the active run (batch: ``cancel_run``); without one, the run lifecycle's
    refusal of ``cancel`` raises :class:`~pipeline_state.errors.IllegalTransitionError`."""
    session = _session(inputs)
    engine = RunEngine.of(session)
    if engine is None:
        lifecycle = machines.RUN.lifecycle
        assert lifecycle.refusal(ABSENT, "cancel").verdict is Verdict.REJECT
        status = session.state.status.value
        raise IllegalTransitionError(lifecycle.name, status, "cancel", batch_id=session.batch_id)
    run_id = engine.run.run_id
    fired = machines.fire_batch(BatchCtx(session), "cancel_run")
    machines.raise_if_rejected(fired, session.batch_id)
    return session.finish(run_id=run_id)


def cancel_batch(inputs: Inputs, p: CancelBatch) -> Decision:
    """Cancel the batch, and its active run first (batch: ``cancel``)."""
    session = _session(inputs)
    machines.raise_if_rejected(machines.fire_batch(BatchCtx(session), "cancel"), session.batch_id)
    return session.finish()


def archive(inputs: Inputs, p: ArchiveBatch) -> Decision:
    """Archive a ready batch (batch: ``archive``)."""
    session = _session(inputs)
    machines.raise_if_rejected(machines.fire_batch(BatchCtx(session), "archive"), session.batch_id)
    return session.finish()
