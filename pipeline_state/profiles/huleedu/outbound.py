"""The HuleEdu wording of what the engine announces: ``BatchEssaysRegistered``,
``PhaseSkippedV1``, ``PipelineDeniedV1``, ``BatchPipelineCompletedV1`` and a
``TeacherNotificationRequestedV1`` to the batch's teacher for every request (the contract's
notification table)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any, Literal

from pipeline_state._guards import Denial
from pipeline_state._lifecycle import RunStatus
from pipeline_state._model import BatchState, Run
from pipeline_state._outbound import Notice, Outgoing, RunSummary
from pipeline_state.profiles.huleedu.events import (
    BatchEssaysRegistered,
    BatchPipelineCompletedV1,
    PhaseSkippedV1,
    PipelineDeniedV1,
    TeacherNotificationRequestedV1,
    Topic,
)

__all__ = ["ENGINE_EVENT_TOPICS", "HULEEDU_OUTBOUND", "HuleEduOutbound"]

_Priority = Literal["low", "high", "immediate"]


def _teacher(
    state: BatchState, kind: str, priority: _Priority, action: bool, payload: dict[str, Any], corr: str
) -> Outgoing:
    data = {
        "teacher_id": state.owner,
        "notification_type": kind,
        "category": "batch_progress",
        "priority": priority,
        "payload": {"batch_id": state.batch_id, **payload},
        "action_required": action,
        "correlation_id": corr,
        "batch_id": state.batch_id,
    }
    return Outgoing(Topic.TEACHER_NOTIFICATION.value, state.owner, TeacherNotificationRequestedV1, data, corr)


ENGINE_EVENT_TOPICS: Mapping[str, str] = MappingProxyType(
    {
        Topic.ESSAYS_REGISTERED.value: "registered",
        Topic.PHASE_SKIPPED.value: "skipped",
        Topic.PIPELINE_DENIED.value: "denied",
        Topic.PIPELINE_COMPLETED.value: "completed",
        Topic.TEACHER_NOTIFICATION.value: "notification",
        Topic.RESULTS_READY.value: "results",
    }
)
"""The topics of the events the HuleEdu profile announces (topic: which event), the results
service's included; no command may use one."""


_SKIP_REASONS: Mapping[str, str] = MappingProxyType({"no_items_to_process": "no_essays_to_process"})
"""The engine's skip reasons as the HuleEdu contract words them."""


class HuleEduOutbound:
    """:class:`~pipeline_state._outbound.Outbound` of the HuleEdu wire contract."""

    @property
    def event_topics(self) -> Mapping[str, str]:
        """See :meth:`pipeline_state._profile.Profile.event_topics`."""
        return ENGINE_EVENT_TOPICS

    def registered(self, state: BatchState) -> Sequence[Outgoing]:
        data = {
            "entity_id": state.batch_id,
            "expected_essay_count": state.expected_items,
            "essay_ids": list(state.item_ids),
            "user_id": state.owner,
            "org_id": state.org_id,
            "class_id": state.group_id,
            "course_code": state.category,
        }
        return (Outgoing(Topic.ESSAYS_REGISTERED.value, state.batch_id, BatchEssaysRegistered, data),)

    def phase_skipped(self, state: BatchState, run: Run, phase: str, reason: str) -> Sequence[Outgoing]:
        data = {
            "batch_id": state.batch_id,
            "phase_name": phase,
            "skip_reason": _SKIP_REASONS.get(reason, reason),
            "correlation_id": run.correlation_id,
            "run_id": run.run_id,
        }
        return (
            Outgoing(Topic.PHASE_SKIPPED.value, state.batch_id, PhaseSkippedV1, data, run.correlation_id),
        )

    def denied(self, state: BatchState, user_id: str, requested: str, denial: Denial) -> Sequence[Outgoing]:
        data = {
            "batch_id": state.batch_id,
            "user_id": user_id,
            "requested_pipeline": requested,
            "denial_reason": denial.reason,
            "detail": denial.detail,
        }
        return (Outgoing(Topic.PIPELINE_DENIED.value, state.batch_id, PipelineDeniedV1, data),)

    def completed(self, state: BatchState, summary: RunSummary) -> Sequence[Outgoing]:
        run = summary.run
        data = {
            "batch_id": state.batch_id,
            "pipeline_name": run.pipeline_name,
            "run_id": run.run_id,
            "completed_phases": list(run.completed_phases),
            "skipped_phases": list(run.skipped_phases),
            "final_status": run.status.value,
            "processing_duration_seconds": summary.duration_seconds,
            "successful_essay_count": summary.successful_items,
            "failed_essay_count": summary.failed_items,
            "phase_results": {
                p.name: {
                    "status": p.status.value,
                    "successful": len(p.outputs),
                    "failed": len(p.failed_item_ids),
                    "duration_seconds": p.duration_seconds,
                }
                for p in run.phases
            },
            "correlation_id": run.correlation_id,
            "metadata": {"entity_id": state.batch_id, "timestamp": summary.finished_at},
        }
        topic = Topic.PIPELINE_COMPLETED.value
        return (Outgoing(topic, state.batch_id, BatchPipelineCompletedV1, data, run.correlation_id),)

    def notify(self, notice: Notice) -> Sequence[Outgoing]:
        state, corr = notice.state, notice.correlation_id
        if notice.kind == "run_started":
            assert notice.run is not None
            payload: dict[str, Any] = {
                "run_id": notice.run.run_id,
                "pipeline_name": notice.run.pipeline_name,
                "phases": list(notice.phases),
                "skipped_phases": list(notice.skipped),
            }
            return (_teacher(state, "batch_processing_started", "low", False, payload, corr),)
        if notice.kind == "run_finished":
            summary = notice.summary
            assert summary is not None
            run = summary.run
            status = run.status.value
            clean = summary.failed_items == 0 and run.status is RunStatus.COMPLETED_SUCCESSFULLY
            finished: dict[str, Any] = {
                "run_id": run.run_id,
                "pipeline_name": run.pipeline_name,
                "final_status": status,
                "completed_phases": list(run.completed_phases),
                "successful_essays": summary.successful_items,
                "failed_essays": summary.failed_items,
                "duration_seconds": summary.duration_seconds,
                "message": f"Pipeline {run.pipeline_name} finished: {status}",
            }
            priority: _Priority = "high" if clean else "immediate"
            return (_teacher(state, "pipeline_completed", priority, not clean, finished, corr),)
        denial = notice.denial
        assert denial is not None
        assert notice.requested is not None
        payload = {
            "requested_pipeline": notice.requested,
            "denial_reason": denial.reason,
            "detail": denial.detail,
        }
        return (_teacher(state, "pipeline_denied", "immediate", True, payload, corr),)


HULEEDU_OUTBOUND = HuleEduOutbound()
"""The HuleEdu wording, shared (it holds no state)."""
