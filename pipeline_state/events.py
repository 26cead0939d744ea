"""Wire contract: pydantic models of every event, the envelope and the topic registry.

Every Kafka message value is a JSON :class:`EventEnvelope` whose ``data`` holds one of the
payload models below. Unknown extra fields are ignored on input. :func:`parse_message`
turns raw bytes, text or a mapping into a validated envelope and payload, raising
:class:`~pipeline_state.errors.InvalidMessageError` that names the topic and the field.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal
from uuid import UUID

import attrs
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import InvalidMessageError, UnknownTopicError
from .intake import DEFAULT_LIMITS, IntakeLimits, decode_json

__all__ = [
    "INBOUND_TOPICS",
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


class WireModel(BaseModel):
    """Base of every payload: immutable, ignores unknown fields."""

    model_config = ConfigDict(extra="ignore", frozen=True, str_strip_whitespace=False)


NonEmpty = Field(min_length=1)

MAX_ESSAYS_PER_BATCH = 10_000
"""Upper bound on a batch's essays: a registration above it is invalid input, so one message
cannot make the service build an unbounded list of essay ids."""


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


class EssayProcessingInputRefV1(WireModel):
    """One essay and where its text is stored."""

    essay_id: str = NonEmpty
    text_storage_id: str | None = None


# --- inbound ---------------------------------------------------------------------------


class BatchRegistrationRequestV1(WireModel):
    batch_id: str = NonEmpty
    expected_essay_count: int = Field(ge=1, le=MAX_ESSAYS_PER_BATCH)
    essay_ids: list[str] | None = Field(default=None, max_length=MAX_ESSAYS_PER_BATCH)
    user_id: str = NonEmpty
    org_id: str | None = None
    class_id: str | None = None
    course_code: str = NonEmpty
    language: str | None = None
    essay_instructions: str | None = None
    student_prompt_ref: str | None = None

    @model_validator(mode="after")
    def _essay_ids_match_count(self) -> BatchRegistrationRequestV1:
        if self.essay_ids is not None:
            if len(self.essay_ids) != self.expected_essay_count:
                raise ValueError("essay_ids must have expected_essay_count entries")
            if len(set(self.essay_ids)) != len(self.essay_ids):
                raise ValueError("essay_ids must be unique")
        return self


class BatchContentProvisioningCompletedV1(WireModel):
    batch_id: str = NonEmpty
    provisioned_count: int = Field(ge=0)
    expected_count: int = Field(ge=0)
    essays_for_processing: list[EssayProcessingInputRefV1]


class StudentAssociation(WireModel):
    essay_id: str = NonEmpty
    student_id: str | None = None


class StudentAssociationsConfirmedV1(WireModel):
    batch_id: str = NonEmpty
    class_id: str = NonEmpty
    associations: list[StudentAssociation] = []
    timeout_triggered: bool = False


class BatchEssaysReady(WireModel):
    batch_id: str = NonEmpty
    ready_essays: list[EssayProcessingInputRefV1]


class ValidationErrorSummary(WireModel):
    total_errors: int = 0
    critical_failure: bool


class BatchValidationErrorsV1(WireModel):
    batch_id: str = NonEmpty
    error_summary: ValidationErrorSummary


class ClientBatchPipelineRequestV1(WireModel):
    batch_id: str = NonEmpty
    requested_pipeline: str = NonEmpty
    client_correlation_id: UUID | None = None
    user_id: str = NonEmpty
    is_retry: bool = False
    retry_reason: str | None = None
    prompt_payload: dict[str, Any] | None = None


class ELSBatchPhaseOutcomeV1(WireModel):
    batch_id: str = NonEmpty
    phase_name: str = NonEmpty
    phase_status: Literal["completed_successfully", "completed_with_failures", "failed_critically"]
    processed_essays: list[EssayProcessingInputRefV1] = []
    failed_essay_ids: list[str] = []
    correlation_id: UUID


# --- outbound --------------------------------------------------------------------------


class BatchEssaysRegistered(WireModel):
    entity_id: str
    expected_essay_count: int
    essay_ids: list[str]
    user_id: str
    org_id: str | None = None
    class_id: str | None = None
    course_code: str


class PhaseInitiateCommand(WireModel):
    """Base of the commands that start a processing phase."""

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
    status: str
    successful: int
    failed: int
    duration_seconds: float


class CompletionMetadata(WireModel):
    entity_id: str
    entity_type: Literal["batch"] = "batch"
    timestamp: datetime


class BatchPipelineCompletedV1(WireModel):
    batch_id: str
    pipeline_name: str
    run_id: str
    completed_phases: list[str]
    skipped_phases: list[str]
    final_status: str
    processing_duration_seconds: float
    successful_essay_count: int
    failed_essay_count: int
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


class EventEnvelope(WireModel):
    """The JSON value of every message."""

    event_id: UUID
    event_type: str = NonEmpty
    event_timestamp: datetime
    source_service: str = NonEmpty
    schema_version: int = 1
    correlation_id: UUID
    data: dict[str, Any]
    metadata: dict[str, Any] | None = None

    @field_validator("event_timestamp")
    @classmethod
    def _aware_utc(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


@attrs.frozen
class TopicSpec:
    """What travels on a topic: its payload model, direction and the field used as key."""

    topic: str
    model: type[WireModel]
    direction: Literal["in", "out"]
    key_field: str


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


def _first_error(topic: str, exc: ValidationError, prefix: str) -> InvalidMessageError:
    err = exc.errors(include_url=False)[0]
    path = ".".join(str(part) for part in err.get("loc", ()))
    field = f"{prefix}{path}" if path else (prefix.rstrip(".") or None)
    return InvalidMessageError(topic, err.get("msg", "invalid value"), field=field)


def parse_payload(topic: str, data: Mapping[str, Any], *, model: type[WireModel] | None = None) -> WireModel:
    """Validate ``data`` against the payload model of ``topic``."""
    if model is None:
        spec = TOPICS.get(topic)
        if spec is None:
            raise UnknownTopicError(topic)
        model = spec.model
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise _first_error(topic, exc, "data.") from exc


def parse_message(
    topic: str,
    raw: bytes | bytearray | str | Mapping[str, Any],
    *,
    topics: Mapping[str, TopicSpec] = TOPICS,
    inbound_only: bool = True,
    limits: IntakeLimits = DEFAULT_LIMITS,
) -> tuple[EventEnvelope, WireModel]:
    """Decode and validate one message received on ``topic``.

    Raw input (bytes or text) is bounded before it is parsed: at most
    ``limits.max_message_bytes`` bytes and ``limits.max_json_depth`` levels of nesting
    (:data:`pipeline_state.intake.DEFAULT_LIMITS` unless given). Raises
    :class:`UnknownTopicError` for a topic that is not registered (or not inbound when
    ``inbound_only``), and :class:`InvalidMessageError` naming the field for anything else:
    no input makes it raise another error.
    """
    spec = topics.get(topic)
    if spec is None or (inbound_only and spec.direction != "in"):
        raise UnknownTopicError(topic)
    decoded = decode_json(topic, raw, limits) if isinstance(raw, bytes | bytearray | str) else raw
    if not isinstance(decoded, Mapping):
        raise InvalidMessageError(topic, "the envelope must be a JSON object")
    try:
        envelope = EventEnvelope.model_validate(decoded)
        if envelope.event_type != topic:
            raise InvalidMessageError(
                topic, f"event_type {envelope.event_type!r} does not match the topic", field="event_type"
            )
        return envelope, parse_payload(topic, envelope.data, model=spec.model)
    except ValidationError as exc:
        raise _first_error(topic, exc, "") from exc
    except (RecursionError, MemoryError, UnicodeError) as exc:
        raise InvalidMessageError(topic, f"message cannot be validated: {type(exc).__name__}") from exc
