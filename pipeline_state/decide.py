"""``decide(state, command)``: the pure heart of the library.

Given the current :class:`~pipeline_state.model.BatchState` (or ``None`` for an unknown
batch) and a :class:`~pipeline_state.commands.Command`, :func:`decide` returns a
:class:`Decision`: the new state, the events to emit, the state moves made (for the
transition log) and, when nothing changes, why. It performs no I/O and reads the time only
from its ``now`` argument, so the same input always gives the same output.

Inbound events that do not fit the current state (duplicates, stale or out-of-order
messages) are *ignored with a reason*: at-least-once delivery makes them normal. Input that
can never be valid (unknown batch, unknown phase) raises a
:class:`~pipeline_state.errors.BadCommandError`, and operator commands that are not allowed
now (cancel without an active run, archive while processing) raise
:class:`~pipeline_state.errors.IllegalTransitionError`.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any, Literal

import attrs

from .catalog import Pipeline, Plan, Step
from .commands import (
    ArchiveBatch,
    CancelBatch,
    CancelRun,
    Command,
    ExpireOverdue,
    RecordPhaseCompletion,
    RetryPhase,
)
from .errors import (
    BatchConflictError,
    BatchNotFoundError,
    IllegalTransitionError,
    ItemMismatchError,
    UnknownPipelineError,
)
from .events import (
    BatchContentProvisioningCompletedV1,
    BatchEssaysReady,
    BatchEssaysRegistered,
    BatchPipelineCompletedV1,
    BatchRegistrationRequestV1,
    BatchValidationErrorsV1,
    ClientBatchPipelineRequestV1,
    ELSBatchPhaseOutcomeV1,
    EssayProcessingInputRefV1,
    PhaseInitiateCommand,
    PhaseSkippedV1,
    PipelineDeniedV1,
    StudentAssociationsConfirmedV1,
    TeacherNotificationRequestedV1,
    Topic,
    WireModel,
)
from .guards import AdmissionRequest, Denial
from .lifecycle import BatchStatus, PhaseStatus, RunStatus
from .machine import BATCH_MACHINE, PHASE_MACHINE, RUN_MACHINE, SharedMachine
from .model import BatchState, EssayRef, PhaseRun, Run, completed_outputs, evolve
from .profile import COMMAND_OVERHEAD_BYTES, CommandSpec, Profile

__all__ = ["CORRELATION_MISMATCH", "Decision", "Emit", "Move", "decide", "derive_id", "outbox_event_id"]

_ID_NAMESPACE = uuid.UUID("6f1c1c2e-9a53-4b8e-8f3c-0d8c43f1b7a1")
_NAMESPACE_BYTES = _ID_NAMESPACE.bytes


def derive_id(*parts: str) -> str:
    """A deterministic UUID (v5) from ``parts``: ids derived from an inbound event id are the
    same on every retry of that event.

    Equal to ``str(uuid.uuid5(namespace, "\\x1f".join(parts)))``, computed without building
    ``UUID`` objects (a third of the time: decide derives one per dispatched command)."""
    digest = bytearray(hashlib.sha1(_NAMESPACE_BYTES + "\x1f".join(parts).encode()).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def outbox_event_id(command_event_id: str, index: int) -> str:
    """The event id the service gives the ``index``-th emit of a decision on the command
    with ``command_event_id`` (see ``PipelineService._envelopes``)."""
    return derive_id(command_event_id, "out", str(index))


CORRELATION_MISMATCH = "correlation_mismatch"
"""The note and flag of a phase outcome whose correlation id belongs to no run of its batch,
applied to the active run (unless the profile has ``strict_correlation``)."""


@attrs.frozen
class Emit:
    """An event to publish: topic, message key, payload and the correlation id it carries."""

    topic: str
    key: str | None
    payload: WireModel
    correlation_id: str


@attrs.frozen
class Move:
    """One state move, for the transition log. ``note`` flags a move made on doubtful input
    (``correlation_mismatch``)."""

    entity: Literal["batch", "run", "phase"]
    name: str
    trigger: str
    source: str
    dest: str
    run_id: str | None = None
    note: str | None = None


@attrs.frozen
class Decision:
    """What :func:`decide` concluded.

    ``state`` is the new state (the very same object when nothing changed); ``ignored`` says
    why an input had no effect; ``denial`` is set when a request was refused (the denial
    events are in ``emits`` and the state is unchanged); ``run_id`` names the run that was
    accepted or affected. ``flags`` name what was doubtful about an applied input
    (``correlation_mismatch``: count it, log a warning). ``resend`` lists the outbox event
    ids of commands already written that must be published again (an overdue phase's
    command, re-sent with its own event id).
    """

    state: BatchState | None
    emits: tuple[Emit, ...] = ()
    moves: tuple[Move, ...] = ()
    ignored: str | None = None
    denial: Denial | None = None
    run_id: str | None = None
    flags: tuple[str, ...] = ()
    resend: tuple[str, ...] = ()

    @property
    def changed(self) -> bool:
        return bool(self.moves)


_OUTCOME_TRIGGERS = {
    "completed_successfully": "succeed",
    "completed_with_failures": "partially_succeed",
    "failed_critically": "fail",
}


# Interim: the triggers this module still fires by their former names.
_PHASE_RENAMED = {"resend": "expire"}
_RUN_DESTS = {
    "succeed": "completed_successfully",
    "complete_with_failures": "completed_with_failures",
    "fail": "failed_critically",
    "cancel": "cancelled",
}


def _dest(machine: SharedMachine, state: str, trigger: str, batch_id: str) -> str:
    options = machine.alternatives(state, trigger)
    if not options:
        raise IllegalTransitionError(machine.lifecycle.name, str(state), trigger, batch_id=batch_id)
    return options[0].dest


class _Work:
    """Mutable scratchpad used inside one decision; never escapes :func:`decide`."""

    def __init__(self, profile: Profile, command: Command, now: datetime, state: BatchState) -> None:
        self.profile = profile
        self.command = command
        self.now = now
        self.original = state
        self.state = state
        self.emits: list[Emit] = []
        self.moves: list[Move] = []
        self.run: Run | None = state.active_run
        self.phases: dict[str, PhaseRun] = (
            {p.name: p for p in state.active_run.phases} if state.active_run else {}
        )
        self._recorded: dict[str, tuple[EssayRef, ...]] | None = None
        self.flags: list[str] = []
        self.resend: list[str] = []

    # -- batch --------------------------------------------------------------------------
    def batch_move(self, trigger: str, **changes: Any) -> None:
        source = self.state.status
        dest = _dest(BATCH_MACHINE, source, trigger, self.state.batch_id)
        self.state = evolve(self.state, status=BatchStatus(dest), **changes)
        self.moves.append(Move("batch", self.state.batch_id, trigger, source.value, dest))

    def can_batch(self, trigger: str) -> bool:
        return BATCH_MACHINE.can(self.state.status, trigger)

    def emit(
        self, topic: str, key: str | None, payload: WireModel, correlation_id: str | None = None
    ) -> None:
        self.emits.append(Emit(topic, key, payload, correlation_id or self.command.correlation_id))

    def notify(
        self,
        kind: str,
        priority: Literal["low", "high", "immediate"],
        action: bool,
        payload: dict[str, Any],
        corr: str,
    ) -> None:
        teacher = self.state.user_id
        note = TeacherNotificationRequestedV1(
            teacher_id=teacher,
            notification_type=kind,
            category="batch_progress",
            priority=priority,
            payload={"batch_id": self.state.batch_id, **payload},
            action_required=action,
            correlation_id=corr,
            batch_id=self.state.batch_id,
        )
        self.emit(Topic.TEACHER_NOTIFICATION.value, teacher, note, corr)

    # -- run and phases -----------------------------------------------------------------
    @property
    def active(self) -> Run:
        assert self.run is not None
        return self.run

    def recorded(self) -> dict[str, tuple[EssayRef, ...]]:
        if self._recorded is None:
            self._recorded = completed_outputs(self.state.history)
        return self._recorded

    def phase_move(self, name: str, trigger: str, *, note: str | None = None, **changes: Any) -> None:
        """Move phase ``name`` with ``trigger``; ``note`` flags this move alone (not the moves
        it causes) in the transition log."""
        phase = self.phases[name]
        dest = _dest(PHASE_MACHINE, phase.status, _PHASE_RENAMED.get(trigger, trigger), self.state.batch_id)
        self.phases[name] = evolve(phase, status=PhaseStatus(dest), **changes)
        self.moves.append(Move("phase", name, trigger, phase.status.value, dest, self.active.run_id, note))

    def dependency_outputs(self, dep: str) -> tuple[EssayRef, ...] | None:
        """Outputs of a dependency: from this run, else the recorded (pruned) execution.
        ``None`` while the dependency has not finished in this run."""
        phase = self.phases.get(dep)
        if phase is None:
            return self.recorded().get(dep, ())
        if phase.is_done:
            return phase.outputs
        return None if not phase.is_terminal else ()

    def inputs_for(self, phase: PhaseRun) -> tuple[EssayRef, ...] | None:
        if not phase.depends_on:
            return self.state.essays
        order = {name: i for i, name in enumerate(self.active_plan_order())}
        deps = sorted(phase.depends_on, key=lambda d: order.get(d, -1))
        outputs: list[tuple[EssayRef, ...]] = []
        for dep in deps:
            out = self.dependency_outputs(dep)
            if out is None:
                return None
            outputs.append(out)
        survivors = set.intersection(*({e.essay_id for e in out} for out in outputs))
        return tuple(e for e in outputs[-1] if e.essay_id in survivors)

    def active_plan_order(self) -> tuple[str, ...]:
        return self.active.plan or self.active.pruned + tuple(self.phases)

    def skip_phase(self, name: str, reason: str, error: str) -> None:
        """Mark a pending phase skipped and announce it with ``PhaseSkippedV1``."""
        self.phase_move(name, "skip_dependency_failed", finished_at=self.now, error=error)
        self.emit(
            Topic.PHASE_SKIPPED.value,
            self.state.batch_id,
            PhaseSkippedV1(
                batch_id=self.state.batch_id,
                phase_name=name,
                skip_reason=reason,
                correlation_id=self.active.correlation_id,
                run_id=self.active.run_id,
            ),
            self.active.correlation_id,
        )

    def skip_dependents(self, failed: str, reason: str) -> None:
        frontier = {failed}
        for name, phase in self.phases.items():
            if phase.status is PhaseStatus.PENDING_DEPENDENCIES and frontier.intersection(phase.depends_on):
                self.skip_phase(name, reason, f"{reason}:{failed}")
                frontier.add(name)

    def dispatch_ready(self) -> None:
        limit = self.profile.max_parallel
        running = sum(1 for p in self.phases.values() if p.is_active)
        for name in list(self.phases):
            # Re-read: skipping an earlier phase may have skipped this one already.
            phase = self.phases[name]
            if phase.status is not PhaseStatus.PENDING_DEPENDENCIES:
                continue
            if limit is not None and running >= limit:
                return
            inputs = self.inputs_for(phase)
            if inputs is None:
                continue
            if not inputs and phase.depends_on:
                self.skip_phase(name, "no_essays_to_process", "no_essays_to_process")
                self.skip_dependents(name, "dependency_failed")
                continue
            spec = self.profile.phase_commands[name]
            payload = self.phase_command(spec, inputs)
            if payload is None:
                # Never build a command the producer would refuse: the phase fails at once.
                self.phase_move(name, "dispatch", dispatched_at=self.now, inputs=inputs)
                self.fail_phase(name, "command_too_large", failed=tuple(e.essay_id for e in inputs))
                continue
            event_id = outbox_event_id(self.command.event_id, len(self.emits))
            self.phase_move(
                name,
                "dispatch",
                dispatched_at=self.now,
                deadline_at=self.deadline(phase),
                inputs=inputs,
                command_event_id=event_id,
            )
            running += 1
            self.emit(spec.topic, self.state.batch_id, payload, self.active.correlation_id)

    def deadline(self, phase: PhaseRun) -> datetime | None:
        seconds = phase.deadline_seconds
        return self.now + timedelta(seconds=seconds) if seconds else None

    def phase_command(self, spec: CommandSpec, inputs: tuple[EssayRef, ...]) -> PhaseInitiateCommand | None:
        """The command that starts a phase over ``inputs``; ``None`` when it would exceed
        the profile's ``max_command_bytes`` (measured only when the item count allows it)."""
        state = self.state
        payload = spec.model.model_validate(
            {
                "batch_id": state.batch_id,
                "essays_to_process": [_wire_ref(e) for e in inputs],
                "language": state.language,
                "course_code": state.course_code,
                "class_id": state.class_id,
            }
        )
        if len(inputs) > self.profile.measure_above_items:
            size = COMMAND_OVERHEAD_BYTES + len(payload.__pydantic_serializer__.to_json(payload))
            if size > self.profile.max_command_bytes:
                return None
        return payload

    def fail_phase(
        self,
        name: str,
        error: str,
        outputs: tuple[EssayRef, ...] = (),
        failed: tuple[str, ...] = (),
        *,
        note: str | None = None,
    ) -> None:
        self.phase_move(
            name,
            "fail",
            note=note,
            finished_at=self.now,
            error=error,
            outputs=outputs,
            failed_essay_ids=failed,
        )
        self.skip_dependents(name, "dependency_failed")

    def advance(self) -> None:
        """Dispatch what became ready and complete the run when nothing is left."""
        self.dispatch_ready()
        if all(p.is_terminal for p in self.phases.values()):
            self.close_run(self.final_trigger())

    def final_trigger(self) -> str:
        phases = self.phases.values()
        if any(p.status is PhaseStatus.CANCELLED for p in phases):
            return "cancel"
        if all(p.status is PhaseStatus.COMPLETED_SUCCESSFULLY for p in phases):
            return "succeed"
        final = self.phases.get(self.active.final_step)
        if final is not None and not final.is_done:
            return "fail"
        return "complete_with_failures"

    def cancel_open_phases(self) -> None:
        for name, phase in list(self.phases.items()):
            if not phase.is_terminal:
                self.phase_move(name, "cancel", finished_at=self.now, error="cancelled")

    def close_run(self, trigger: str, *, batch_trigger: str = "finish_run") -> None:
        """Finish the active run exactly once: emit completion, archive, move the batch."""
        run = self.active
        dest = _RUN_DESTS[trigger]
        _dest(RUN_MACHINE, run.status, "finish" if trigger != "cancel" else trigger, self.state.batch_id)
        self.moves.append(Move("run", run.run_id, trigger, run.status.value, dest, run.run_id))
        finished = evolve(
            run, status=RunStatus(dest), phases=tuple(self.phases.values()), completed_at=self.now
        )
        self.run = finished
        completion = _completion_event(self.state, finished, self.recorded(), self.now)
        corr = run.correlation_id
        self.emit(Topic.PIPELINE_COMPLETED.value, self.state.batch_id, completion, corr)
        clean = completion.failed_essay_count == 0 and dest == RunStatus.COMPLETED_SUCCESSFULLY.value
        self.notify(
            "pipeline_completed",
            "high" if clean else "immediate",
            not clean,
            {
                "run_id": run.run_id,
                "pipeline_name": run.pipeline_name,
                "final_status": dest,
                "completed_phases": list(completion.completed_phases),
                "successful_essays": completion.successful_essay_count,
                "failed_essays": completion.failed_essay_count,
                "duration_seconds": completion.processing_duration_seconds,
                "message": f"Pipeline {run.pipeline_name} finished: {dest}",
            },
            corr,
        )
        history = (*self.state.history, finished)
        self.phases = {}
        self.run = None
        self.batch_move(batch_trigger, active_run=None, history=history)

    # -- result -------------------------------------------------------------------------
    def decision(
        self,
        *,
        ignored: str | None = None,
        denial: Denial | None = None,
        run_id: str | None = None,
        progress: bool = True,
    ) -> Decision:
        """The decision of this work. ``progress=False`` keeps the batch's ``updated_at``
        (the time of its last progress, which the stalled-runs view reads): a re-sent
        command changes the state but moves nothing forward."""
        if not self.moves:
            return Decision(self.original, tuple(self.emits), (), ignored, denial, run_id)
        changes: dict[str, Any] = {"version": self.original.version + 1}
        if progress:
            changes["updated_at"] = self.now
        if self.run is not None:
            changes["active_run"] = evolve(self.run, phases=tuple(self.phases.values()))
        state = evolve(self.state, **changes)
        return Decision(
            state,
            tuple(self.emits),
            tuple(self.moves),
            None,
            denial,
            run_id,
            tuple(self.flags),
            tuple(self.resend),
        )


def _wire_ref(ref: EssayRef) -> EssayProcessingInputRefV1:
    return EssayProcessingInputRefV1(essay_id=ref.essay_id, text_storage_id=ref.text_storage_id)


def _refs(items: Iterable[EssayProcessingInputRefV1]) -> tuple[EssayRef, ...]:
    return tuple(EssayRef(i.essay_id, i.text_storage_id) for i in items)


def _completion_event(
    state: BatchState, run: Run, recorded: Mapping[str, tuple[EssayRef, ...]], now: datetime
) -> BatchPipelineCompletedV1:
    final = run.phase(run.final_step)
    # A pruned final step is not in run.phases: its recorded outputs came out of the run.
    out = recorded.get(run.final_step, ()) if final is None else (final.outputs if final.is_done else ())
    successful = {e.essay_id for e in out}
    entered = {e.essay_id for p in run.phases for e in p.inputs} | successful
    # One validation of plain data: nested model instances would each be validated apart.
    return BatchPipelineCompletedV1.model_validate(
        {
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
    )


# --- handlers ----------------------------------------------------------------------------


def _language(course_code: str, language: str | None) -> str:
    if language:
        return language
    return "sv" if course_code.upper().startswith("SV") else "en"


def _register(
    profile: Profile, cmd: Command, now: datetime, state: BatchState | None, p: BatchRegistrationRequestV1
) -> Decision:
    essay_ids = (
        tuple(p.essay_ids)
        if p.essay_ids
        else tuple(derive_id(p.batch_id, "essay", str(i)) for i in range(p.expected_essay_count))
    )
    fresh = BatchState(
        batch_id=p.batch_id,
        status=BatchStatus.AWAITING_CONTENT_VALIDATION,
        version=1,
        user_id=p.user_id,
        course_code=p.course_code,
        expected_essay_count=p.expected_essay_count,
        essay_ids=essay_ids,
        created_at=now,
        updated_at=now,
        org_id=p.org_id,
        class_id=p.class_id,
        language=_language(p.course_code, p.language),
        prompt_ref=p.student_prompt_ref,
    )
    if state is not None:
        same = (
            state.user_id,
            state.course_code,
            state.expected_essay_count,
            state.org_id,
            state.class_id,
        ) == (
            fresh.user_id,
            fresh.course_code,
            fresh.expected_essay_count,
            fresh.org_id,
            fresh.class_id,
        ) and (p.essay_ids is None or state.essay_ids == essay_ids)
        if not same:
            raise BatchConflictError(p.batch_id)
        return Decision(state, ignored="already_registered")
    if p.expected_essay_count > profile.max_items_per_batch:
        raise ItemMismatchError(
            "too_many_items",
            batch_id=p.batch_id,
            detail=f"{p.expected_essay_count} essays, the profile allows {profile.max_items_per_batch}",
        )
    event = BatchEssaysRegistered(
        entity_id=p.batch_id,
        expected_essay_count=p.expected_essay_count,
        essay_ids=list(essay_ids),
        user_id=p.user_id,
        org_id=p.org_id,
        class_id=p.class_id,
        course_code=p.course_code,
    )
    created = Move("batch", p.batch_id, "register", "", fresh.status.value)
    emit = Emit(Topic.ESSAYS_REGISTERED.value, p.batch_id, event, cmd.correlation_id)
    return Decision(fresh, (emit,), (created,))


def _unexpected(work: _Work, trigger: str) -> Decision:
    return work.decision(ignored=f"unexpected:{trigger} in {work.state.status.value}")


def _duplicates(ids: Iterable[str]) -> tuple[str, ...]:
    seen: set[str] = set()
    twice: dict[str, None] = {}
    for i in ids:
        if i in seen:
            twice[i] = None
        seen.add(i)
    return tuple(twice)


def _explicit_essay_ids(state: BatchState) -> frozenset[str] | None:
    """The essay ids the registration named, or ``None`` when it named none (the engine then
    derived slot ids ``derive_id(batch_id, "essay", i)``, and the content service's own ids
    are accepted: only their number is checked)."""
    ids = state.essay_ids
    if not ids or ids[0] == derive_id(state.batch_id, "essay", "0"):
        return None
    return frozenset(ids)


def _check_registered(w: _Work, refs: tuple[EssayRef, ...]) -> None:
    """Readiness facts may only name registered items: no more than the registration's
    ``expected_essay_count``, each once, and only the registration's ``essay_ids`` when it
    named them. Raises :class:`ItemMismatchError` otherwise."""
    state = w.state
    ids = [e.essay_id for e in refs]
    twice = _duplicates(ids)
    if twice:
        raise ItemMismatchError("duplicate_items", batch_id=state.batch_id, ids=twice)
    if len(ids) > state.expected_essay_count:
        raise ItemMismatchError(
            "too_many_items",
            batch_id=state.batch_id,
            detail=f"{len(ids)} essays named, {state.expected_essay_count} registered",
        )
    registered = _explicit_essay_ids(state)
    if registered is not None:
        unknown = tuple(i for i in ids if i not in registered)
        if unknown:
            raise ItemMismatchError("unregistered_items", batch_id=state.batch_id, ids=unknown)


def _check_outcome_items(
    w: _Work, phase: PhaseRun, outputs: tuple[EssayRef, ...], failed: tuple[str, ...]
) -> None:
    """An outcome may only name items sent to its phase, each once, none both processed and
    failed; so a phase's figures never exceed its inputs. Raises :class:`ItemMismatchError`."""
    batch_id = w.state.batch_id
    processed = [e.essay_id for e in outputs]
    twice = _duplicates(processed) + _duplicates(failed)
    if twice:
        raise ItemMismatchError("duplicate_items", batch_id=batch_id, ids=twice, phase=phase.name)
    sent = {e.essay_id for e in phase.inputs}
    unsent = tuple(i for i in (*processed, *failed) if i not in sent)
    if unsent:
        raise ItemMismatchError(
            "items_not_sent_to_phase",
            batch_id=batch_id,
            ids=unsent,
            phase=phase.name,
            detail=f"{len(sent)} essays were sent to it",
        )
    both = tuple(i for i in failed if i in set(processed))
    if both:
        raise ItemMismatchError("processed_and_failed", batch_id=batch_id, ids=both, phase=phase.name)


def _provisioned(w: _Work, p: BatchContentProvisioningCompletedV1) -> Decision:
    trigger = "provision_guest" if w.state.is_guest else "provision_regular"
    if not w.can_batch(trigger):
        return _unexpected(w, trigger)
    essays = _refs(p.essays_for_processing)
    _check_registered(w, essays)
    w.state = evolve(w.state, essays=essays)
    w.batch_move(trigger)
    matching = w.profile.student_matching
    if trigger == "provision_regular" and matching is not None:
        payload = matching.model.model_validate(
            {
                "batch_id": w.state.batch_id,
                "class_id": w.state.class_id,
                "essays_to_process": [_wire_ref(e) for e in w.state.essays],
            }
        )
        w.emit(matching.topic, w.state.batch_id, payload)
    return w.decision()


def _associations(w: _Work, p: StudentAssociationsConfirmedV1) -> Decision:
    if not w.can_batch("confirm_associations"):
        return _unexpected(w, "confirm_associations")
    w.batch_move("confirm_associations")
    return w.decision()


def _essays_ready(w: _Work, p: BatchEssaysReady) -> Decision:
    if not w.can_batch("essays_ready"):
        return _unexpected(w, "essays_ready")
    essays = _refs(p.ready_essays)
    _check_registered(w, essays)
    w.state = evolve(w.state, essays=essays)
    w.batch_move("essays_ready")
    return w.decision()


def _validation_errors(w: _Work, p: BatchValidationErrorsV1) -> Decision:
    if not p.error_summary.critical_failure:
        return w.decision(ignored="non_critical_validation_errors")
    if not w.can_batch("fail_critically"):
        return _unexpected(w, "fail_critically")
    if w.run is not None:
        w.cancel_open_phases()
        w.close_run("fail", batch_trigger="fail_critically")
    else:
        w.batch_move("fail_critically")
    return w.decision()


def _deny(w: _Work, user_id: str, pipeline: str, denial: Denial) -> Decision:
    state = w.state
    w.emit(
        Topic.PIPELINE_DENIED.value,
        state.batch_id,
        PipelineDeniedV1(
            batch_id=state.batch_id,
            user_id=user_id,
            requested_pipeline=pipeline,
            denial_reason=denial.reason,
            detail=denial.detail,
        ),
    )
    w.notify(
        "pipeline_denied",
        "immediate",
        True,
        {"requested_pipeline": pipeline, "denial_reason": denial.reason, "detail": denial.detail},
        w.command.correlation_id,
    )
    return w.decision(denial=denial)


def _admission_denial(state: BatchState) -> Denial | None:
    if state.active_run is not None or state.status is BatchStatus.PROCESSING_PIPELINES:
        return Denial("pipeline_already_active", "the batch has an active run")
    if state.status is not BatchStatus.READY_FOR_PIPELINE_EXECUTION:
        return Denial("batch_not_ready", f"the batch is {state.status.value}")
    return None


def _start_run(
    w: _Work,
    plan: Plan,
    *,
    name: str,
    user_id: str,
    is_retry: bool,
    retry_reason: str | None,
    plan_order: tuple[str, ...] | None = None,
) -> Decision:
    run_id = derive_id(w.command.event_id, "run")
    if plan_order is None:
        plan_order = plan.pipeline.step_names
    corr = w.command.correlation_id
    w.batch_move("start_run")
    w.run = Run(
        run_id=run_id,
        pipeline_name=name,
        correlation_id=corr,
        requested_by=user_id,
        accepted_at=w.now,
        final_step=plan.pipeline.final_step,
        phases=(),
        pruned=plan.pruned,
        is_retry=is_retry,
        retry_reason=retry_reason,
        plan=plan_order,
    )
    w.moves.append(Move("run", run_id, "accept", "", RunStatus.ACTIVE.value, run_id))
    for step in plan.to_run:
        w.phases[step.name] = PhaseRun(
            step.name,
            step.depends_on,
            PhaseStatus.REQUESTED_BY_USER,
            deadline_seconds=w.profile.deadline_for(step),
        )
        w.phase_move(step.name, "plan")
    for pruned in plan.pruned:
        skipped = PhaseSkippedV1(
            batch_id=w.state.batch_id,
            phase_name=pruned,
            skip_reason="already_completed",
            correlation_id=corr,
            run_id=run_id,
        )
        w.emit(Topic.PHASE_SKIPPED.value, w.state.batch_id, skipped, corr)
    w.notify(
        "batch_processing_started",
        "low",
        False,
        {
            "run_id": run_id,
            "pipeline_name": name,
            "phases": [s.name for s in plan.to_run],
            "skipped_phases": list(plan.pruned),
        },
        corr,
    )
    w.advance()
    return w.decision(run_id=run_id)


def _admit(w: _Work, plan: Plan, *, user_id: str, prompt: Mapping[str, Any] | None) -> Denial | None:
    request = AdmissionRequest(batch=w.state, plan=plan, user_id=user_id, prompt_payload=prompt, now=w.now)
    for guard in w.profile.guards:
        denial = guard.check(request)
        if denial is not None:
            return denial
    return None


def _request(
    profile: Profile, cmd: Command, now: datetime, state: BatchState | None, p: ClientBatchPipelineRequestV1
) -> Decision:
    if state is None:
        # Admission rule 1: never silent, even for an unknown batch.
        placeholder = _placeholder(p.batch_id, p.user_id, now)
        w = _Work(profile, cmd, now, placeholder)
        decision = _deny(w, p.user_id, p.requested_pipeline, Denial("batch_not_found", "no such batch"))
        return attrs.evolve(decision, state=None)
    w = _Work(profile, cmd, now, state)
    denial = _admission_denial(state)
    if denial is None and p.requested_pipeline not in profile.catalog:
        denial = Denial("unknown_pipeline", f"no pipeline named {p.requested_pipeline!r}")
    if denial is not None:
        return _deny(w, p.user_id, p.requested_pipeline, denial)
    plan = profile.catalog.plan(p.requested_pipeline, w.recorded().keys())
    denial = _admit(w, plan, user_id=p.user_id, prompt=p.prompt_payload)
    if denial is not None:
        return _deny(w, p.user_id, p.requested_pipeline, denial)
    if p.prompt_payload and state.prompt_ref is None:
        ref = p.prompt_payload.get("prompt_ref") or p.prompt_payload.get("assignment_id") or "inline"
        w.state = evolve(w.state, prompt_ref=str(ref))
    return _start_run(
        w,
        plan,
        name=p.requested_pipeline,
        user_id=p.user_id,
        is_retry=p.is_retry,
        retry_reason=p.retry_reason,
    )


def _placeholder(batch_id: str, user_id: str, now: datetime) -> BatchState:
    return BatchState(batch_id, BatchStatus.AWAITING_CONTENT_VALIDATION, 0, user_id, "", 0, (), now, now)


def _outcome(w: _Work, p: ELSBatchPhaseOutcomeV1) -> Decision:
    """Apply a phase outcome to the active run.

    Correlation: an outcome whose correlation id is an archived run's is ignored
    (``stale_run``); one whose id belongs to no run of the batch is applied to the active run
    and flagged ``correlation_mismatch`` (on its phase moves and in ``Decision.flags``),
    since workers have been seen to lose correlation ids - unless the profile has
    ``strict_correlation``, which ignores it as ``stale_run``.

    Items: once the outcome would apply, it may only name essays sent to the phase, each
    once, none both processed and failed; otherwise :class:`ItemMismatchError` is raised
    (nothing changes; Kafka dead-letters the record, HTTP answers 4xx).
    """
    if not w.profile.is_phase(p.phase_name):
        raise UnknownPipelineError(p.phase_name, batch_id=p.batch_id, kind="phase")
    if w.run is None:
        return w.decision(ignored="no_active_run")
    phase = w.phases.get(p.phase_name)
    if phase is None:
        return w.decision(ignored="phase_not_in_run")
    corr = str(p.correlation_id)
    mismatch = corr != w.active.correlation_id
    if mismatch and (w.profile.strict_correlation or any(r.correlation_id == corr for r in w.state.history)):
        return w.decision(ignored="stale_run")
    if phase.is_terminal:
        return w.decision(ignored="duplicate_outcome")
    if not phase.is_active:
        return w.decision(ignored="phase_not_dispatched")
    run_id = w.active.run_id
    outputs = _refs(p.processed_essays)
    failed = tuple(p.failed_essay_ids)
    _check_outcome_items(w, phase, outputs, failed)
    note = None
    if mismatch:
        note = CORRELATION_MISMATCH
        w.flags.append(CORRELATION_MISMATCH)
    trigger = _OUTCOME_TRIGGERS[p.phase_status]
    if trigger == "fail":
        w.fail_phase(p.phase_name, "failed_critically", outputs, failed, note=note)
    else:
        w.phase_move(
            p.phase_name, trigger, note=note, finished_at=w.now, outputs=outputs, failed_essay_ids=failed
        )
    w.advance()
    return w.decision(run_id=run_id)


def _cancel_run(w: _Work, p: CancelRun) -> Decision:
    if w.run is None:
        raise IllegalTransitionError("run", w.state.status.value, "cancel", batch_id=w.state.batch_id)
    run_id = w.active.run_id
    w.cancel_open_phases()
    w.close_run("cancel")
    return w.decision(run_id=run_id)


def _retry_phase(w: _Work, p: RetryPhase) -> Decision:
    denial = _admission_denial(w.state)
    if denial is None and not w.profile.is_phase(p.phase_name):
        denial = Denial("unknown_pipeline", f"no phase named {p.phase_name!r}")
    if denial is not None:
        return _deny(w, p.user_id, p.phase_name, denial)
    step = w.profile.catalog.step_definition(p.phase_name)
    missing = [d for d in step.depends_on if d not in w.recorded()]
    if missing:
        return _deny(w, p.user_id, p.phase_name, Denial("dependencies_not_completed", f"run {missing} first"))
    pipeline = _retry_pipeline(w.profile, p.phase_name)
    plan = Plan(pipeline=pipeline, to_run=(step,), pruned=())
    denial = _admit(w, plan, user_id=p.user_id, prompt=None)
    if denial is not None:
        return _deny(w, p.user_id, p.phase_name, denial)
    return _start_run(
        w,
        plan,
        name=p.phase_name,
        user_id=p.user_id,
        is_retry=True,
        retry_reason=p.retry_reason,
        plan_order=_retry_plan_order(w.profile, p.phase_name, step),
    )


def _retry_plan_order(profile: Profile, phase: str, step: Step) -> tuple[str, ...]:
    """The dependencies of a retried phase in the plan order of a pipeline containing it."""
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


def _expire(w: _Work, p: ExpireOverdue) -> Decision:
    """The sweeper: each active phase past its deadline has its command re-sent (same outbox
    event id, in ``Decision.resend``; a fresh deadline) while it has been re-sent fewer than
    the profile's ``max_resends`` times, and then fails with ``timeout``. A phase dispatched
    before commands' event ids were recorded is failed at once."""
    if w.run is None:
        return w.decision(ignored="no_active_run")
    overdue = [
        name
        for name, phase in w.phases.items()
        if phase.is_active and phase.deadline_at is not None and phase.deadline_at <= w.now
    ]
    if not overdue:
        return w.decision(ignored="nothing_overdue")
    run_id = w.active.run_id
    failed_any = False
    for name in overdue:
        phase = w.phases[name]
        if not phase.is_active:
            continue  # failed by an earlier phase of this loop? (only skips touch pending ones)
        if phase.command_event_id is not None and phase.resends < w.profile.max_resends:
            # Send the very same command again (a worker that has it deduplicates by id).
            w.phase_move(name, "resend", resends=phase.resends + 1, deadline_at=w.deadline(phase))
            w.resend.append(phase.command_event_id)
        else:
            # No outcome came: every essay the phase was given counts as failed.
            w.fail_phase(name, "timeout", failed=tuple(e.essay_id for e in phase.inputs))
            failed_any = True
    w.advance()
    # Re-sends alone are no progress: the run keeps showing as stalled while nobody answers.
    return w.decision(run_id=run_id, progress=failed_any)


def _archive(w: _Work, p: ArchiveBatch) -> Decision:
    w.batch_move("archive")
    return w.decision()


def _cancel_batch(w: _Work, p: CancelBatch) -> Decision:
    if w.run is not None:
        w.cancel_open_phases()
        w.close_run("cancel", batch_trigger="cancel")
    else:
        w.batch_move("cancel")
    return w.decision()


def _record_completion(w: _Work, p: RecordPhaseCompletion) -> Decision:
    if not w.profile.is_phase(p.phase_name):
        raise UnknownPipelineError(p.phase_name, batch_id=p.batch_id, kind="phase")
    phase = w.phases.get(p.phase_name)
    if phase is not None and phase.is_active:
        if p.success:
            w.phase_move(p.phase_name, "succeed", finished_at=w.now, outputs=phase.inputs)
        else:
            w.fail_phase(p.phase_name, "reported_failed")
        run_id = w.active.run_id
        w.advance()
        return w.decision(run_id=run_id)
    if w.run is not None:
        return w.decision(ignored="phase_not_active")
    if not p.success:
        return w.decision(ignored="failure_outside_run")
    if w.state.status is not BatchStatus.READY_FOR_PIPELINE_EXECUTION:
        return _unexpected(w, "record_phase_completion")
    step = w.profile.catalog.step_definition(p.phase_name)
    deps = [w.recorded().get(d) for d in step.depends_on]
    if any(d is None for d in deps):
        return w.decision(ignored="dependencies_not_completed")
    outputs = w.state.essays if not deps else deps[-1] or ()
    run_id = derive_id(w.command.event_id, "run")
    manual = PhaseRun(
        p.phase_name,
        step.depends_on,
        PhaseStatus.COMPLETED_SUCCESSFULLY,
        dispatched_at=w.now,
        finished_at=w.now,
        inputs=outputs,
        outputs=outputs,
    )
    record = Run(
        run_id=run_id,
        pipeline_name=f"manual:{p.phase_name}",
        correlation_id=w.command.correlation_id,
        requested_by="operator",
        accepted_at=w.now,
        final_step=p.phase_name,
        phases=(manual,),
        status=RunStatus.COMPLETED_SUCCESSFULLY,
        completed_at=w.now,
    )
    w.state = evolve(w.state, history=(*w.state.history, record))
    w.moves.append(Move("run", run_id, "record", "", RunStatus.COMPLETED_SUCCESSFULLY.value, run_id))
    return w.decision(run_id=run_id)


_Handler = Callable[[_Work, Any], Decision]
_STATE_HANDLERS: dict[type, _Handler] = {
    BatchContentProvisioningCompletedV1: _provisioned,
    StudentAssociationsConfirmedV1: _associations,
    BatchEssaysReady: _essays_ready,
    BatchValidationErrorsV1: _validation_errors,
    ELSBatchPhaseOutcomeV1: _outcome,
    CancelRun: _cancel_run,
    RetryPhase: _retry_phase,
    ExpireOverdue: _expire,
    ArchiveBatch: _archive,
    CancelBatch: _cancel_batch,
    RecordPhaseCompletion: _record_completion,
}


def decide(state: BatchState | None, command: Command, *, profile: Profile, now: datetime) -> Decision:
    """Decide what ``command`` does to ``state``; pure and deterministic.

    Raises :class:`~pipeline_state.errors.BatchNotFoundError` when ``state`` is ``None`` for
    anything but a registration or a pipeline request (which is denied, not raised),
    :class:`~pipeline_state.errors.UnknownPipelineError` for a phase the profile does not
    know, :class:`~pipeline_state.errors.BatchConflictError` for a conflicting registration
    and :class:`~pipeline_state.errors.IllegalTransitionError` for an operator command that
    the batch's state does not allow.
    """
    payload = command.payload
    if isinstance(payload, BatchRegistrationRequestV1):
        return _register(profile, command, now, state, payload)
    if isinstance(payload, ClientBatchPipelineRequestV1):
        return _request(profile, command, now, state, payload)
    handler = _STATE_HANDLERS.get(type(payload))
    if handler is None:
        raise TypeError(f"decide() has no handler for {type(payload).__name__}")
    if state is None:
        raise BatchNotFoundError(command.batch_id)
    return handler(_Work(profile, command, now, state), payload)
