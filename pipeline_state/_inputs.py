"""The engine's inputs: what an inbound message means to the engine, whatever its wire.

A profile's :class:`~pipeline_state._inbound.Inbound` turns each message it consumes into one
of these plain values, and :func:`~pipeline_state._decide.decide` decides on them: the
engine never reads a wire model. Each input names the batch it is about; items are
referred to by :class:`~pipeline_state._model.ItemRef` (an item id and where its content
is stored) or by id.

=====================  ==============================================================
input                  what it asks of the engine
=====================  ==============================================================
:class:`RegisterBatch` create the batch (the same registration again is ignored)
:class:`ContentReady`  the items' content is stored: the batch takes its readiness path
:class:`GroupConfirmed` the batch's group (for example its owners' roster) is confirmed
:class:`ItemsReady`    the items that passed validation: the batch becomes ready
:class:`ValidationFailed` validation of the content failed (critically or not)
:class:`RequestPipeline` run a pipeline on the batch
:class:`PhaseOutcome`  a phase ended for the items it was sent
=====================  ==============================================================

Operator commands (cancel, retry, expire, archive) are in :mod:`pipeline_state._commands`.
"""

from __future__ import annotations

from typing import Any, Literal

import attrs

from ._model import ItemRef

__all__ = [
    "ContentReady",
    "EngineInput",
    "GroupConfirmed",
    "ItemsReady",
    "OutcomeStatus",
    "PhaseOutcome",
    "RegisterBatch",
    "RequestPipeline",
    "ValidationFailed",
]

OutcomeStatus = Literal["completed_successfully", "completed_with_failures", "failed_critically"]
"""How a phase ended: every item succeeded, some failed, or the phase itself failed."""


@attrs.frozen(slots=True)
class RegisterBatch:
    """Create a batch of ``expected_items`` items owned by ``owner``.

    ``item_ids`` names the items when the registration does (then only those items may be
    provisioned); ``None`` lets the engine number them and accept the content service's
    ids. ``group_id`` is the group whose members the items belong to, when the batch has
    one (a batch with a group takes the two-step readiness path if the profile matches
    items to members). The other fields are descriptive values the profile's commands carry.
    """

    batch_id: str
    owner: str
    expected_items: int
    item_ids: tuple[str, ...] | None
    category: str
    language: str
    org_id: str | None = None
    group_id: str | None = None
    prompt_ref: str | None = None


@attrs.frozen(slots=True)
class ContentReady:
    """The content of ``items`` is stored and can be processed."""

    batch_id: str
    items: tuple[ItemRef, ...]


@attrs.frozen(slots=True)
class GroupConfirmed:
    """The items were matched to the members of the batch's group ``group_id``."""

    batch_id: str
    group_id: str


@attrs.frozen(slots=True)
class ItemsReady:
    """``items`` passed validation: the batch is ready for pipelines."""

    batch_id: str
    items: tuple[ItemRef, ...]


@attrs.frozen(slots=True)
class ValidationFailed:
    """Validation of the batch's content reported errors; ``critical`` ones end the batch."""

    batch_id: str
    critical: bool


@attrs.frozen(slots=True)
class RequestPipeline:
    """Run ``pipeline`` on the batch for ``requested_by``.

    ``prompt`` is what the request carries for the phases (kept on the run as given);
    ``is_retry`` and ``retry_reason`` say that the requester re-runs an earlier request.
    """

    batch_id: str
    pipeline: str
    requested_by: str
    is_retry: bool = False
    retry_reason: str | None = None
    prompt: dict[str, Any] | None = None


@attrs.frozen(slots=True)
class PhaseOutcome:
    """``phase`` ended with ``status`` for the run of ``correlation_id``: ``processed`` are
    the items it produced (with their output refs), ``failed`` the ids of the items it failed."""

    batch_id: str
    phase: str
    status: OutcomeStatus
    processed: tuple[ItemRef, ...]
    failed: tuple[str, ...]
    correlation_id: str


EngineInput = (
    RegisterBatch
    | ContentReady
    | GroupConfirmed
    | ItemsReady
    | ValidationFailed
    | RequestPipeline
    | PhaseOutcome
)
"""Every input an inbound message can carry to the engine."""
