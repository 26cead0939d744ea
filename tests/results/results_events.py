"""Builders of the messages the results projection consumes, with explicit timestamps.

Not a test module: ``conftest.py`` puts this folder on ``sys.path`` so the test files can
``from results_events import ...``.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from pipeline_state.profiles.huleedu.events import Topic
from pipeline_state.profiles.huleedu.profile import HULEEDU_PHASE_COMMANDS
from pipeline_state.profiles.huleedu.testing.envelopes import essay_refs

__all__ = [
    "T0",
    "Delivery",
    "at",
    "completion",
    "dispatch",
    "new_id",
    "outcome",
    "registered",
    "skipped",
    "uid",
    "wrap",
]

T0 = datetime(2025, 1, 1, tzinfo=UTC)

Delivery = tuple[str, dict[str, Any]]

Phases = Mapping[str, tuple[str, int, int, float]]
"""``{phase: (status, successful, failed, duration_seconds)}``"""


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def new_id() -> str:
    return str(uuid.uuid4())


_NAMES = uuid.UUID("0b6a4d55-3a57-4f0e-9d51-5f0c2f6c8e11")


def uid(name: str) -> str:
    """``name`` as a UUID string: itself when it is one, else a UUID derived from it (the
    wire wants UUIDs for event and correlation ids; tests read better with names)."""
    try:
        return str(uuid.UUID(name))
    except ValueError:
        return str(uuid.uuid5(_NAMES, name))


def wrap(
    topic: str, data: dict[str, Any], when: datetime, *, event_id: str | None = None, corr: str | None = None
) -> Delivery:
    return topic, {
        "event_id": uid(event_id) if event_id else new_id(),
        "event_type": topic,
        "event_timestamp": when.isoformat(),
        "source_service": "tests",
        "schema_version": 1,
        "correlation_id": uid(corr) if corr else new_id(),
        "data": data,
        "metadata": None,
    }


def registered(
    batch_id: str,
    *,
    user_id: str = "teacher-1",
    class_id: str | None = "class-1",
    essays: int = 3,
    when: datetime = T0,
    event_id: str | None = None,
) -> Delivery:
    ids = [f"{batch_id}-e{i}" for i in range(essays)]
    data = {
        "entity_id": batch_id,
        "expected_essay_count": essays,
        "essay_ids": ids,
        "user_id": user_id,
        "class_id": class_id,
        "course_code": "ENG5",
    }
    return wrap(Topic.ESSAYS_REGISTERED.value, data, when, event_id=event_id)


def dispatch(
    batch_id: str,
    phase: str,
    corr: str,
    *,
    items: Sequence[str] = ("e0", "e1"),
    when: datetime = T0,
    event_id: str | None = None,
) -> Delivery:
    """The engine's command starting ``phase`` of the run ``corr`` over ``items`` (its
    dispatch), on the phase's command topic of the HuleEdu profile."""
    data = {
        "batch_id": batch_id,
        "essays_to_process": essay_refs(items),
        "language": "en",
        "course_code": "ENG5",
    }
    return wrap(HULEEDU_PHASE_COMMANDS[phase].topic, data, when, event_id=event_id, corr=corr)


def skipped(
    batch_id: str,
    phase: str,
    corr: str,
    *,
    reason: str = "already_completed",
    run_id: str | None = None,
    when: datetime = T0,
    event_id: str | None = None,
) -> Delivery:
    """The engine's notice that ``phase`` was skipped in the run ``corr`` (``PhaseSkippedV1``)."""
    data = {
        "batch_id": batch_id,
        "phase_name": phase,
        "skip_reason": reason,
        "correlation_id": uid(corr),
        "run_id": run_id,
    }
    return wrap(Topic.PHASE_SKIPPED.value, data, when, event_id=event_id, corr=corr)


def outcome(
    batch_id: str,
    phase: str,
    corr: str,
    *,
    processed: Sequence[str] = ("e0", "e1"),
    failed: Sequence[str] = (),
    status: str | None = None,
    when: datetime = T0,
    event_id: str | None = None,
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
        "processed_essays": essay_refs(processed, phase),
        "failed_essay_ids": list(failed),
        "correlation_id": uid(corr),
    }
    return wrap(Topic.PHASE_OUTCOME.value, data, when, event_id=event_id, corr=corr)


def completion(
    batch_id: str,
    run_id: str,
    corr: str,
    *,
    pipeline: str = "cj_assessment",
    final_status: str = "completed_successfully",
    phases: Phases | None = None,
    successful: int = 2,
    failed: int = 0,
    duration: float = 10.0,
    when: datetime = T0,
    event_id: str | None = None,
) -> Delivery:
    if phases is None:
        phases = {
            "spellcheck": ("completed_successfully", successful, failed, duration / 2),
            pipeline: ("completed_successfully", successful, failed, duration / 2),
        }
    data = {
        "batch_id": batch_id,
        "pipeline_name": pipeline,
        "run_id": run_id,
        "completed_phases": [p for p, r in phases.items() if r[0].startswith("completed")],
        "skipped_phases": [p for p, r in phases.items() if r[0].startswith("skipped")],
        "final_status": final_status,
        "processing_duration_seconds": duration,
        "successful_essay_count": successful,
        "failed_essay_count": failed,
        "phase_results": {
            p: {"status": s, "successful": ok, "failed": bad, "duration_seconds": d}
            for p, (s, ok, bad, d) in phases.items()
        },
        "correlation_id": uid(corr),
        "metadata": {"entity_id": batch_id, "entity_type": "batch", "timestamp": when.isoformat()},
    }
    return wrap(Topic.PIPELINE_COMPLETED.value, data, when, event_id=event_id, corr=corr)
