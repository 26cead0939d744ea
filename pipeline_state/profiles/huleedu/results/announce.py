"""The announcement of a completed run's results: ``BatchResultsReadyV1`` and a
``batch_results_ready`` teacher notification, as outbox messages.

Event ids derive from the batch and run ids, so an announcement made again (by a retried
unit of work) carries the same ids and downstream consumers can drop the repeat. The
envelopes carry the run's correlation id and name the completion event as their cause.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pipeline_state._decide import derive_id
from pipeline_state._wire import WireModel
from pipeline_state.ports import OutboxMessage
from pipeline_state.profiles.huleedu.events import (
    BatchResultsReadyV1,
    PhaseResult,
    TeacherNotificationRequestedV1,
    Topic,
)

from .model import BatchResults, RunCompletion

__all__ = [
    "NOTIFICATION_CATEGORY",
    "NOTIFICATION_PRIORITY",
    "NOTIFICATION_TYPE",
    "announcement",
    "results_ready_event",
]

NOTIFICATION_TYPE = "batch_results_ready"
NOTIFICATION_CATEGORY = "processing_results"
NOTIFICATION_PRIORITY = "high"


def results_ready_event(batch_id: str, user_id: str, run: RunCompletion) -> BatchResultsReadyV1:
    """The ``BatchResultsReadyV1`` payload of one completed run (that run's own figures)."""
    return BatchResultsReadyV1(
        batch_id=batch_id,
        user_id=user_id,
        total_essays=run.total_essays,
        completed_essays=run.successful_essays,
        phase_results={
            p.name: PhaseResult(
                status=p.status,
                successful=p.successful,
                failed=p.failed,
                duration_seconds=p.duration_seconds or 0.0,
            )
            for p in run.phase_results
        },
        overall_status=run.final_status,
        processing_duration_seconds=run.processing_duration_seconds,
    )


def _uuid(value: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return derive_id("correlation", value)


def _envelope(
    event_id: str, topic: str, payload: WireModel, correlation_id: str, cause: str, now: datetime, source: str
) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "event_type": topic,
        "event_timestamp": now.isoformat(),
        "source_service": source,
        "schema_version": 1,
        "correlation_id": correlation_id,
        "data": payload.model_dump(mode="json"),
        "metadata": {"causation_id": cause},
    }


def announcement(
    batch: BatchResults, run: RunCompletion, *, now: datetime, source_service: str
) -> tuple[OutboxMessage, OutboxMessage]:
    """The two outbox messages announcing ``run``'s results: ``BatchResultsReadyV1`` keyed
    by batch id, then the teacher notification keyed by the teacher id. ``batch`` must have
    an owner. The notification says whether a newer run's results superseded this run's."""
    if batch.owner is None:
        raise ValueError(f"batch {batch.batch_id!r} has no known owner to announce results to")
    teacher = batch.owner.user_id
    correlation = _uuid(run.correlation_id)
    ready = results_ready_event(batch.batch_id, teacher, run)
    latest = batch.latest
    note = TeacherNotificationRequestedV1(
        teacher_id=teacher,
        notification_type=NOTIFICATION_TYPE,
        category=NOTIFICATION_CATEGORY,
        priority=NOTIFICATION_PRIORITY,
        payload={
            "batch_id": batch.batch_id,
            "class_id": batch.owner.class_id,
            "run_id": run.run_id,
            "pipeline_name": run.pipeline_name,
            "final_status": run.final_status,
            "total_essays": run.total_essays,
            "completed_essays": run.successful_essays,
            "failed_essays": run.failed_essays,
            "superseded": latest is not None and latest.run_id != run.run_id,
            "message": f"Results of {run.pipeline_name} are ready: {run.final_status}",
        },
        action_required=False,
        correlation_id=correlation,
        batch_id=batch.batch_id,
    )
    ready_id = derive_id("results", batch.batch_id, run.run_id, "ready")
    note_id = derive_id("results", batch.batch_id, run.run_id, "notification")
    ready_topic = Topic.RESULTS_READY.value
    note_topic = Topic.TEACHER_NOTIFICATION.value
    return (
        OutboxMessage(
            ready_id,
            ready_topic,
            batch.batch_id,
            _envelope(ready_id, ready_topic, ready, correlation, run.event_id, now, source_service),
        ),
        OutboxMessage(
            note_id,
            note_topic,
            teacher,
            _envelope(note_id, note_topic, note, correlation, run.event_id, now, source_service),
        ),
    )
