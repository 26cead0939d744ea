"""How the HuleEdu platform's inbound messages read as engine inputs, and back.

Seven topics: the batch registration, content provisioning, the student associations
confirmed by the class management service, the essays that passed validation, validation
errors, the client's pipeline request and the essay lifecycle service's phase outcome.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pipeline_state._inbound import Inbound, InboundTopic
from pipeline_state._inputs import (
    ContentReady,
    GroupConfirmed,
    ItemsReady,
    PhaseOutcome,
    RegisterBatch,
    RequestPipeline,
    ValidationFailed,
)
from pipeline_state._model import ItemRef
from pipeline_state.profiles.huleedu.events import (
    BatchContentProvisioningCompletedV1,
    BatchEssaysReady,
    BatchRegistrationRequestV1,
    BatchValidationErrorsV1,
    ClientBatchPipelineRequestV1,
    ELSBatchPhaseOutcomeV1,
    EssayProcessingInputRefV1,
    StudentAssociationsConfirmedV1,
    Topic,
)

__all__ = ["HULEEDU_INBOUND", "default_language"]


def default_language(course_code: str, language: str | None) -> str:
    """The batch's language: the registration's, else Swedish for a course code starting
    with ``SV`` and English for any other."""
    if language:
        return language
    return "sv" if course_code.upper().startswith("SV") else "en"


def _refs(items: Iterable[EssayProcessingInputRefV1]) -> tuple[ItemRef, ...]:
    return tuple(ItemRef(i.essay_id, i.text_storage_id) for i in items)


def _wire_refs(items: Iterable[ItemRef]) -> list[dict[str, Any]]:
    return [
        {"essay_id": i.item_id}
        if i.content_ref is None
        else {"essay_id": i.item_id, "text_storage_id": i.content_ref}
        for i in items
    ]


def _some(**fields: Any) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not None}


def _register(p: BatchRegistrationRequestV1) -> RegisterBatch:
    return RegisterBatch(
        batch_id=p.batch_id,
        owner=p.user_id,
        expected_items=p.expected_essay_count,
        item_ids=None if p.essay_ids is None else tuple(p.essay_ids),
        category=p.course_code,
        language=default_language(p.course_code, p.language),
        org_id=p.org_id,
        group_id=p.class_id,
        prompt_ref=p.student_prompt_ref,
    )


def _registration(r: RegisterBatch) -> Mapping[str, Any]:
    return _some(
        batch_id=r.batch_id,
        expected_essay_count=r.expected_items,
        essay_ids=None if r.item_ids is None else list(r.item_ids),
        user_id=r.owner,
        org_id=r.org_id,
        class_id=r.group_id,
        course_code=r.category,
        language=r.language,
        student_prompt_ref=r.prompt_ref,
    )


def _request(p: ClientBatchPipelineRequestV1) -> RequestPipeline:
    return RequestPipeline(
        batch_id=p.batch_id,
        pipeline=p.requested_pipeline,
        requested_by=p.user_id,
        is_retry=p.is_retry,
        retry_reason=p.retry_reason,
        prompt=p.prompt_payload,
    )


def _request_fields(r: RequestPipeline) -> Mapping[str, Any]:
    return _some(
        batch_id=r.batch_id,
        requested_pipeline=r.pipeline,
        user_id=r.requested_by,
        is_retry=r.is_retry,
        retry_reason=r.retry_reason,
        prompt_payload=r.prompt,
    )


def _outcome(p: ELSBatchPhaseOutcomeV1) -> PhaseOutcome:
    return PhaseOutcome(
        p.batch_id,
        p.phase_name,
        p.phase_status,
        _refs(p.processed_essays),
        tuple(p.failed_essay_ids),
        str(p.correlation_id),
    )


def _outcome_fields(o: PhaseOutcome) -> Mapping[str, Any]:
    return {
        "batch_id": o.batch_id,
        "phase_name": o.phase,
        "phase_status": o.status,
        "processed_essays": _wire_refs(o.processed),
        "failed_essay_ids": list(o.failed),
        "correlation_id": o.correlation_id,
    }


HULEEDU_INBOUND = Inbound(
    (
        InboundTopic(
            Topic.BATCH_REGISTER.value, BatchRegistrationRequestV1, RegisterBatch, _register, _registration
        ),
        InboundTopic(
            Topic.CONTENT_PROVISIONED.value,
            BatchContentProvisioningCompletedV1,
            ContentReady,
            lambda p: ContentReady(p.batch_id, _refs(p.essays_for_processing)),
            lambda c: {
                "batch_id": c.batch_id,
                "provisioned_count": len(c.items),
                "expected_count": len(c.items),
                "essays_for_processing": _wire_refs(c.items),
            },
        ),
        InboundTopic(
            Topic.ASSOCIATIONS_CONFIRMED.value,
            StudentAssociationsConfirmedV1,
            GroupConfirmed,
            lambda p: GroupConfirmed(p.batch_id, p.class_id),
            lambda g: {"batch_id": g.batch_id, "class_id": g.group_id},
        ),
        InboundTopic(
            Topic.ESSAYS_READY.value,
            BatchEssaysReady,
            ItemsReady,
            lambda p: ItemsReady(p.batch_id, _refs(p.ready_essays)),
            lambda r: {"batch_id": r.batch_id, "ready_essays": _wire_refs(r.items)},
        ),
        InboundTopic(
            Topic.VALIDATION_ERRORS.value,
            BatchValidationErrorsV1,
            ValidationFailed,
            lambda p: ValidationFailed(p.batch_id, p.error_summary.critical_failure),
            lambda v: {
                "batch_id": v.batch_id,
                "error_summary": {"total_errors": 1, "critical_failure": v.critical},
            },
        ),
        InboundTopic(
            Topic.PIPELINE_REQUEST.value,
            ClientBatchPipelineRequestV1,
            RequestPipeline,
            _request,
            _request_fields,
        ),
        InboundTopic(
            Topic.PHASE_OUTCOME.value, ELSBatchPhaseOutcomeV1, PhaseOutcome, _outcome, _outcome_fields
        ),
    )
)
"""The HuleEdu platform's inbound wire (its topic names and payload models are in
:mod:`pipeline_state.profiles.huleedu.events`)."""
