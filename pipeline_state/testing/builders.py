"""Builders of valid inbound envelopes for the HuleEdu profile.

Used by tests, the demo and the stateful harness; handy in a service's own tests too::

    env = Envelopes()
    await rt.deliver(*env.register("b1", user_id="t1", essays=3))
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from pipeline_state.events import Topic

__all__ = ["Envelopes", "essay_refs"]

Delivery = tuple[str, dict[str, Any]]


def essay_refs(essay_ids: Iterable[str], suffix: str = "text") -> list[dict[str, str]]:
    """``[{essay_id, text_storage_id}]`` for the given ids."""
    return [{"essay_id": e, "text_storage_id": f"{e}-{suffix}"} for e in essay_ids]


class Envelopes:
    """Makes ``(topic, envelope dict)`` pairs; ids are random unless given."""

    def __init__(self, source_service: str = "tests", timestamp: datetime | None = None) -> None:
        self.source_service = source_service
        self.timestamp = timestamp or datetime(2025, 1, 1, tzinfo=UTC)

    def wrap(
        self,
        topic: str,
        data: dict[str, Any],
        *,
        event_id: str | None = None,
        correlation_id: str | None = None,
    ) -> Delivery:
        return topic, {
            "event_id": event_id or str(uuid.uuid4()),
            "event_type": topic,
            "event_timestamp": self.timestamp.isoformat(),
            "source_service": self.source_service,
            "schema_version": 1,
            "correlation_id": correlation_id or str(uuid.uuid4()),
            "data": data,
            "metadata": None,
        }

    @staticmethod
    def essay_ids(batch_id: str, count: int) -> list[str]:
        return [f"{batch_id}-e{i}" for i in range(count)]

    def register(
        self,
        batch_id: str,
        *,
        user_id: str = "teacher-1",
        essays: int = 3,
        class_id: str | None = None,
        course_code: str = "ENG5",
        prompt: str | None = "prompt-1",
        **kw: Any,
    ) -> Delivery:
        data = {
            "batch_id": batch_id,
            "expected_essay_count": essays,
            "essay_ids": self.essay_ids(batch_id, essays),
            "user_id": user_id,
            "class_id": class_id,
            "course_code": course_code,
            "student_prompt_ref": prompt,
        }
        return self.wrap(Topic.BATCH_REGISTER.value, data, **kw)

    def provisioned(self, batch_id: str, essay_ids: Sequence[str], **kw: Any) -> Delivery:
        data = {
            "batch_id": batch_id,
            "provisioned_count": len(essay_ids),
            "expected_count": len(essay_ids),
            "essays_for_processing": essay_refs(essay_ids),
        }
        return self.wrap(Topic.CONTENT_PROVISIONED.value, data, **kw)

    def associations(self, batch_id: str, class_id: str, essay_ids: Sequence[str], **kw: Any) -> Delivery:
        data = {
            "batch_id": batch_id,
            "class_id": class_id,
            "associations": [{"essay_id": e, "student_id": f"student-{e}"} for e in essay_ids],
            "timeout_triggered": False,
        }
        return self.wrap(Topic.ASSOCIATIONS_CONFIRMED.value, data, **kw)

    def essays_ready(self, batch_id: str, essay_ids: Sequence[str], **kw: Any) -> Delivery:
        data = {"batch_id": batch_id, "ready_essays": essay_refs(essay_ids)}
        return self.wrap(Topic.ESSAYS_READY.value, data, **kw)

    def validation_errors(self, batch_id: str, *, critical: bool = True, **kw: Any) -> Delivery:
        data = {"batch_id": batch_id, "error_summary": {"total_errors": 1, "critical_failure": critical}}
        return self.wrap(Topic.VALIDATION_ERRORS.value, data, **kw)

    def request(
        self,
        batch_id: str,
        pipeline: str,
        *,
        user_id: str = "teacher-1",
        correlation_id: str | None = None,
        prompt_payload: dict[str, Any] | None = None,
        **kw: Any,
    ) -> Delivery:
        corr = correlation_id or str(uuid.uuid4())
        data = {
            "batch_id": batch_id,
            "requested_pipeline": pipeline,
            "client_correlation_id": corr,
            "user_id": user_id,
            "is_retry": False,
            "prompt_payload": prompt_payload,
        }
        return self.wrap(Topic.PIPELINE_REQUEST.value, data, correlation_id=corr, **kw)

    def outcome(
        self,
        batch_id: str,
        phase: str,
        correlation_id: str,
        *,
        processed: Sequence[str] = (),
        failed: Sequence[str] = (),
        status: str | None = None,
        suffix: str | None = None,
        **kw: Any,
    ) -> Delivery:
        if status is None:
            status = (
                "completed_successfully"
                if not failed
                else ("completed_with_failures" if processed else "failed_critically")
            )
        data = {
            "batch_id": batch_id,
            "phase_name": phase,
            "phase_status": status,
            "processed_essays": essay_refs(processed, suffix or phase),
            "failed_essay_ids": list(failed),
            "correlation_id": correlation_id,
        }
        return self.wrap(Topic.PHASE_OUTCOME.value, data, correlation_id=correlation_id, **kw)
