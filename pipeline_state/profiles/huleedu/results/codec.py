"""JSON documents of the results read model, for stores that keep it as one column.

:func:`batch_to_document` gives a JSON-compatible dict (datetimes as ISO-8601 strings) that
holds the facts of a batch, not its ``version`` or ``updated_at`` (stores keep those in
their own columns); :func:`batch_from_document` reads it back and raises
:class:`~pipeline_state.errors.CorruptStateError` for a document it cannot read. Both are
a ``pipeline_state.documents.DocumentCodec`` of
:class:`~pipeline_state.profiles.huleedu.results.model.BatchResults`, whose stored keys are
its field names; :data:`RESULTS_SCHEMA` holds the layout number and the upgrade steps from
older layouts:

* layout 1 -> 2 (:func:`dispatches_from_outcomes`): the read model gained the engine's
  dispatches (``dispatches``) and the phases it pruned as already completed (``pruned``).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pipeline_state._model import evolve
from pipeline_state.documents import Document, DocumentCodec, Layout, Schema

from .model import BatchResults

__all__ = [
    "DOCUMENT_SCHEMA",
    "RESULTS_SCHEMA",
    "batch_from_document",
    "batch_to_document",
    "dispatches_from_outcomes",
]


def _instant(fact: object, key: str) -> datetime | None:
    """``fact[key]`` read as an instant with its offset, or ``None`` when it is not one (the
    decoder then says what is wrong with the document)."""
    text = fact.get(key) if type(fact) is dict else None
    if type(text) is not str:
        return None
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        return None
    return at if at.tzinfo is not None else None


def dispatches_from_outcomes(document: Document) -> Document:
    """Layout 1 -> 2: the engine's dispatches (``dispatches``) and the phases it pruned as
    already completed (``pruned``) join the read model.

    Layout 1 knew no dispatch: it showed a run in progress from the outcomes stamped after
    the latest completion. Each such outcome's ``(correlation_id, phase)`` gets a dispatch
    of an unknown number of items (``items`` null), stamped as the outcome and carrying its
    event id, so the batch keeps the status and progress it showed (and the class summaries,
    which counted it under that status, stay right). The other outcomes stay, unshown as
    they were. ``pruned`` starts empty. What the step cannot read it leaves for the decoder,
    which says what is wrong."""
    outcomes, completions = document.get("outcomes"), document.get("completions")
    latest: datetime | None = None
    for run in completions if type(completions) is list else ():
        at = _instant(run, "completed_at")
        if at is not None and (latest is None or at > latest):
            latest = at
    dispatches: dict[tuple[str, str], dict[str, Any]] = {}
    for outcome in outcomes if type(outcomes) is list else ():
        at = _instant(outcome, "observed_at")
        if at is None or (latest is not None and at <= latest):
            continue
        key = (outcome.get("correlation_id"), outcome.get("phase"))
        if not all(type(part) is str for part in key):
            continue
        known = dispatches.get(key)
        if known is None or at < known["at"]:
            dispatches[key] = {
                "at": at,
                "observed_at": outcome["observed_at"],
                "event_id": outcome.get("event_id"),
            }
    document["dispatches"] = [
        {
            "correlation_id": corr,
            "phase": phase,
            "items": None,
            "observed_at": d["observed_at"],
            "event_id": d["event_id"],
        }
        for (corr, phase), d in sorted(dispatches.items())
    ]
    document["pruned"] = []
    return document


RESULTS_SCHEMA = Schema(version=2, upgrades={1: dispatches_from_outcomes})
"""The layout number written into every results document, and the upgrade steps."""

DOCUMENT_SCHEMA = RESULTS_SCHEMA.version
"""The version of the document layout written by :func:`batch_to_document`."""

_RESULTS = DocumentCodec(
    BatchResults,
    layout=Layout(omit={BatchResults: frozenset({"version", "updated_at"})}),
    schema=RESULTS_SCHEMA,
    what="the results document",
)


def batch_to_document(batch: BatchResults) -> Document:
    """The facts of ``batch`` as a JSON-compatible dict."""
    return _RESULTS.encode(batch)


def batch_from_document(
    document: Mapping[str, Any], *, version: int = 0, updated_at: datetime | None = None
) -> BatchResults:
    """The read model stored as ``document``, with the store's ``version`` and ``updated_at``."""
    batch_id = str(document.get("batch_id", "?")) if isinstance(document, Mapping) else "?"
    if isinstance(document, Mapping) and type(document) is not dict:
        document = dict(document)  # any mapping, as before; the codec reads JSON objects
    batch = _RESULTS.decode(document, batch_id)
    return evolve(batch, version=version, updated_at=updated_at)
