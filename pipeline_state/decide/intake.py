"""Registration and readiness: the facts that bring a batch from registered to ready for
pipelines (or end it), and the item checks they pass."""

from __future__ import annotations

from pipeline_state.errors import BatchConflictError, ItemMismatchError
from pipeline_state.events import (
    BatchContentProvisioningCompletedV1,
    BatchEssaysReady,
    BatchRegistrationRequestV1,
    BatchValidationErrorsV1,
    EssayProcessingInputRefV1,
    StudentAssociationsConfirmedV1,
)
from pipeline_state.lifecycle import BatchStatus, Verdict
from pipeline_state.model import BatchState, EssayRef, evolve
from pipeline_state.profile import Profile

from . import machines
from .context import BatchCtx, Session
from .ids import derive_id
from .journal import Decision
from .registry import Inputs
from .run import duplicates, wire_ref

__all__ = [
    "PROVISION_TRIGGERS",
    "announce_registration",
    "associations",
    "essays_ready",
    "items_registered",
    "items_within_limit",
    "keep_items",
    "provision_trigger",
    "provisioned",
    "register",
    "request_matching",
    "validation_errors",
]


def refs(items: list[EssayProcessingInputRefV1]) -> tuple[EssayRef, ...]:
    return tuple(EssayRef(i.essay_id, i.text_storage_id) for i in items)


def _language(course_code: str, language: str | None) -> str:
    if language:
        return language
    return "sv" if course_code.upper().startswith("SV") else "en"


# -- handlers ----------------------------------------------------------------------------
def register(inputs: Inputs, p: BatchRegistrationRequestV1) -> Decision:
    """A registration creates the batch; the same one again is ignored, a different one
    under the same id raises :class:`BatchConflictError`."""
    now = inputs.now
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
    state = inputs.state
    if state is not None:
        _check_same_registration(state, fresh, p)
        session = Session(inputs.profile, inputs.command, now, state)
        fired = machines.fire_batch(BatchCtx(session, registration=p), "register")
        assert isinstance(fired, machines.Refused)
        return session.finish(ignored=fired.reason)
    session = Session(inputs.profile, inputs.command, now, fresh)
    machines.fire_batch(BatchCtx(session, registration=p, fresh=fresh), "register")
    journal = session.journal
    return Decision(session.state, tuple(journal.emits), tuple(journal.moves))


def _check_same_registration(state: BatchState, fresh: BatchState, p: BatchRegistrationRequestV1) -> None:
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
    ) and (p.essay_ids is None or state.essay_ids == fresh.essay_ids)
    if not same:
        raise BatchConflictError(p.batch_id)


def _readiness(inputs: Inputs, trigger: str, items: tuple[EssayRef, ...] = ()) -> Decision:
    session = Session(inputs.profile, inputs.command, inputs.now, inputs.require_state())
    fired = machines.fire_batch(BatchCtx(session, items=items), trigger)
    if isinstance(fired, machines.Refused):
        return session.finish(ignored=fired.reason)
    return session.finish()


PROVISION_TRIGGERS = ("provision_guest", "provision_regular")
"""The two readiness paths a provisioned batch can take (content only; content, then students)."""


def provision_trigger(state: BatchState, profile: Profile) -> str:
    """The readiness path of ``state`` under ``profile``: content only for a guest batch, or
    for every batch when the profile has no student matching; else content, then students."""
    content_only = state.is_guest or profile.student_matching is None
    return PROVISION_TRIGGERS[0] if content_only else PROVISION_TRIGGERS[1]


def provisioned(inputs: Inputs, p: BatchContentProvisioningCompletedV1) -> Decision:
    """Content provisioned: a guest batch is ready at once; a batch with a class waits for
    student validation - unless the profile has no student matching, whose batches all take
    the content-only path (nothing would ever confirm their students)."""
    trigger = provision_trigger(inputs.require_state(), inputs.profile)
    return _readiness(inputs, trigger, refs(p.essays_for_processing))


def associations(inputs: Inputs, p: StudentAssociationsConfirmedV1) -> Decision:
    return _readiness(inputs, "confirm_associations")


def essays_ready(inputs: Inputs, p: BatchEssaysReady) -> Decision:
    return _readiness(inputs, "essays_ready", refs(p.ready_essays))


def validation_errors(inputs: Inputs, p: BatchValidationErrorsV1) -> Decision:
    """Critical validation errors end the batch (and its run); others change nothing."""
    state = inputs.require_state()
    if not p.error_summary.critical_failure:
        return Decision(state, ignored="non_critical_validation_errors")
    session = Session(inputs.profile, inputs.command, inputs.now, state)
    fired = machines.fire_batch(BatchCtx(session), "fail_critically")
    if isinstance(fired, machines.Refused):
        assert fired.verdict is Verdict.IGNORE
        return session.finish(ignored=fired.reason)
    return session.finish()


# -- guards --------------------------------------------------------------------------------
def items_within_limit(ctx: BatchCtx) -> str | None:
    p = ctx.registration
    assert p is not None
    limit = ctx.session.profile.max_items_per_batch
    if p.expected_essay_count > limit:
        raise ItemMismatchError(
            "too_many_items",
            batch_id=p.batch_id,
            detail=f"{p.expected_essay_count} essays, the profile allows {limit}",
        )
    return None


def _explicit_essay_ids(state: BatchState) -> frozenset[str] | None:
    """The essay ids the registration named, or ``None`` when it named none (the engine then
    derived slot ids ``derive_id(batch_id, "essay", i)``, and the content service's own ids
    are accepted: only their number is checked)."""
    ids = state.essay_ids
    if not ids or ids[0] == derive_id(state.batch_id, "essay", "0"):
        return None
    return frozenset(ids)


def items_registered(ctx: BatchCtx) -> str | None:
    """Readiness facts may only name registered items: no more than the registration's
    ``expected_essay_count``, each once, and only the registration's ``essay_ids`` when it
    named them. Raises :class:`ItemMismatchError` otherwise."""
    state = ctx.session.state
    ids = [e.essay_id for e in ctx.items]
    twice = duplicates(ids)
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
    return None


# -- effects -------------------------------------------------------------------------------
def announce_registration(ctx: BatchCtx) -> None:
    session = ctx.session
    session.journal.emit_all(session.profile.outbound.registered(session.state))


def keep_items(ctx: BatchCtx) -> None:
    ctx.session.state = evolve(ctx.session.state, essays=ctx.items)


def request_matching(ctx: BatchCtx) -> None:
    session = ctx.session
    matching = session.profile.student_matching
    if matching is None:
        return
    state = session.state
    data = {
        "batch_id": state.batch_id,
        "class_id": state.class_id,
        "essays_to_process": [wire_ref(e) for e in state.essays],
    }
    session.journal.emit_lazy(matching.topic, state.batch_id, matching.model, data)
