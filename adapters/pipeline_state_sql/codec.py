"""The stored form of batch state: an explicit, versioned JSON document codec.

:func:`encode_state` turns a :class:`~pipeline_state.model.BatchState` (attrs value objects,
enums, timezone-aware datetimes) into a JSON-compatible ``dict`` carrying a ``schema``
field; :func:`decode_state` turns it back. Every field is written and read by name, so a
change to the model shows up here as a deliberate edit, and the schema number says which
layout a stored row has. A document that is not valid JSON, lacks a field, holds a wrong
type or carries an unknown schema number raises
:class:`~pipeline_state.errors.CorruptStateError` naming the batch.

Archived runs are stored one row each, in the run layout (:func:`encode_run`,
:func:`decode_run`, :data:`RUN_SCHEMA_VERSION`).

Layouts of the batch document:

* **2** (written now): no archived run in the document; ``past`` holds what decisions keep
  of them (:class:`~pipeline_state.model.Past`: each run's correlation id and acceptance
  time, and the latest outputs of every phase completed earlier), so an event neither
  decodes nor rewrites the batch's history.
* **1**: every archived run in full under ``history``. Read as layout 2: ``past`` is derived
  from ``history`` (whose runs the ``runs`` table also holds); the row is written as layout
  2 by the batch's next change.

Fields added to a layout later are optional when read, so rows written before them load
with the model's defaults: a phase's ``command_event_id`` (``None``) and ``resends`` (0).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, TypeVar

from pipeline_state.errors import CorruptStateError
from pipeline_state.lifecycle import BatchStatus, PhaseStatus, RunStatus
from pipeline_state.model import BatchState, ItemRef, Past, PastRun, PhaseRun, Run

__all__ = [
    "RUN_SCHEMA_VERSION",
    "SCHEMA_VERSION",
    "UnreadableDocument",
    "decode_run",
    "decode_state",
    "encode_run",
    "encode_state",
]

SCHEMA_VERSION = 2
"""The layout number written into every batch document; bump it (and teach the decoder the
old layout) whenever the layout changes."""
READABLE_SCHEMAS = (1, 2)
RUN_SCHEMA_VERSION = 1
"""The layout number of an archived run's document (the ``runs`` table)."""

Document = dict[str, Any]
_T = TypeVar("_T")


class UnreadableDocument(str):
    """What the engine's lenient JSON reader returns for text that is not JSON.

    The store hands it to :func:`decode_state`, which reports it as corruption of the
    batch the row belongs to (the JSON reader itself cannot know the batch).
    """

    __slots__ = ()


class _Bad(Exception):
    """A problem inside a document; turned into CorruptStateError at the boundary."""


# -- encoding ------------------------------------------------------------------------------


def _time(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _ref(ref: ItemRef) -> list[str | None]:
    return [ref.item_id, ref.content_ref]


def _phase(phase: PhaseRun) -> Document:
    return {
        "name": phase.name,
        "depends_on": list(phase.depends_on),
        "status": phase.status.value,
        "deadline_seconds": phase.deadline_seconds,
        "dispatched_at": _time(phase.dispatched_at),
        "deadline_at": _time(phase.deadline_at),
        "finished_at": _time(phase.finished_at),
        "inputs": [_ref(r) for r in phase.inputs],
        "outputs": [_ref(r) for r in phase.outputs],
        "failed_essay_ids": list(phase.failed_item_ids),
        "error": phase.error,
        "command_event_id": phase.command_event_id,
        "resends": phase.resends,
    }


def _run(run: Run) -> Document:
    return {
        "run_id": run.run_id,
        "pipeline_name": run.pipeline_name,
        "correlation_id": run.correlation_id,
        "requested_by": run.requested_by,
        "accepted_at": _time(run.accepted_at),
        "final_step": run.final_step,
        "phases": [_phase(p) for p in run.phases],
        "pruned": list(run.pruned),
        "status": run.status.value,
        "completed_at": _time(run.completed_at),
        "is_retry": run.is_retry,
        "retry_reason": run.retry_reason,
        "plan": list(run.plan),
    }


def encode_state(state: BatchState) -> Document:
    """The JSON-compatible document of ``state`` (with ``schema``: :data:`SCHEMA_VERSION`)."""
    return {
        "schema": SCHEMA_VERSION,
        "batch_id": state.batch_id,
        "status": state.status.value,
        "version": state.version,
        "user_id": state.owner,
        "course_code": state.category,
        "expected_essay_count": state.expected_items,
        "essay_ids": list(state.item_ids),
        "created_at": _time(state.created_at),
        "updated_at": _time(state.updated_at),
        "org_id": state.org_id,
        "class_id": state.group_id,
        "language": state.language,
        "prompt_ref": state.prompt_ref,
        "essays": [_ref(r) for r in state.items],
        "active_run": None if state.active_run is None else _run(state.active_run),
        "past": _past(state.past),
    }


def _past(past: Past) -> Document:
    return {
        "runs": [[r.correlation_id, _time(r.accepted_at)] for r in past.runs],
        "recorded": [[name, [_ref(r) for r in refs]] for name, refs in past.recorded],
    }


def encode_run(run: Run) -> Document:
    """The JSON-compatible document of one archived run (with ``schema``)."""
    return {"schema": RUN_SCHEMA_VERSION, **_run(run)}


# -- decoding ------------------------------------------------------------------------------


def _get(doc: Mapping[str, Any], name: str, kind: type[_T]) -> _T:
    try:
        value = doc[name]
    except KeyError:
        raise _Bad(f"missing field {name!r}") from None
    # bool is an int subclass: never accept it where a number is expected, nor vice versa.
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise _Bad(f"field {name!r} should be {kind.__name__}, got {type(value).__name__}")
    return value


def _opt(doc: Mapping[str, Any], name: str, kind: type[_T]) -> _T | None:
    if doc.get(name) is None:
        if name not in doc:
            raise _Bad(f"missing field {name!r}")
        return None
    return _get(doc, name, kind)


def _number(doc: Mapping[str, Any], name: str) -> float | None:
    value = doc.get(name)
    if value is None:
        return _opt(doc, name, float)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Bad(f"field {name!r} should be a number, got {type(value).__name__}")
    return float(value)


def _parse_time(doc: Mapping[str, Any], name: str) -> datetime | None:
    text = _opt(doc, name, str)
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise _Bad(f"field {name!r} is not an ISO-8601 time: {text!r}") from None
    if value.tzinfo is None:
        raise _Bad(f"field {name!r} has no timezone: {text!r}")
    return value


def _req_time(doc: Mapping[str, Any], name: str) -> datetime:
    value = _parse_time(doc, name)
    if value is None:
        raise _Bad(f"field {name!r} must not be null")
    return value


def _strings(doc: Mapping[str, Any], name: str) -> tuple[str, ...]:
    items = _get(doc, name, list)
    if not all(isinstance(i, str) for i in items):
        raise _Bad(f"field {name!r} should hold strings")
    return tuple(items)


def _enum(doc: Mapping[str, Any], name: str, kind: Callable[[str], _T]) -> _T:
    value = _get(doc, name, str)
    try:
        return kind(value)
    except ValueError:
        raise _Bad(f"field {name!r} has an unknown value {value!r}") from None


def _refs(doc: Mapping[str, Any], name: str) -> tuple[ItemRef, ...]:
    out = []
    for item in _get(doc, name, list):
        if (
            not isinstance(item, list)
            or len(item) != 2
            or not isinstance(item[0], str)
            or not (item[1] is None or isinstance(item[1], str))
        ):
            raise _Bad(f"field {name!r} holds a malformed essay reference {item!r}")
        out.append(ItemRef(item[0], item[1]))
    return tuple(out)


def _object(value: object, what: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise _Bad(f"{what} should be an object, got {type(value).__name__}")
    return value


def _decode_phase(value: object) -> PhaseRun:
    doc = _object(value, "a phase")
    return PhaseRun(
        name=_get(doc, "name", str),
        depends_on=_strings(doc, "depends_on"),
        status=_enum(doc, "status", PhaseStatus),
        deadline_seconds=_number(doc, "deadline_seconds"),
        dispatched_at=_parse_time(doc, "dispatched_at"),
        deadline_at=_parse_time(doc, "deadline_at"),
        finished_at=_parse_time(doc, "finished_at"),
        inputs=_refs(doc, "inputs"),
        outputs=_refs(doc, "outputs"),
        failed_item_ids=_strings(doc, "failed_essay_ids"),
        error=_opt(doc, "error", str),
        # Added with phase re-sends (issue 11.4): rows written before lack them.
        command_event_id=_opt(doc, "command_event_id", str) if "command_event_id" in doc else None,
        resends=_get(doc, "resends", int) if "resends" in doc else 0,
    )


def _decode_run(value: object) -> Run:
    doc = _object(value, "a run")
    return Run(
        run_id=_get(doc, "run_id", str),
        pipeline_name=_get(doc, "pipeline_name", str),
        correlation_id=_get(doc, "correlation_id", str),
        requested_by=_get(doc, "requested_by", str),
        accepted_at=_req_time(doc, "accepted_at"),
        final_step=_get(doc, "final_step", str),
        phases=tuple(_decode_phase(p) for p in _get(doc, "phases", list)),
        pruned=_strings(doc, "pruned"),
        status=_enum(doc, "status", RunStatus),
        completed_at=_parse_time(doc, "completed_at"),
        is_retry=_get(doc, "is_retry", bool),
        retry_reason=_opt(doc, "retry_reason", str),
        plan=_strings(doc, "plan"),
    )


def _check_schema(doc: Mapping[str, Any], readable: tuple[int, ...] = READABLE_SCHEMAS) -> int:
    schema = doc.get("schema")
    if schema not in readable or isinstance(schema, bool):
        known = ", ".join(map(str, readable))
        raise _Bad(f"unknown schema version {schema!r} (this version reads {known})")
    return int(schema)


def _decode_past(doc: Mapping[str, Any], schema: int) -> Past:
    if schema == 1:  # layout 1: the archived runs in full
        return Past.of(tuple(_decode_run(r) for r in _get(doc, "history", list)))
    past = _object(doc.get("past"), "past")
    runs = []
    for entry in _get(past, "runs", list):
        if not isinstance(entry, list) or len(entry) != 2 or not isinstance(entry[0], str):
            raise _Bad("past runs must be [correlation_id, accepted_at] pairs")
        runs.append(PastRun(entry[0], _req_time({"accepted_at": entry[1]}, "accepted_at")))
    recorded = []
    for entry in _get(past, "recorded", list):
        if not isinstance(entry, list) or len(entry) != 2 or not isinstance(entry[0], str):
            raise _Bad("past recorded outputs must be [phase, items] pairs")
        recorded.append((entry[0], _refs({"items": entry[1]}, "items")))
    return Past(tuple(runs), tuple(recorded))


def decode_state(batch_id: str, document: object) -> BatchState:
    """The :class:`BatchState` stored in ``document`` for ``batch_id``.

    Raises :class:`~pipeline_state.errors.CorruptStateError` (naming ``batch_id``) when the
    document is not a JSON object of a known schema version with every field well-typed, or
    when it describes another batch.
    """
    try:
        if isinstance(document, UnreadableDocument):
            raise _Bad("the stored document is not valid JSON")
        doc = _object(document, "the stored document")
        schema = _check_schema(doc)
        active = doc.get("active_run")
        state = BatchState(
            batch_id=_get(doc, "batch_id", str),
            status=_enum(doc, "status", BatchStatus),
            version=_get(doc, "version", int),
            owner=_get(doc, "user_id", str),
            category=_get(doc, "course_code", str),
            expected_items=_get(doc, "expected_essay_count", int),
            item_ids=_strings(doc, "essay_ids"),
            created_at=_req_time(doc, "created_at"),
            updated_at=_req_time(doc, "updated_at"),
            org_id=_opt(doc, "org_id", str),
            group_id=_opt(doc, "class_id", str),
            language=_get(doc, "language", str),
            prompt_ref=_opt(doc, "prompt_ref", str),
            items=_refs(doc, "essays"),
            active_run=None if active is None else _decode_run(active),
            past=_decode_past(doc, schema),
        )
    except _Bad as exc:
        raise CorruptStateError(batch_id, str(exc)) from None
    if state.batch_id != batch_id:
        raise CorruptStateError(batch_id, f"the document describes batch {state.batch_id!r}")
    return state


def decode_run(batch_id: str, document: object) -> Run:
    """The archived :class:`Run` stored in ``document``; errors name ``batch_id``."""
    try:
        if isinstance(document, UnreadableDocument):
            raise _Bad("the stored run document is not valid JSON")
        doc = _object(document, "the stored run document")
        _check_schema(doc, (RUN_SCHEMA_VERSION,))
        return _decode_run(doc)
    except _Bad as exc:
        raise CorruptStateError(batch_id, str(exc)) from None
