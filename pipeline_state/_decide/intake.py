"""Registration and readiness: the facts that bring a batch from registered to ready for
pipelines (or end it), and the item checks they pass."""

from __future__ import annotations

from pipeline_state._inputs import ContentReady, GroupConfirmed, ItemsReady, RegisterBatch, ValidationFailed
from pipeline_state._lifecycle import ITEMS_READY, BatchStatus, Verdict
from pipeline_state._model import BatchState, ItemRef, evolve
from pipeline_state._profile import Profile, command_fields
from pipeline_state.errors import BatchConflictError, ItemMismatchError

from . import machines
from .context import BatchCtx, Session
from .ids import derive_id
from .journal import Decision
from .registry import Inputs
from .run import duplicates

__all__ = [
    "PROVISION_TRIGGERS",
    "announce_registration",
    "associations",
    "items_ready",
    "items_registered",
    "items_within_limit",
    "keep_items",
    "provision_trigger",
    "provisioned",
    "register",
    "request_matching",
    "validation_errors",
]


# -- handlers ----------------------------------------------------------------------------
def register(inputs: Inputs, p: RegisterBatch) -> Decision:
    """A registration creates the batch; the same one again is ignored, a different one
    under the same id raises :class:`BatchConflictError`."""
    now = inputs.now
    kind = inputs.profile.item_kind
    # The guard checks it again on the transition; checked first so that an impossible count
    # costs nothing (the engine numbers the items of a registration that names none).
    check_registered_items(p, inputs.profile.max_items_per_batch)
    item_ids = p.item_ids or tuple(derive_id(p.batch_id, kind, str(i)) for i in range(p.expected_items))
    fresh = BatchState(
        batch_id=p.batch_id,
        status=BatchStatus.AWAITING_CONTENT_VALIDATION,
        version=1,
        owner=p.owner,
        category=p.category,
        expected_items=p.expected_items,
        item_ids=item_ids,
        created_at=now,
        updated_at=now,
        org_id=p.org_id,
        group_id=p.group_id,
        language=p.language,
        prompt_ref=p.prompt_ref,
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


def _check_same_registration(state: BatchState, fresh: BatchState, p: RegisterBatch) -> None:
    same = (
        state.owner,
        state.category,
        state.expected_items,
        state.org_id,
        state.group_id,
    ) == (
        fresh.owner,
        fresh.category,
        fresh.expected_items,
        fresh.org_id,
        fresh.group_id,
    ) and (p.item_ids is None or state.item_ids == fresh.item_ids)
    if not same:
        raise BatchConflictError(p.batch_id)


def _readiness(inputs: Inputs, trigger: str, items: tuple[ItemRef, ...] = ()) -> Decision:
    session = Session(inputs.profile, inputs.command, inputs.now, inputs.require_state())
    fired = machines.fire_batch(BatchCtx(session, items=items), trigger)
    if isinstance(fired, machines.Refused):
        return session.finish(ignored=fired.reason)
    return session.finish()


PROVISION_TRIGGERS = ("provision_guest", "provision_regular")
"""The two readiness paths a provisioned batch can take (content only; content, then group members)."""


def provision_trigger(state: BatchState, profile: Profile) -> str:
    """The readiness path of ``state`` under ``profile``: content only for a batch without a group, or
    for every batch when the profile has no group matching; else content, then members."""
    content_only = not state.has_group or profile.group_matching is None
    return PROVISION_TRIGGERS[0] if content_only else PROVISION_TRIGGERS[1]


def provisioned(inputs: Inputs, p: ContentReady) -> Decision:
    """Content provisioned: a batch without a group is ready at once; one with a group waits
    for group validation - unless the profile has no group matching, whose batches all take
    the content-only path (nothing would ever confirm their members)."""
    trigger = provision_trigger(inputs.require_state(), inputs.profile)
    return _readiness(inputs, trigger, p.items)


def associations(inputs: Inputs, p: GroupConfirmed) -> Decision:
    return _readiness(inputs, "confirm_associations")


def items_ready(inputs: Inputs, p: ItemsReady) -> Decision:
    return _readiness(inputs, ITEMS_READY, p.items)


def validation_errors(inputs: Inputs, p: ValidationFailed) -> Decision:
    """Critical validation errors end the batch (and its run); others change nothing."""
    state = inputs.require_state()
    if not p.critical:
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
    check_registered_items(p, ctx.session.profile.max_items_per_batch)
    return None


def check_registered_items(p: RegisterBatch, limit: int) -> None:
    """A registration's items must be possible: a whole number of them from 1 to the
    profile's ``limit``, and when it names them, as many distinct ids (strings) as it counts.
    Raises :class:`ItemMismatchError` otherwise (a batch that could never be provisioned is
    not created)."""
    count = p.expected_items
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ItemMismatchError(
            "too_few_items", batch_id=p.batch_id, detail=f"expected_items must be at least 1, got {count!r}"
        )
    if count > limit:
        raise ItemMismatchError(
            "too_many_items", batch_id=p.batch_id, detail=f"{count} items, the profile allows {limit}"
        )
    ids = p.item_ids
    if ids is None:
        return
    if not isinstance(ids, tuple) or not all(isinstance(i, str) and i for i in ids):
        raise ItemMismatchError(
            "bad_item_ids",
            batch_id=p.batch_id,
            detail=f"item_ids must be a tuple of non-empty strings, got {type(ids).__name__}",
        )
    twice = duplicates(ids)
    if twice:
        raise ItemMismatchError("duplicate_items", batch_id=p.batch_id, ids=twice)
    if len(ids) != count:
        raise ItemMismatchError(
            "item_count_mismatch",
            batch_id=p.batch_id,
            detail=f"{len(ids)} item ids for {count} expected items",
        )


def _explicit_item_ids(state: BatchState, kind: str) -> frozenset[str] | None:
    """The item ids the registration named, or ``None`` when it named none (the engine then
    derived slot ids ``derive_id(batch_id, kind, i)``, and the content service's own ids
    are accepted: only their number is checked)."""
    ids = state.item_ids
    if not ids or ids[0] == derive_id(state.batch_id, kind, "0"):
        return None
    return frozenset(ids)


def items_registered(ctx: BatchCtx) -> str | None:
    """Readiness facts may only name registered items: no more than the registration's
    ``expected_items``, each once, and only the registration's ``item_ids`` when it
    named them. Raises :class:`ItemMismatchError` otherwise."""
    state = ctx.session.state
    ids = [e.item_id for e in ctx.items]
    twice = duplicates(ids)
    if twice:
        raise ItemMismatchError("duplicate_items", batch_id=state.batch_id, ids=twice)
    if len(ids) > state.expected_items:
        raise ItemMismatchError(
            "too_many_items",
            batch_id=state.batch_id,
            detail=f"{len(ids)} items named, {state.expected_items} registered",
        )
    registered = _explicit_item_ids(state, ctx.session.profile.item_kind)
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
    ctx.session.state = evolve(ctx.session.state, items=ctx.items)


def request_matching(ctx: BatchCtx) -> None:
    session = ctx.session
    matching = session.profile.group_matching
    if matching is None:
        return
    state = session.state
    names = command_fields(matching.model)
    data = {
        names.batch_id: state.batch_id,
        names.group_id: state.group_id,
        names.items: [names.item(e) for e in state.items],
    }
    session.journal.emit_lazy(matching.topic, state.batch_id, matching.model, data)
