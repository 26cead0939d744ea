"""JSON documents of the results read model, for stores that keep it as one column.

:func:`batch_to_document` gives a JSON-compatible dict (datetimes as ISO-8601 strings) that
holds the facts of a batch, not its ``version`` or ``updated_at`` (stores keep those in
their own columns); :func:`batch_from_document` reads it back and raises
:class:`~pipeline_state.errors.CorruptStateError` for a document it cannot read. Both are
a ``pipeline_state.documents.DocumentCodec`` of
:class:`~pipeline_state.profiles.huleedu.results.model.BatchResults`, whose stored keys are
its field names; :data:`RESULTS_SCHEMA` holds the layout number and the upgrade steps from
older layouts (none yet).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pipeline_state._model import evolve
from pipeline_state.documents import Document, DocumentCodec, Layout, Schema

from .model import BatchResults

__all__ = ["DOCUMENT_SCHEMA", "RESULTS_SCHEMA", "batch_from_document", "batch_to_document"]

RESULTS_SCHEMA = Schema(version=1)
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
