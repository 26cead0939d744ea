"""Owner notifications: the HuleEdu teacher notification every request and run end emits."""

from __future__ import annotations

from typing import Any, Literal

from pipeline_state.events import TeacherNotificationRequestedV1, Topic

from .journal import Journal

__all__ = ["notify"]


def notify(
    journal: Journal,
    *,
    batch_id: str,
    owner: str,
    kind: str,
    priority: Literal["low", "high", "immediate"],
    action: bool,
    payload: dict[str, Any],
    correlation_id: str,
) -> None:
    """Record a teacher notification of ``kind`` for the batch's ``owner``."""
    data = {
        "teacher_id": owner,
        "notification_type": kind,
        "category": "batch_progress",
        "priority": priority,
        "payload": {"batch_id": batch_id, **payload},
        "action_required": action,
        "correlation_id": correlation_id,
        "batch_id": batch_id,
    }
    journal.emit_lazy(
        Topic.TEACHER_NOTIFICATION.value, owner, TeacherNotificationRequestedV1, data, correlation_id
    )
