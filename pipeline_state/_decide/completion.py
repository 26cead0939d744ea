"""How a run ends: its completion event (exactly once), the owner's notification, its
archiving into the batch's history and the batch's release. These are the effects of every
run transition that leaves ``active``."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime

import attrs

from pipeline_state._commands import ArchiveBatch, CancelBatch, CancelRun
from pipeline_state._lifecycle import ABSENT, PHASE_DONE, PhaseStatus, Verdict
from pipeline_state._model import ItemRef, Run
from pipeline_state._outbound import Notice, RunSummary
from pipeline_state.errors import BadCommandError, IllegalTransitionError

from . import machines
from .context import BatchCtx, RunCtx, Session
from .journal import NOTE_LENGTH, Decision
from .registry import Inputs
from .run import RunEngine
from .text import check_free_text

_SUCCEEDED = PhaseStatus.COMPLETED_SUCCESSFULLY

__all__ = [
    "all_succeeded",
    "archive",
    "archive_run",
    "cancel_active_run",
    "cancel_batch",
    "cancel_run",
    "emit_completion",
    "fail_active_run",
    "final_step_done",
    "notify_completion",
    "release_batch",
    "run_summary",
]


def run_summary(
    run: Run, recorded: Callable[[], Mapping[str, tuple[ItemRef, ...]]], now: datetime
) -> RunSummary:
    """The facts of the finished ``run``: an item succeeded when it came out of the final
    step (a pruned final step's ``recorded`` outputs count: read only then); it failed when
    it entered a phase of the run and did not."""
    final_step = run.final_step
    entered: set[str] = set()
    out: tuple[ItemRef, ...] | None = None
    for phase in run.phases:
        entered.update([e.item_id for e in phase.inputs])
        if phase.name == final_step:
            out = phase.outputs if phase.status in PHASE_DONE else ()
    if out is None:
        out = recorded().get(final_step, ())
    successful = {e.item_id for e in out}
    entered |= successful
    seconds = (now - run.accepted_at).total_seconds()
    return RunSummary(run, len(successful), len(entered) - len(successful), max(0.0, seconds), now)


def emit_completion(ctx: RunCtx) -> None:
    session, engine = ctx.session, ctx.engine
    finished = engine.finished
    assert finished is not None
    summary = engine.summary = run_summary(finished, session.recorded, session.now)
    session.journal.emit_all(session.profile.outbound.completed(session.state, summary))


def notify_completion(ctx: RunCtx) -> None:
    session, summary = ctx.session, ctx.engine.summary
    assert summary is not None
    notice = Notice(
        "run_finished", session.state, summary.run.correlation_id, run=summary.run, summary=summary
    )
    session.journal.emit_all(session.profile.outbound.notify(notice))


def archive_run(ctx: RunCtx) -> None:
    session, engine = ctx.session, ctx.engine
    finished = engine.finished
    assert finished is not None
    past = session.state.past.after(finished, remember=session.profile.runs_remembered)
    session.change(active_run=None, past=past)
    session.archived.append(finished)
    engine.close()


def release_batch(ctx: RunCtx) -> None:
    machines.require(machines.fire_batch(BatchCtx(ctx.session), "finish_run"), ctx.session.batch_id)


# -- guards of a run's finish ----------------------------------------------------------------
def all_succeeded(ctx: RunCtx) -> str | None:
    for phase in ctx.engine.phases.values():
        if phase.status is not _SUCCEEDED:
            return "not_all_succeeded"
    return None


def final_step_done(ctx: RunCtx) -> str | None:
    final = ctx.engine.phases.get(ctx.engine.run.final_step)
    return "final_step_not_done" if final is not None and not final.is_done else None


# -- a batch ends or releases its run -------------------------------------------------------------
def cancel_active_run(ctx: BatchCtx) -> None:
    engine = RunEngine.of(ctx.session)
    if engine is not None:
        engine.close_run("cancel")
        payload = ctx.session.command.payload
        if isinstance(payload, CancelRun | CancelBatch) and payload.reason:
            _note_reason(ctx.session, payload.reason)


def _note_reason(session: Session, reason: str) -> None:
    """Note the operator's ``reason`` on the run's ``cancel`` move (the transition log keeps
    its first :data:`NOTE_LENGTH` characters)."""
    moves = session.journal.moves
    for index in range(len(moves) - 1, -1, -1):
        move = moves[index]
        if move.entity == "run" and move.trigger == "cancel":
            note = reason if len(reason) <= NOTE_LENGTH else reason[: NOTE_LENGTH - 1] + "\u2026"
            moves[index] = attrs.evolve(move, note=note)
            return


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
    check_free_text(p.reason, "reason", session.batch_id)
    engine = RunEngine.of(session)
    if engine is None:
        lifecycle = machines.RUN.lifecycle
        assert lifecycle.refusal(ABSENT, "cancel").verdict is Verdict.REJECT
        status = session.state.status.value
        raise IllegalTransitionError(lifecycle.name, status, "cancel", batch_id=session.batch_id)
    run_id = engine.run.run_id
    if p.run_id is not None and p.run_id != run_id:
        raise BadCommandError(
            f"run {p.run_id} is not the active run of batch {session.batch_id} (active: {run_id})",
            batch_id=session.batch_id,
        )
    fired = machines.fire_batch(BatchCtx(session), "cancel_run")
    machines.require(fired, session.batch_id)
    return session.finish(run_id=run_id)


def cancel_batch(inputs: Inputs, p: CancelBatch) -> Decision:
    """Cancel the batch, and its active run first (batch: ``cancel``)."""
    session = _session(inputs)
    check_free_text(p.reason, "reason", session.batch_id)
    machines.require(machines.fire_batch(BatchCtx(session), "cancel"), session.batch_id)
    return session.finish()


def archive(inputs: Inputs, p: ArchiveBatch) -> Decision:
    """Archive a ready batch (batch: ``archive``)."""
    session = _session(inputs)
    machines.require(machines.fire_batch(BatchCtx(session), "archive"), session.batch_id)
    return session.finish()
