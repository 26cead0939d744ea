"""Request and response bodies of the HTTP API (pydantic models, shown in the OpenAPI schema).

Response models are also the client's typed results. Request bodies ignore unknown fields,
like the wire models they mirror.
"""

from __future__ import annotations

import functools
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, create_model

from pipeline_state import ViewNames
from pipeline_state._wire import FreeText
from pipeline_state.profiles.huleedu.events import MAX_ESSAYS_PER_BATCH, BatchRegistrationRequestV1
from pipeline_state.profiles.huleedu.profile import HULEEDU_VIEW_NAMES

from .ids import BatchIdField, IdField, MaybeEmptyIdField

__all__ = [
    "MAX_ESSAYS_PER_BATCH",
    "ActiveRunView",
    "AdmissionView",
    "AnalysisSummary",
    "BatchSnapshot",
    "CancelAccepted",
    "CancelBody",
    "DefineRequest",
    "DefineResponse",
    "DenialBody",
    "ErrorBody",
    "Health",
    "HistoryPage",
    "PhaseCompletionBody",
    "PhaseRecorded",
    "PipelineAccepted",
    "PipelineRequestBody",
    "PreflightBody",
    "PreflightResult",
    "RegisterAccepted",
    "RegistrationBody",
    "RetryPhaseBody",
    "RunView",
    "batch_snapshot_model",
]


NO_NUL = r"^[^\x00]*$"
"""Free text (reasons) may hold line breaks but never a NUL, which PostgreSQL refuses."""


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class _Answer(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


# --- requests ---------------------------------------------------------------------------


class RegistrationBody(BatchRegistrationRequestV1):
    """The body of a registration: ``BatchRegistrationRequestV1``, whose sizes are bounded by
    ``MAX_ESSAYS_PER_BATCH`` so one small request cannot make the server build huge lists;
    its batch id has no ``/`` (:data:`~pipeline_state_http.ids.BATCH_ID_PATTERN`)."""

    batch_id: BatchIdField


class PipelineRequestBody(_Body):
    """A pipeline request; the fields of ``ClientBatchPipelineRequestV1``. ``batch_id`` may be
    left out (the path names the batch) and must match the path when given."""

    batch_id: BatchIdField | None = None
    requested_pipeline: IdField
    client_correlation_id: UUID | None = None
    user_id: IdField
    is_retry: bool = False
    retry_reason: FreeText | None = None  # the wire message's bound, as over Kafka
    prompt_payload: dict[str, Any] | None = None


class PreflightBody(_Body):
    """Who would ask (``user_id`` defaults to the batch's owner) and with which prompt."""

    user_id: IdField | None = None
    prompt_payload: dict[str, Any] | None = None


class CancelBody(_Body):
    """Who cancels, why and, with ``run_id``, which run: the run the caller saw. When another
    run is active by the time the cancel is decided, it is refused (400 ``bad_command``;
    409 ``illegal_transition`` when none is), never applied to a run the caller did not name."""

    user_id: MaybeEmptyIdField | None = None
    reason: str | None = Field(default=None, max_length=2000, pattern=NO_NUL)
    run_id: IdField | None = None


class RetryPhaseBody(_Body):
    """Which phase to run again, who asks and why. With ``after_runs``, the number of
    archived runs the caller saw: when the batch has archived another since, the retry is
    refused (400 ``bad_command``), so a retry meant after one run is never applied after a
    different one."""

    phase_name: IdField
    user_id: IdField
    retry_reason: str | None = Field(default=None, max_length=2000, pattern=NO_NUL)
    after_runs: int | None = Field(default=None, ge=0, le=2**31 - 1)


class DefineRequest(_Body):
    """The original conductor's question: which phases should this request run?"""

    batch_id: BatchIdField
    requested_pipeline: IdField
    correlation_id: UUID
    batch_metadata: dict[str, Any] | None = None


class PhaseCompletionBody(_Body):
    batch_id: BatchIdField
    phase_name: IdField
    success: bool


# --- answers ----------------------------------------------------------------------------


class RegisterAccepted(_Answer):
    batch_id: str
    correlation_id: str
    status: str = Field(
        description="the lifecycle status the registration gave the batch (its first, the same "
        "for a replay); early facts it let apply may have moved the batch on: read the batch "
        "for its status now. A registration of a batch already registered: its status when answered"
    )


class PipelineAccepted(_Answer):
    status: Literal["accepted"] = "accepted"
    run_id: str
    resolved_pipeline: list[str] = Field(description="the phases the run will execute, in plan order")
    skipped_phases: list[str] = Field(description="phases pruned because an earlier run completed them")
    correlation_id: str


class PreflightResult(_Answer):
    allowed: Literal[True] = True
    resolved_pipeline: list[str]
    skipped_phases: list[str]


class CancelAccepted(_Answer):
    status: Literal["cancelled"] = "cancelled"
    run_id: str
    correlation_id: str


class DenialBody(_Answer):
    """Why a pipeline request was refused; nothing changed."""

    denial_reason: str
    detail: str


class ErrorBody(_Answer):
    """Any other error: a stable machine code, a message, and the offending field or context."""

    error: str
    detail: str
    field: str | None = None
    context: dict[str, str | None] | None = None


class ActiveRunView(_Answer):
    run_id: str
    pipeline_name: str
    correlation_id: str
    phases: dict[str, str]
    skipped_phases: list[str]
    accepted_at: str


class RunView(_Answer):
    run_id: str
    pipeline_name: str
    correlation_id: str
    final_status: str
    completed_phases: list[str]
    skipped_phases: list[str]
    phases: dict[str, str]
    accepted_at: str
    completed_at: str | None
    is_retry: bool


class BatchSnapshot(_Answer):
    """The batch as :func:`pipeline_state._snapshot.snapshot` shows it (history oldest first)."""

    batch_id: str
    status: str
    version: int
    user_id: str
    class_id: str | None
    essay_count: int
    active_run: ActiveRunView | None
    history: list[RunView]


def batch_snapshot_model(names: ViewNames) -> type[_Answer]:
    """The response model of a batch's view under a profile's ``names``
    (:attr:`~pipeline_state.Profile.view_names`): :class:`BatchSnapshot` for the shipped
    profile's names, else a model of the same shape whose owner, group and item-count keys
    are the profile's (named ``BatchSnapshot`` too, so the API's schema reads the same)."""
    if names == HULEEDU_VIEW_NAMES:
        return BatchSnapshot
    return _profile_snapshot(names)


@functools.cache
def _profile_snapshot(names: ViewNames) -> type[_Answer]:
    # The keys are the profile's, which need not be Python names: each is an alias of a
    # field of the engine's name. In BatchSnapshot's order, so both schemas read alike.
    fields: dict[str, Any] = {
        "batch_id": (str, ...),
        "status": (str, ...),
        "version": (int, ...),
        "owner": (str, Field(alias=names.owner, description="the batch's owner")),
        "group_id": (str | None, Field(alias=names.group_id, description="the batch's group, if any")),
        "items": (int, Field(alias=names.items, description="how many items the batch holds")),
        "active_run": (ActiveRunView | None, ...),
        "history": (list[RunView], ...),
    }
    return create_model(
        "BatchSnapshot",
        __base__=_Answer,
        __doc__=BatchSnapshot.__doc__,
        __module__=__name__,
        **fields,
    )


class HistoryPage(_Answer):
    """Archived runs, newest first."""

    batch_id: str
    total: int
    limit: int
    offset: int
    items: list[RunView]


class AdmissionView(_Answer):
    allowed: bool
    denial_reason: str | None = None
    detail: str | None = None


class AnalysisSummary(_Answer):
    requested_pipeline: str
    pipeline_steps: list[str] = Field(description="every step of the pipeline, in plan order")
    pruned_phases: list[str] = Field(description="steps an earlier run completed")
    completed_phases: list[str] = Field(description="every phase completed by an earlier run")
    batch_status: str
    active_run_id: str | None
    admission: AdmissionView = Field(description="what a pipeline request would get now")
    correlation_id: str


class DefineResponse(_Answer):
    batch_id: str
    final_pipeline: list[str]
    analysis_summary: AnalysisSummary


class PhaseRecorded(_Answer):
    status: Literal["recorded"] = "recorded"
    outcome: str = Field(description="'applied', or 'ignored:<reason>' when it changed nothing")
    run_id: str | None = None


class Health(_Answer):
    status: Literal["ok", "unavailable"]
    detail: str | None = None
