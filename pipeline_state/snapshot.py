"""JSON-serialisable views of batch state (the runtime's and the HTTP API's shape)."""

from __future__ import annotations

from typing import Any

from .model import BatchState, Run

__all__ = ["run_view", "snapshot"]


def run_view(run: Run) -> dict[str, Any]:
    """One archived run as the snapshot's history shows it."""
    return {
        "run_id": run.run_id,
        "pipeline_name": run.pipeline_name,
        "correlation_id": run.correlation_id,
        "final_status": run.status.value,
        "completed_phases": list(run.completed_phases),
        "skipped_phases": list(run.skipped_phases),
        "phases": dict(run.phase_statuses),
        "accepted_at": run.accepted_at.isoformat(),
        "completed_at": None if run.completed_at is None else run.completed_at.isoformat(),
        "is_retry": run.is_retry,
    }


def snapshot(state: BatchState) -> dict[str, Any]:
    """The batch as a JSON-serialisable dict: status, version, active run and history."""
    run = state.active_run
    active = None
    if run is not None:
        active = {
            "run_id": run.run_id,
            "pipeline_name": run.pipeline_name,
            "correlation_id": run.correlation_id,
            "phases": dict(run.phase_statuses),
            "skipped_phases": list(run.pruned),
            "accepted_at": run.accepted_at.isoformat(),
        }
    return {
        "batch_id": state.batch_id,
        "status": state.status.value,
        "version": state.version,
        "user_id": state.owner,
        "class_id": state.group_id,
        "essay_count": len(state.items),
        "active_run": active,
        "history": [run_view(r) for r in state.history],
    }
