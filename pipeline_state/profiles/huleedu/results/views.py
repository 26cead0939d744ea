"""JSON views of the results read model, as HTTP responses and the demo show them.

Every function returns a JSON-compatible dict (datetimes as ISO-8601 strings); the shapes
are stable and documented here:

* :func:`batch_view`: ``batch_id, status, user_id, class_id, expected_essays,
  essays_succeeded, essays_failed, completed_phases, phases{name: figures}, latest_run,
  runs[], in_progress[], last_activity_at, updated_at, version``;
* :func:`class_view`: ``class_id, batch_count, batches_by_status, essays_succeeded,
  essays_failed, batches[]`` (each a :func:`batch_summary`);
* :func:`teacher_view`: ``user_id, batch_count, batches_by_status, batches[]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from .model import BatchResults, ClassResults, PhaseOutcome, PhaseResultView, RunCompletion

__all__ = ["batch_summary", "batch_view", "class_view", "run_view", "teacher_view"]


def _iso(at: datetime | None) -> str | None:
    return None if at is None else at.isoformat()


def _figures(p: PhaseResultView) -> dict[str, Any]:
    return {
        "status": p.status,
        "successful": p.successful,
        "failed": p.failed,
        "duration_seconds": p.duration_seconds,
    }


def run_view(run: RunCompletion) -> dict[str, Any]:
    """One completed run with its figures."""
    return {
        "run_id": run.run_id,
        "correlation_id": run.correlation_id,
        "pipeline_name": run.pipeline_name,
        "final_status": run.final_status,
        "completed_phases": list(run.completed_phases),
        "skipped_phases": list(run.skipped_phases),
        "processing_duration_seconds": run.processing_duration_seconds,
        "total_essays": run.total_essays,
        "successful_essays": run.successful_essays,
        "failed_essays": run.failed_essays,
        "completed_at": _iso(run.completed_at),
        "phase_results": {p.name: _figures(p) for p in run.phase_results},
    }


def _outcome(o: PhaseOutcome) -> dict[str, Any]:
    return {
        "correlation_id": o.correlation_id,
        "phase": o.phase,
        "status": o.status,
        "successful": o.successful,
        "failed": o.failed,
        "observed_at": _iso(o.observed_at),
    }


def batch_view(batch: BatchResults) -> dict[str, Any]:
    """The whole read model of a batch."""
    latest = batch.latest
    return {
        "batch_id": batch.batch_id,
        "status": batch.status,
        "user_id": batch.user_id,
        "class_id": batch.class_id,
        "expected_essays": None if batch.owner is None else batch.owner.expected_essays,
        "essays_succeeded": batch.essays_succeeded,
        "essays_failed": batch.essays_failed,
        "completed_phases": list(batch.completed_phases),
        "phases": {p.name: _figures(p) for p in batch.phases},
        "latest_run": None if latest is None else run_view(latest),
        "runs": [run_view(r) for r in batch.completions],
        "in_progress": [_outcome(o) for o in batch.in_progress],
        "last_activity_at": _iso(batch.last_activity_at),
        "updated_at": _iso(batch.updated_at),
        "version": batch.version,
    }


def batch_summary(batch: BatchResults) -> dict[str, Any]:
    """A batch as a line of a class or teacher listing."""
    latest = batch.latest
    return {
        "batch_id": batch.batch_id,
        "status": batch.status,
        "user_id": batch.user_id,
        "class_id": batch.class_id,
        "essays_succeeded": batch.essays_succeeded,
        "essays_failed": batch.essays_failed,
        "latest_pipeline": None if latest is None else latest.pipeline_name,
        "completed_at": None if latest is None else _iso(latest.completed_at),
    }


def class_view(summary: ClassResults, batches: Sequence[BatchResults] = ()) -> dict[str, Any]:
    """A class's summary and (a page of) its batches."""
    return {
        "class_id": summary.class_id,
        "batch_count": summary.batch_count,
        "batches_by_status": dict(summary.by_status),
        "essays_succeeded": summary.essays_succeeded,
        "essays_failed": summary.essays_failed,
        "batches": [batch_summary(b) for b in batches],
    }


def teacher_view(user_id: str, batches: Sequence[BatchResults]) -> dict[str, Any]:
    """A teacher's batches (the page given) with their counts by status."""
    by_status: dict[str, int] = {}
    for batch in batches:
        by_status[batch.status] = by_status.get(batch.status, 0) + 1
    return {
        "user_id": user_id,
        "batch_count": len(batches),
        "batches_by_status": dict(sorted(by_status.items())),
        "batches": [batch_summary(b) for b in batches],
    }
