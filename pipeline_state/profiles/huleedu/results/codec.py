"""JSON documents of the results read model, for stores that keep it as one column.

:func:`batch_to_document` gives a JSON-compatible dict (datetimes as ISO-8601 strings) that
holds the facts of a batch, not its ``version`` or ``updated_at`` (stores keep those in
their own columns); :func:`batch_from_document` reads it back and raises
:class:`~pipeline_state.errors.CorruptStateError` for a document it cannot read.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pipeline_state.errors import CorruptStateError

from .model import BatchResults, Owner, PhaseOutcome, PhaseResultView, RunCompletion

__all__ = ["DOCUMENT_SCHEMA", "batch_from_document", "batch_to_document"]

DOCUMENT_SCHEMA = 1
"""The version of the document layout written by :func:`batch_to_document`."""


def _phase(p: PhaseResultView) -> dict[str, Any]:
    return {
        "name": p.name,
        "status": p.status,
        "successful": p.successful,
        "failed": p.failed,
        "duration_seconds": p.duration_seconds,
    }


def batch_to_document(batch: BatchResults) -> dict[str, Any]:
    """The facts of ``batch`` as a JSON-compatible dict."""
    owner = batch.owner
    return {
        "schema": DOCUMENT_SCHEMA,
        "batch_id": batch.batch_id,
        "owner": None
        if owner is None
        else {
            "user_id": owner.user_id,
            "class_id": owner.class_id,
            "expected_essays": owner.expected_essays,
            "observed_at": owner.observed_at.isoformat(),
            "event_id": owner.event_id,
        },
        "completions": [
            {
                "run_id": r.run_id,
                "correlation_id": r.correlation_id,
                "pipeline_name": r.pipeline_name,
                "final_status": r.final_status,
                "completed_phases": list(r.completed_phases),
                "skipped_phases": list(r.skipped_phases),
                "processing_duration_seconds": r.processing_duration_seconds,
                "successful_essays": r.successful_essays,
                "failed_essays": r.failed_essays,
                "phase_results": [_phase(p) for p in r.phase_results],
                "completed_at": r.completed_at.isoformat(),
                "event_id": r.event_id,
            }
            for r in batch.completions
        ],
        "outcomes": [
            {
                "correlation_id": o.correlation_id,
                "phase": o.phase,
                "status": o.status,
                "successful": o.successful,
                "failed": o.failed,
                "observed_at": o.observed_at.isoformat(),
                "event_id": o.event_id,
            }
            for o in batch.outcomes
        ],
        "announced": list(batch.announced),
    }


def _at(value: Any) -> datetime:
    stamp = datetime.fromisoformat(str(value))
    if stamp.tzinfo is None:
        raise ValueError(f"timestamp {value!r} has no timezone")
    return stamp


def _read_phase(d: Mapping[str, Any]) -> PhaseResultView:
    duration = d["duration_seconds"]
    return PhaseResultView(
        str(d["name"]),
        str(d["status"]),
        int(d["successful"]),
        int(d["failed"]),
        None if duration is None else float(duration),
    )


def _read(doc: Mapping[str, Any], *, version: int, updated_at: datetime | None) -> BatchResults:
    if doc.get("schema") != DOCUMENT_SCHEMA:
        raise ValueError(f"unknown document schema {doc.get('schema')!r}")
    o = doc["owner"]
    owner = (
        None
        if o is None
        else Owner(
            user_id=str(o["user_id"]),
            class_id=None if o["class_id"] is None else str(o["class_id"]),
            expected_essays=None if o["expected_essays"] is None else int(o["expected_essays"]),
            observed_at=_at(o["observed_at"]),
            event_id=str(o["event_id"]),
        )
    )
    completions = tuple(
        RunCompletion(
            run_id=str(r["run_id"]),
            correlation_id=str(r["correlation_id"]),
            pipeline_name=str(r["pipeline_name"]),
            final_status=str(r["final_status"]),
            completed_phases=tuple(str(p) for p in r["completed_phases"]),
            skipped_phases=tuple(str(p) for p in r["skipped_phases"]),
            processing_duration_seconds=float(r["processing_duration_seconds"]),
            successful_essays=int(r["successful_essays"]),
            failed_essays=int(r["failed_essays"]),
            phase_results=tuple(_read_phase(p) for p in r["phase_results"]),
            completed_at=_at(r["completed_at"]),
            event_id=str(r["event_id"]),
        )
        for r in doc["completions"]
    )
    outcomes = tuple(
        PhaseOutcome(
            correlation_id=str(x["correlation_id"]),
            phase=str(x["phase"]),
            status=str(x["status"]),
            successful=int(x["successful"]),
            failed=int(x["failed"]),
            observed_at=_at(x["observed_at"]),
            event_id=str(x["event_id"]),
        )
        for x in doc["outcomes"]
    )
    return BatchResults(
        batch_id=str(doc["batch_id"]),
        owner=owner,
        completions=completions,
        outcomes=outcomes,
        announced=tuple(str(r) for r in doc["announced"]),
        version=version,
        updated_at=updated_at,
    )


def batch_from_document(
    document: Mapping[str, Any], *, version: int = 0, updated_at: datetime | None = None
) -> BatchResults:
    """The read model stored as ``document``, with the store's ``version`` and ``updated_at``."""
    if not isinstance(document, Mapping):
        raise CorruptStateError("?", "results document is not a JSON object")
    try:
        return _read(document, version=version, updated_at=updated_at)
    except (KeyError, TypeError, ValueError) as exc:
        batch_id = str(document.get("batch_id", "?")) if isinstance(document, Mapping) else "?"
        raise CorruptStateError(batch_id, f"results document: {type(exc).__name__}: {exc}") from exc
