"""The HuleEdu profile's envelope builders: the generic
:class:`~pipeline_state.testing.Envelopes` writing the payloads the platform's services
send, field for field and unchecked (a registration without ``language`` so the course
decides it, associations that name a student per essay, a request with its client
correlation id; tests build over-long or malformed payloads with them), with the
platform's default owner and course.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from pipeline_state.profiles.huleedu.events import Topic
from pipeline_state.profiles.huleedu.inbound import HULEEDU_INBOUND
from pipeline_state.testing.builders import Delivery, Envelopes

__all__ = ["HuleEduEnvelopes", "essay_refs"]


def essay_refs(essay_ids: Iterable[str], suffix: str = "text") -> list[dict[str, str]]:
    """``[{essay_id, text_storage_id}]`` for the given ids."""
    return [{"essay_id": e, "text_storage_id": f"{e}-{suffix}"} for e in essay_ids]


class HuleEduEnvelopes(Envelopes):
    """:class:`~pipeline_state.testing.Envelopes` for the HuleEdu wire (default profile:
    :func:`~pipeline_state.profiles.huleedu.profile.huleedu_profile`). Given a profile with
    another inbound wire, it writes that wire, as the generic builders do."""

    DEFAULT_OWNER = "teacher-1"
    DEFAULT_CATEGORY = "ENG5"

    @property
    def _native(self) -> bool:
        return self.profile.inbound is HULEEDU_INBOUND

    def register(
        self,
        batch_id: str,
        *,
        owner: str | None = None,
        items: int | None = None,
        item_ids: Sequence[str] | None = None,
        group_id: str | None = None,
        category: str | None = None,
        language: str | None = None,
        prompt: str | None = "prompt-1",
        **kw: Any,
    ) -> Delivery:
        if not self._native:
            return super().register(
                batch_id,
                owner=owner,
                items=items,
                item_ids=item_ids,
                group_id=group_id,
                category=category,
                language=language,
                prompt=prompt,
                **kw,
            )
        named = self.registered_ids(batch_id, items, item_ids)
        data: dict[str, Any] = {
            "batch_id": batch_id,
            "expected_essay_count": len(named) if items is None else items,
            "essay_ids": named,
            "user_id": owner or self.DEFAULT_OWNER,
            "class_id": group_id,
            "course_code": category or self.DEFAULT_CATEGORY,
            "student_prompt_ref": prompt,
        }
        if language is not None:
            data["language"] = language
        return self.wrap(Topic.BATCH_REGISTER.value, data, **kw)

    def group_confirmed(
        self, batch_id: str, group_id: str, item_ids: Sequence[str] = (), **kw: Any
    ) -> Delivery:
        if not self._native:
            return super().group_confirmed(batch_id, group_id, item_ids, **kw)
        data = {
            "batch_id": batch_id,
            "class_id": group_id,
            "associations": [{"essay_id": e, "student_id": f"student-{e}"} for e in item_ids],
            "timeout_triggered": False,
        }
        return self.wrap(Topic.ASSOCIATIONS_CONFIRMED.value, data, **kw)

    def provisioned(self, batch_id: str, item_ids: Sequence[str], **kw: Any) -> Delivery:
        if not self._native:
            return super().provisioned(batch_id, item_ids, **kw)
        data = {
            "batch_id": batch_id,
            "provisioned_count": len(item_ids),
            "expected_count": len(item_ids),
            "essays_for_processing": essay_refs(item_ids),
        }
        return self.wrap(Topic.CONTENT_PROVISIONED.value, data, **kw)

    def items_ready(self, batch_id: str, item_ids: Sequence[str], **kw: Any) -> Delivery:
        if not self._native:
            return super().items_ready(batch_id, item_ids, **kw)
        data = {"batch_id": batch_id, "ready_essays": essay_refs(item_ids)}
        return self.wrap(Topic.ESSAYS_READY.value, data, **kw)

    def validation_errors(self, batch_id: str, *, critical: bool = True, **kw: Any) -> Delivery:
        if not self._native:
            return super().validation_errors(batch_id, critical=critical, **kw)
        data = {"batch_id": batch_id, "error_summary": {"total_errors": 1, "critical_failure": critical}}
        return self.wrap(Topic.VALIDATION_ERRORS.value, data, **kw)

    def request(
        self,
        batch_id: str,
        pipeline: str,
        *,
        requested_by: str | None = None,
        correlation_id: str | None = None,
        prompt_payload: dict[str, Any] | None = None,
        **kw: Any,
    ) -> Delivery:
        if not self._native:
            return super().request(
                batch_id,
                pipeline,
                requested_by=requested_by,
                correlation_id=correlation_id,
                prompt_payload=prompt_payload,
                **kw,
            )
        corr = correlation_id or str(uuid.uuid4())
        data = {
            "batch_id": batch_id,
            "requested_pipeline": pipeline,
            "client_correlation_id": corr,
            "user_id": requested_by or self.DEFAULT_OWNER,
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
        if not self._native:
            return super().outcome(
                batch_id,
                phase,
                correlation_id,
                processed=processed,
                failed=failed,
                status=status,
                suffix=suffix,
                **kw,
            )
        data = {
            "batch_id": batch_id,
            "phase_name": phase,
            "phase_status": status or self.outcome_status(processed, failed),
            "processed_essays": essay_refs(processed, suffix or phase),
            "failed_essay_ids": list(failed),
            "correlation_id": correlation_id,
        }
        return self.wrap(Topic.PHASE_OUTCOME.value, data, correlation_id=correlation_id, **kw)
