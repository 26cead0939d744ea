"""The HuleEdu wire contract: pydantic models of every payload and the topic registry.

Every Kafka message value is a JSON :class:`~pipeline_state._wire.EventEnvelope` whose
``data`` holds one of the payload models below. Unknown extra fields are ignored on input.
:func:`parse_message` turns raw bytes, text or a mapping into a validated envelope and payload, raising
:class:`~pipeline_state.errors.InvalidMessageError` that names the topic and the field.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal
from uuid import UUID

from pydantic import (
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from pipeline_state import _wire as wire
from pipeline_state._intake import DEFAULT_LIMITS, IntakeLimits
from pipeline_state._profile import CommandFields
from pipeline_state._wire import (
    ID_ADAPTER,
    MAX_FREE_TEXT_LENGTH,
    MAX_ID_LENGTH,
    MAX_ITEM_ID_LENGTH,
    MAX_ITEMS_PER_BATCH,
    MAX_SHORT_TEXT_LENGTH,
    EventEnvelope,
    FreeText,
    Id,
    ItemId,
    ShortText,
    TopicSpec,
    WireModel,
    aware_utc,
)
from pipeline_state.errors import UnknownTopicError

MAX_REPORTED_COUNT = 1_000_000
"""The most essays a completion reports in one count: far above what a batch may hold now
(:data:`MAX_ITEMS_PER_BATCH`), room for states stored before that bound (tens of thousands),
and small enough that no store's integer column overflows summing a class's batches."""

ItemCount = Annotated[int, Field(ge=0, le=MAX_REPORTED_COUNT)]
"""How many essays of one batch a completion reports: never negative, never absurd."""
Duration = Annotated[float, Field(allow_inf_nan=False)]
"""Seconds between two clock readings (negative when the clock stepped back), always finite."""

__all__ = [
    "HULEEDU_COMMAND_FIELDS",
    "INBOUND_TOPICS",
    "MAX_ESSAYS_PER_BATCH",
    "MAX_FREE_TEXT_LENGTH",
    "MAX_ID_LENGTH",
    "MAX_ITEM_ID_LENGTH",
    "MAX_PROMPT_PAYLOAD_BYTES",
    "MAX_PROMPT_PAYLOAD_DEPTH",
    "MAX_SHORT_TEXT_LENGTH",
    "OUTBOUND_TOPICS",
    "TOPICS",
    "AIFeedbackInitiateCommandV1",
    "BatchContentProvisioningCompletedV1",
    "BatchEssaysReady",
    "BatchEssaysRegistered",
    "BatchPipelineCompletedV1",
    "BatchRegistrationRequestV1",
    "BatchResultsReadyV1",
    "BatchValidationErrorsV1",
    "CJAssessmentInitiateCommandV1",
    "ClientBatchPipelineRequestV1",
    "CompletionMetadata",
    "ELSBatchPhaseOutcomeV1",
    "EssayProcessingInputRefV1",
    "EventEnvelope",
    "HuleEduBatchStatus",
    "Id",
    "ItemId",
    "NlpInitiateCommandV2",
    "PhaseInitiateCommand",
    "PhaseResult",
    "PhaseSkippedV1",
    "PipelineDeniedV1",
    "SpellcheckInitiateCommandV1",
    "StudentAssociation",
    "StudentAssociationsConfirmedV1",
    "StudentMatchingInitiateCommandV1",
    "TeacherNotificationRequestedV1",
    "Topic",
    "TopicSpec",
    "ValidationErrorSummary",
    "WireModel",
    "parse_message",
    "parse_payload",
]


NonEmpty = Field(min_length=1)

# --- bounds of HuleEdu input (the generic ones are in pipeline_state._wire) ---------------

MAX_ESSAYS_PER_BATCH = MAX_ITEMS_PER_BATCH
"""Upper bound on a batch's essays (and on every inbound list of essays)."""

MAX_PROMPT_PAYLOAD_BYTES = 64 * 1024
"""Upper bound on a pipeline request's ``prompt_payload``, as compact UTF-8 JSON."""

MAX_PROMPT_PAYLOAD_DEPTH = 8
"""Upper bound on the nesting of a pipeline request's ``prompt_payload`` (the object itself
is depth 1)."""


def _json_depth(value: Any, limit: int) -> int:
    """Nesting depth of a JSON value (scalars 0, a container 1 + its deepest member);
    stops counting past ``limit``."""
    if isinstance(value, dict):
        children: Any = value.values()
    elif isinstance(value, list):
        children = value
    else:
        return 0
    if limit <= 0:
        return 1
    return 1 + max((_json_depth(child, limit - 1) for child in children), default=0)


class Topic(StrEnum):
    """Every topic of the HuleEdu profile."""

    BATCH_REGISTER = "huleedu.commands.batch.register.v1"
    CONTENT_PROVISIONED = "huleedu.batch.content.provisioning.completed.v1"
    ASSOCIATIONS_CONFIRMED = "huleedu.class.student.associations.confirmed.v1"
    ESSAYS_READY = "huleedu.els.batch.essays.ready.v1"
    VALIDATION_ERRORS = "huleedu.els.batch.validation.errors.v1"
    PIPELINE_REQUEST = "huleedu.commands.batch.pipeline.v1"
    PHASE_OUTCOME = "huleedu.els.batch.phase.outcome.v1"
    ESSAYS_REGISTERED = "huleedu.batch.essays.registered.v1"
    STUDENT_MATCHING = "huleedu.batch.student.matching.initiate.command.v1"
    SPELLCHECK = "huleedu.els.spellcheck.initiate.command.v1"
    CJ_ASSESSMENT = "huleedu.batch.cj_assessment.initiate.command.v1"
    NLP = "huleedu.batch.nlp.initiate.command.v2"
    AI_FEEDBACK = "huleedu.batch.ai_feedback.initiate.command.v1"
    PHASE_SKIPPED = "huleedu.batch.phase.skipped.v1"
    PIPELINE_DENIED = "huleedu.pipeline.denied.v1"
    PIPELINE_COMPLETED = "huleedu.batch.pipeline.completed.v1"
    TEACHER_NOTIFICATION = "huleedu.notification.teacher.requested.v1"
    RESULTS_READY = "huleedu.ras.batch.results.ready.v1"


class HuleEduBatchStatus(StrEnum):
    """The batch statuses of the HuleEdu wire (its ``BatchStatus``): the engine's states
    under the profile's names (:data:`~pipeline_state.profiles.huleedu.profile.HULEEDU_STATE_NAMES`)
    and five values its older services still send, which must parse although no transition
    of the engine enters them."""

    AWAITING_CONTENT_VALIDATION = "awaiting_content_validation"
    AWAITING_STUDENT_VALIDATION = "awaiting_student_validation"
    STUDENT_VALIDATION_COMPLETED = "student_validation_completed"
    READY_FOR_PIPELINE_EXECUTION = "ready_for_pipeline_execution"
    PROCESSING_PIPELINES = "processing_pipelines"
    FAILED_CRITICALLY = "failed_critically"
    CANCELLED = "cancelled"
    ARCHIVED = "archived"
    # Legacy values: parse, but no engine state has them.
    CONTENT_INGESTION_FAILED = "content_ingestion_failed"
    AWAITING_PIPELINE_CONFIGURATION = "awaiting_pipeline_configuration"
    VALIDATION_TIMEOUT_PROCESSED = "validation_timeout_processed"
    COMPLETED_SUCCESSFULLY = "completed_successfully"
    COMPLETED_WITH_FAILURES = "completed_with_failures"


class EssayProcessingInputRefV1(WireModel):
    """One essay and where its text is stored."""

    essay_id: ItemId
    text_storage_id: ItemId | None = None


# --- inbound ---------------------------------------------------------------------------


class BatchRegistrationRequestV1(WireModel):
    batch_id: Id
    expected_essay_count: int = Field(ge=1, le=MAX_ESSAYS_PER_BATCH)
    essay_ids: list[ItemId] | None = Field(default=None, max_length=MAX_ESSAYS_PER_BATCH)
    user_id: Id
    org_id: Id | None = None
    class_id: Id | None = None
    course_code: ShortText = NonEmpty
    language: ShortText | None = None
    essay_instructions: FreeText | None = None
    student_prompt_ref: Id | None = None

    @model_validator(mode="after")
    def _essay_ids_match_count(self) -> BatchRegistrationRequestV1:
        if self.essay_ids is not None:
            if len(self.essay_ids) != self.expected_essay_count:
                raise ValueError("essay_ids must have expected_essay_count entries")
            if len(set(self.essay_ids)) != len(self.essay_ids):
                raise ValueError("essay_ids must be unique")
        return self


class BatchContentProvisioningCompletedV1(WireModel):
    batch_id: Id
    provisioned_count: int = Field(ge=0, le=MAX_ESSAYS_PER_BATCH)
    expected_count: int = Field(ge=0, le=MAX_ESSAYS_PER_BATCH)
    essays_for_processing: list[EssayProcessingInputRefV1] = Field(max_length=MAX_ESSAYS_PER_BATCH)


class StudentAssociation(WireModel):
    essay_id: ItemId
    student_id: Id | None = None


class StudentAssociationsConfirmedV1(WireModel):
    batch_id: Id
    class_id: Id
    associations: list[StudentAssociation] = Field(default=[], max_length=MAX_ESSAYS_PER_BATCH)
    timeout_triggered: bool = False


class BatchEssaysReady(WireModel):
    batch_id: Id
    ready_essays: list[EssayProcessingInputRefV1] = Field(max_length=MAX_ESSAYS_PER_BATCH)


class ValidationErrorSummary(WireModel):
    total_errors: int = Field(default=0, ge=0)
    critical_failure: bool


class BatchValidationErrorsV1(WireModel):
    batch_id: Id
    error_summary: ValidationErrorSummary


PROMPT_REF_KEYS = ("prompt_ref", "assignment_id")
"""Keys of ``prompt_payload`` whose value the engine keeps as the batch's prompt reference:
each must be an :data:`Id` (it is stored, and ends up in an id-sized column)."""


class ClientBatchPipelineRequestV1(WireModel):
    batch_id: Id
    requested_pipeline: Id
    client_correlation_id: UUID | None = None
    user_id: Id
    is_retry: bool = False
    retry_reason: FreeText | None = None
    prompt_payload: dict[str, Any] | None = None

    @field_validator("prompt_payload")
    @classmethod
    def _bounded_prompt(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is None:
            return None
        if _json_depth(value, MAX_PROMPT_PAYLOAD_DEPTH) > MAX_PROMPT_PAYLOAD_DEPTH:
            raise ValueError(f"prompt_payload is nested deeper than {MAX_PROMPT_PAYLOAD_DEPTH} levels")
        try:
            size = len(json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode())
        except (TypeError, ValueError, UnicodeEncodeError) as exc:
            raise ValueError(f"prompt_payload is not encodable JSON: {type(exc).__name__}") from None
        if size > MAX_PROMPT_PAYLOAD_BYTES:
            raise ValueError(f"prompt_payload takes {size} bytes, more than {MAX_PROMPT_PAYLOAD_BYTES}")
        for key in PROMPT_REF_KEYS:
            ref = value.get(key)
            if ref is not None:
                try:
                    ID_ADAPTER.validate_python(ref)
                except ValidationError:
                    raise ValueError(
                        f"prompt_payload.{key} must be an id: a string of 1 to {MAX_ID_LENGTH} "
                        "characters without control characters"
                    ) from None
        return value


class ELSBatchPhaseOutcomeV1(WireModel):
    batch_id: Id
    phase_name: Id
    phase_status: Literal["completed_successfully", "completed_with_failures", "failed_critically"]
    processed_essays: list[EssayProcessingInputRefV1] = Field(default=[], max_length=MAX_ESSAYS_PER_BATCH)
    failed_essay_ids: list[ItemId] = Field(default=[], max_length=MAX_ESSAYS_PER_BATCH)
    correlation_id: UUID


# --- outbound --------------------------------------------------------------------------


class BatchEssaysRegistered(WireModel):
    entity_id: str
    expected_essay_count: ItemCount
    essay_ids: list[str]
    user_id: str
    org_id: str | None = None
    class_id: str | None = None
    course_code: str


HULEEDU_COMMAND_FIELDS = CommandFields(
    items="essays_to_process",
    item_id="essay_id",
    content_ref="text_storage_id",
    category="course_code",
    group_id="class_id",
)
"""The names the engine fills HuleEdu's commands under (their models declare them)."""


class PhaseInitiateCommand(WireModel):
    """Base of the commands that start a processing phase."""

    command_fields: ClassVar[CommandFields] = HULEEDU_COMMAND_FIELDS

    batch_id: str
    essays_to_process: list[EssayProcessingInputRefV1]


class StudentMatchingInitiateCommandV1(PhaseInitiateCommand):
    class_id: str


class SpellcheckInitiateCommandV1(PhaseInitiateCommand):
    language: str


class CJAssessmentInitiateCommandV1(PhaseInitiateCommand):
    language: str
    course_code: str


class NlpInitiateCommandV2(PhaseInitiateCommand):
    language: str


class AIFeedbackInitiateCommandV1(PhaseInitiateCommand):
    language: str
    course_code: str


class PhaseSkippedV1(WireModel):
    batch_id: str
    phase_name: str
    skip_reason: str
    correlation_id: str
    run_id: str | None = None


class PipelineDeniedV1(WireModel):
    batch_id: str
    user_id: str
    requested_pipeline: str
    denial_reason: str
    detail: str | None = None


class PhaseResult(WireModel):
    status: ShortText
    successful: ItemCount
    failed: ItemCount
    duration_seconds: Duration


class CompletionMetadata(WireModel):
    entity_id: str
    entity_type: Literal["batch"] = "batch"
    timestamp: datetime

    @field_validator("timestamp")
    @classmethod
    def _aware_utc(cls, value: datetime) -> datetime:
        return aware_utc(value, "timestamp")


class BatchPipelineCompletedV1(WireModel):
    batch_id: str
    pipeline_name: str
    run_id: str
    completed_phases: list[str]
    skipped_phases: list[str]
    final_status: ShortText
    processing_duration_seconds: Duration
    successful_essay_count: ItemCount
    failed_essay_count: ItemCount
    phase_results: dict[str, PhaseResult]
    correlation_id: str
    metadata: CompletionMetadata


class TeacherNotificationRequestedV1(WireModel):
    teacher_id: str
    notification_type: str
    category: str
    priority: Literal["low", "standard", "high", "immediate"]
    payload: dict[str, Any]
    action_required: bool
    correlation_id: str
    batch_id: str | None = None


class BatchResultsReadyV1(WireModel):
    batch_id: str
    user_id: str
    total_essays: int
    completed_essays: int
    phase_results: dict[str, PhaseResult]
    overall_status: str
    processing_duration_seconds: float


# --- envelope and registry -------------------------------------------------------------


def _spec(topic: Topic, model: type[WireModel], direction: Literal["in", "out"], key: str) -> TopicSpec:
    return TopicSpec(topic.value, model, direction, key)


TOPICS: Mapping[str, TopicSpec] = {
    spec.topic: spec
    for spec in (
        _spec(Topic.BATCH_REGISTER, BatchRegistrationRequestV1, "in", "batch_id"),
        _spec(Topic.CONTENT_PROVISIONED, BatchContentProvisioningCompletedV1, "in", "batch_id"),
        _spec(Topic.ASSOCIATIONS_CONFIRMED, StudentAssociationsConfirmedV1, "in", "batch_id"),
        _spec(Topic.ESSAYS_READY, BatchEssaysReady, "in", "batch_id"),
        _spec(Topic.VALIDATION_ERRORS, BatchValidationErrorsV1, "in", "batch_id"),
        _spec(Topic.PIPELINE_REQUEST, ClientBatchPipelineRequestV1, "in", "batch_id"),
        _spec(Topic.PHASE_OUTCOME, ELSBatchPhaseOutcomeV1, "in", "batch_id"),
        _spec(Topic.ESSAYS_REGISTERED, BatchEssaysRegistered, "out", "entity_id"),
        _spec(Topic.STUDENT_MATCHING, StudentMatchingInitiateCommandV1, "out", "batch_id"),
        _spec(Topic.SPELLCHECK, SpellcheckInitiateCommandV1, "out", "batch_id"),
        _spec(Topic.CJ_ASSESSMENT, CJAssessmentInitiateCommandV1, "out", "batch_id"),
        _spec(Topic.NLP, NlpInitiateCommandV2, "out", "batch_id"),
        _spec(Topic.AI_FEEDBACK, AIFeedbackInitiateCommandV1, "out", "batch_id"),
        _spec(Topic.PHASE_SKIPPED, PhaseSkippedV1, "out", "batch_id"),
        _spec(Topic.PIPELINE_DENIED, PipelineDeniedV1, "out", "batch_id"),
        _spec(Topic.PIPELINE_COMPLETED, BatchPipelineCompletedV1, "out", "batch_id"),
        _spec(Topic.TEACHER_NOTIFICATION, TeacherNotificationRequestedV1, "out", "teacher_id"),
        _spec(Topic.RESULTS_READY, BatchResultsReadyV1, "out", "batch_id"),
    )
}
INBOUND_TOPICS: tuple[str, ...] = tuple(t for t, s in TOPICS.items() if s.direction == "in")
OUTBOUND_TOPICS: tuple[str, ...] = tuple(t for t, s in TOPICS.items() if s.direction == "out")


def parse_message(
    topic: str,
    raw: bytes | bytearray | str | Mapping[str, Any],
    *,
    topics: Mapping[str, TopicSpec] = TOPICS,
    inbound_only: bool = True,
    limits: IntakeLimits = DEFAULT_LIMITS,
) -> tuple[EventEnvelope, WireModel]:
    """:func:`pipeline_state._wire.parse_message` on the HuleEdu topics unless ``topics`` is given."""
    return wire.parse_message(topic, raw, topics=topics, inbound_only=inbound_only, limits=limits)


def parse_payload(topic: str, data: Mapping[str, Any], *, model: type[WireModel] | None = None) -> WireModel:
    """Validate ``data`` against the payload model of the HuleEdu ``topic`` (or ``model``)."""
    if model is None:
        spec = TOPICS.get(topic)
        if spec is None:
            raise UnknownTopicError(topic)
        model = spec.model
    return wire.parse_payload(topic, data, model=model)
