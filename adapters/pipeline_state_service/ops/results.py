"""The answer of an action that ran through the engine, and its exit code."""

from __future__ import annotations

from typing import Any, cast

import attrs

from pipeline_state._service import HandleResult, PipelineService
from pipeline_state.ports import TransitionRecord

from .exits import ExitCode

__all__ = ["ActionOutcome", "outcome_of"]


@attrs.frozen
class ActionOutcome:
    """What one action did: the inbox result of its event (``applied``, ``denied:<reason>``,
    ``ignored:<reason>``, ``deferred:<what>``), or, for a repeat, ``duplicate`` with the
    first run's result in ``original``; ``accepted`` when a running service's HTTP API took
    it (it answers a repeat the same way)."""

    action: str
    batch_id: str
    event_id: str
    requested_by: str
    result: str
    original: str | None = None
    run_id: str | None = None
    status: str | None = None
    detail: str | None = None

    @property
    def exit_code(self) -> ExitCode:
        """0 when applied (or a repeat of an applied action); 1 when the engine denied or
        ignored it."""
        effective = self.original if self.result == "duplicate" else self.result
        if effective is None or effective in ("applied", "accepted") or effective.startswith("deferred:"):
            return ExitCode.OK
        return ExitCode.REFUSED

    def as_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)

    def line(self) -> str:
        what = f"{self.action} {self.batch_id}: {self.result}"
        if self.original is not None:
            what += f" (already done: {self.original})"
        if self.detail:
            what += f" - {self.detail}"
        extras = [f"run {self.run_id}"] if self.run_id else []
        if self.status:
            extras.append(f"batch {self.status}")
        extras += [f"event {self.event_id}", f"by {self.requested_by}"]
        return f"{what}  [{', '.join(extras)}]"


async def outcome_of(
    service: PipelineService, action: str, result: HandleResult, *, actor: str, run_id: str | None = None
) -> ActionOutcome:
    """The outcome of ``result``; a duplicate is answered from the inbox and the batch now."""
    original = None
    detail = None
    requested_by = actor
    if result.duplicate:
        rows = await _logged(service, result)
        requested_by = next((row.requested_by for row in rows if row.requested_by), None) or actor
        if result.decision is not None:
            # The inbox had forgotten it; the state knew its run (``already_handled``): the
            # first attempt was applied and started that run.
            original, run_id = "applied", result.decision.run_id or run_id
        else:
            entry = await service.store.inbox_entry(result.event_id)
            original = None if entry is None else entry.result
            run_id = next((row.run_id for row in rows if row.run_id), None) or run_id
    elif result.decision is not None:
        run_id = result.decision.run_id or run_id
        if result.decision.denial is not None:
            detail = result.decision.denial.detail
    state = await service.store.load(result.batch_id)
    return ActionOutcome(
        action=action,
        batch_id=result.batch_id,
        event_id=result.event_id,
        requested_by=requested_by,
        result=result.label,
        original=original,
        run_id=run_id,
        status=None if state is None else service.profile.state_names.show(state.status.value),
        detail=detail,
    )


async def _logged(service: PipelineService, result: HandleResult) -> list[TransitionRecord]:
    """The transition log rows of the action a duplicate repeats (who asked, the run it
    moved; the repeat recorded nothing); empty when the store keeps no log or the rows are
    gone."""
    transitions = getattr(service.store, "transitions", None)
    if transitions is None:
        return []
    # The event's own rows, however long the batch's log (its oldest rows would miss them).
    rows = await transitions(result.batch_id, event_id=result.event_id)
    return [cast(TransitionRecord, row) for row in rows]
