"""The stored form of batch state: a versioned JSON document, encoded and decoded by cattrs.

:func:`encode_state` turns a :class:`~pipeline_state._model.BatchState` into a
JSON-compatible ``dict`` carrying a ``schema`` field; :func:`decode_state` turns it back.
Archived runs are stored one row each, in the run layout (:func:`encode_run`,
:func:`decode_run`, :data:`RUN_SCHEMA`). A document that is not valid JSON, lacks a field,
holds a wrong type or carries a schema number this release cannot read raises
:class:`~pipeline_state.errors.CorruptStateError` naming the batch.

Layouts of the batch document (:data:`STATE_SCHEMA`):

* **4** (written now): ``past`` keeps how many runs the batch archived (``count``), not their
  ids: the ``runs`` table holds each run's id and correlation id, and the service looks them
  up there for the rare input whose decision asks about them
  (:func:`~pipeline_state._decide.asks_archived_ids`), so an event on a batch with a long
  history reads and writes a document of the same size as on a new one. A layout-3 row reads
  through :func:`runs_counted`;
* **3**: as layout 2, and ``past`` also listed each archived run's key
  (:func:`~pipeline_state._model.run_key`). A layout-2 row reads through
  :func:`runs_remembered` with no keys;
* **2**: no archived run in the document. ``past`` held what decisions keep of them
  (:class:`~pipeline_state._model.Past`): every run's correlation id, the acceptance times
  the profile's rate limits need and, per phase completed earlier, its latest outputs;
* **1**: every archived run in full under ``history``. Read through the upgrade steps
  :func:`past_from_history` (the ``runs`` table holds those runs too),
  :func:`runs_remembered` and :func:`runs_counted`; the row is written in layout 4 by the
  batch's next change.

The layout is the model's attrs classes with these differences (:data:`STATE_LAYOUT`):

* the stored keys keep the names the state had before it was renamed into generic words
  (``user_id`` for :attr:`~pipeline_state._model.BatchState.owner`, ``essays`` for
  ``items``...), so rows written by earlier releases load;
* a :class:`~pipeline_state._lifecycle.BatchStatus` is stored under the value it had when
  it was first stored (:func:`stored_status`: the two group-validation states keep the
  shipped profile's words, as the ``status`` column does), and reads from either;
* an :class:`~pipeline_state._model.ItemRef` is stored as the pair ``[item_id, content_ref]``;
* :class:`~pipeline_state._model.Past` is stored as ``{"count": N, "accepted": [...],
  "recorded": [[phase, [item references]]...]}``, nothing else (its lists of ids are not
  stored);
* :attr:`~pipeline_state._model.BatchState.history` is not stored (only shown);
* every field must be present except a phase's ``command_event_id`` and ``resends``,
  added to layout 1 later: rows written before them load with the model's defaults.

A change of layout gets a new schema number and an upgrade step in :data:`STATE_SCHEMA`
(see ``docs/stored-state.md``); ``tests/golden/test_golden_stored.py`` checks that rows
written by an earlier release still load, write back unchanged and decide the same.
"""

from __future__ import annotations

import json
from datetime import datetime

from cattrs import Converter

from pipeline_state._lifecycle import PHASE_DONE, BatchStatus
from pipeline_state._model import (
    ALIASES_KEPT,
    RUN_KEY_LENGTH,
    BatchState,
    ItemRef,
    Past,
    PhaseRun,
    Run,
    run_key,
)
from pipeline_state._wire import is_id_text
from pipeline_state.documents import Document, DocumentCodec, Invalid, Layout, Schema
from pipeline_state.errors import CorruptStateError

__all__ = [
    "RUN_SCHEMA",
    "SCHEMA_VERSION",
    "STATE_LAYOUT",
    "STATE_SCHEMA",
    "EncodedDocument",
    "UnreadableDocument",
    "decode_run",
    "decode_state",
    "document_text",
    "encode_run",
    "encode_state",
    "past_from_history",
    "state_text",
    "stored_status",
]

_DONE = frozenset(status.value for status in PHASE_DONE)


def _phase_text(phase: dict[str, object], field: str, index: int) -> str:
    """The text field ``field`` of an archived phase of the run at ``history[index]``."""
    value = phase.get(field)
    if type(value) is not str:
        raise Invalid(
            f"field {field!r} should be str, got {type(value).__name__} (at history[{index}].phases)"
        )
    return value


def past_from_history(document: Document) -> Document:
    """Layout 1 -> 2: the archived runs under ``history`` become their summary, ``past``
    (every run's correlation id and acceptance time, in order; per phase completed in them,
    the outputs of its latest successful execution, a phase completed again moving last).
    Raises :class:`~pipeline_state.documents.Invalid` naming what a malformed history lacks."""
    if "history" not in document:
        raise Invalid("missing field 'history'")
    history = document.pop("history")
    if type(history) is not list:
        raise Invalid(f"field 'history' should be list, got {type(history).__name__}")
    recorded: dict[str, object] = {}
    for index, run in enumerate(history):
        phases = run.get("phases") if type(run) is dict else None
        if type(phases) is not list:
            raise Invalid(
                f"field 'phases' should be list, got {type(phases).__name__} (at history[{index}].phases)"
            )
        for phase in phases:
            if type(phase) is not dict:
                continue
            status, name = _phase_text(phase, "status", index), _phase_text(phase, "name", index)
            if status in _DONE:
                recorded.pop(name, None)  # re-inserted: the order says which came last
                recorded[name] = phase.get("outputs")
    document["past"] = {
        "correlations": [run.get("correlation_id") for run in history],
        "accepted": [run.get("accepted_at") for run in history],
        "recorded": [[name, outputs] for name, outputs in recorded.items()],
        "runs": _run_keys(history),  # kept for layout 3 (see runs_remembered)
    }
    return document


def _run_keys(history: list[object]) -> str:
    """The keys (:func:`~pipeline_state._model.run_key`) of a layout-1 history's runs, as
    layout 3 stores them."""
    keys = []
    for index, run in enumerate(history):
        run_id = run.get("run_id") if type(run) is dict else None
        if type(run_id) is not str:
            raise Invalid(f"field 'run_id' should be str, got {type(run_id).__name__} (at history[{index}])")
        keys.append(run_key(run_id))
    return ",".join(keys)


def runs_remembered(document: Document) -> Document:
    """Layout 2 -> 3: the summary ``past`` also lists the archived runs' keys (``runs``, one
    string, comma-separated: :func:`~pipeline_state._model.run_key` of each id), so a
    run-starting request delivered again after the inbox purge is known. A layout-2 row did
    not keep them: its runs archived by then are not listed (a row upgraded from layout 1
    has them, taken from its history). Raises :class:`~pipeline_state.documents.Invalid`
    when ``past`` is not an object."""
    past = document.get("past")
    if type(past) is not dict:
        raise Invalid(f"field 'past' should be dict, got {type(past).__name__}")
    past.setdefault("runs", "")
    return document


def runs_counted(document: Document) -> Document:
    """Layout 3 -> 4: the summary ``past`` keeps how many runs the batch archived
    (``count``) instead of their correlation ids and keys: the ``runs`` table holds both,
    and every event rewrote them. Raises :class:`~pipeline_state.documents.Invalid` when
    ``past`` or its lists are malformed (keys of 1 to 16 characters, at most as many as
    correlation ids: a row upgraded from layout 2 had none, and the runs it archived after
    that upgrade added theirs one by one)."""
    past = document.get("past")
    if type(past) is not dict:
        raise Invalid(f"field 'past' should be dict, got {type(past).__name__}")
    correlations, runs = past.pop("correlations", None), past.pop("runs", None)
    if type(correlations) is not list or any(type(item) is not str for item in correlations):
        raise Invalid("field 'correlations' should be a list of str (at past.correlations)")
    if type(runs) is not str:
        raise Invalid(f"field 'runs' should be str, got {type(runs).__name__} (at past.runs)")
    keys = runs.split(",") if runs else []
    if any(not 0 < len(key) <= RUN_KEY_LENGTH for key in keys):
        raise Invalid(f"field 'runs' should hold keys of 1 to {RUN_KEY_LENGTH} characters (at past.runs)")
    if len(keys) > len(correlations):
        raise Invalid(f"field 'runs' holds {len(keys)} keys for {len(correlations)} runs (at past.runs)")
    past["count"] = len(correlations)
    return document


def aliases_kept(document: Document) -> Document:
    """Layout 4 -> 5: the summary ``past`` also keeps ``answered`` (``[run key, correlation
    id]`` of outcomes applied to a run under another correlation id) and ``reported`` (the
    run keys of operator reports applied to an active run's phase); a layout-4 row knew none
    (:class:`~pipeline_state._model.Past`). Raises :class:`~pipeline_state.documents.Invalid`
    when ``past`` is not an object."""
    past = document.get("past")
    if type(past) is not dict:
        raise Invalid(f"field 'past' should be dict, got {type(past).__name__}")
    if "answered" in past or "reported" in past:
        raise Invalid("a layout-4 row holds no 'answered' or 'reported' (at past)")
    past.update(answered=[], reported=[])
    return document


STATE_SCHEMA = Schema(
    version=5, upgrades={1: past_from_history, 2: runs_remembered, 3: runs_counted, 4: aliases_kept}
)
"""The layout number written into every batch document, and the upgrade steps from older
layouts."""

SCHEMA_VERSION = STATE_SCHEMA.version
"""The layout number written into every batch document."""

RUN_SCHEMA = Schema(version=1)
"""The layout number of an archived run's document (the ``runs`` table)."""


class EncodedDocument(str):
    """A document's JSON text, encoded already: the engine's JSON serializer
    (:func:`~pipeline_state_sql.engine.dumps`) stores it as it is."""

    __slots__ = ()


def document_text(value: object) -> str:
    """The stored JSON text of a document: compact, non-ASCII characters kept."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


class UnreadableDocument(str):
    """What the engine's lenient JSON reader returns for text that is not JSON.

    The store hands it to :func:`decode_state`, which reports it as corruption of the
    batch the row belongs to (the JSON reader itself cannot know the batch).
    """

    __slots__ = ()


_STORED_STATUS: dict[BatchStatus, str] = {
    BatchStatus.AWAITING_GROUP_VALIDATION: "awaiting_student_validation",
    BatchStatus.GROUP_VALIDATION_COMPLETED: "student_validation_completed",
}
"""Batch statuses whose stored value is not the engine's: the value rows have held since
the first release (before the engine spoke in generic words)."""

_STATUS_OF_STORED: dict[str, BatchStatus] = {
    **{status.value: status for status in BatchStatus},
    **{stored: status for status, stored in _STORED_STATUS.items()},
}


def stored_status(status: BatchStatus) -> str:
    """The value ``status`` is stored under (in documents and the ``status`` column)."""
    return _STORED_STATUS.get(status, status.value)


def _status(value: object, _: object) -> BatchStatus:
    found = _STATUS_OF_STORED.get(value) if isinstance(value, str) else None
    if found is None:
        raise Invalid(f"has an unknown value {value!r}")
    return found


def _statuses_as_stored(converter: Converter) -> None:
    converter.register_structure_hook(BatchStatus, _status)
    converter.register_unstructure_hook(BatchStatus, stored_status)


def _item_ref(value: object, _: object) -> ItemRef:
    if (
        type(value) is not list
        or len(value) != 2
        or not isinstance(value[0], str)
        or not (value[1] is None or isinstance(value[1], str))
    ):
        raise Invalid(f"holds a malformed essay reference {value!r}")
    return ItemRef(value[0], value[1])


def _pairs(refs: tuple[ItemRef, ...]) -> list[list[str | None]]:
    return [[ref.item_id, ref.content_ref] for ref in refs]


def _item_refs_as_pairs(converter: Converter) -> None:
    converter.register_structure_hook(ItemRef, _item_ref)
    converter.register_unstructure_hook(ItemRef, lambda ref: [ref.item_id, ref.content_ref])
    converter.register_unstructure_hook_func(lambda kind: kind == tuple[ItemRef, ...], _pairs)


_PAST_FIELDS = frozenset({"count", "accepted", "recorded", "answered", "reported"})


def _past_by_hand(converter: Converter) -> None:
    """``past`` read and written by hand, whatever the layout does with item references
    elsewhere: ``{"count": N, "accepted": [...], "recorded": [[phase, [[item_id,
    content_ref]...]]...], "answered": [[run_key, correlation_id]...], "reported":
    [run_key...]}``."""
    read_time = converter.get_structure_hook(datetime)

    def times(value: object) -> tuple[datetime, ...]:
        if type(value) is not list:
            raise Invalid(f"field 'accepted' should be list, got {type(value).__name__} (at past.accepted)")
        out = []
        for index, item in enumerate(value):
            try:
                out.append(read_time(item, datetime))
            except Invalid as exc:
                raise Invalid(f"field 'accepted' {exc} (at past.accepted[{index}])") from None
        return tuple(out)

    def recorded(value: object, index: int) -> tuple[str, tuple[ItemRef, ...]]:
        if (
            type(value) is not list
            or len(value) != 2
            or type(value[0]) is not str
            or type(value[1]) is not list
        ):
            raise Invalid(f"holds a malformed recorded output {value!r} (at past.recorded[{index}])")
        try:
            return value[0], tuple(_item_ref(ref, None) for ref in value[1])
        except Invalid as exc:
            raise Invalid(f"{exc} (at past.recorded[{index}])") from None

    def structure(value: object, _: object) -> Past:
        if type(value) is not dict:
            raise Invalid(f"should be an object, got {type(value).__name__}")
        if set(value) != _PAST_FIELDS:
            raise Invalid(f"should hold the fields {sorted(_PAST_FIELDS)}, got {sorted(value)} (at past)")
        count, outputs = value["count"], value["recorded"]
        if type(count) is not int or count < 0:
            raise Invalid(f"field 'count' should be a count of runs, got {count!r} (at past.count)")
        if type(outputs) is not list:
            raise Invalid("field 'recorded' should be list (at past.recorded)")
        accepted = times(value["accepted"])
        if len(accepted) > count:
            raise Invalid(f"field 'accepted' holds {len(accepted)} times for {count} runs (at past.accepted)")
        return Past(
            count=count,
            accepted=accepted,
            recorded=tuple(recorded(entry, i) for i, entry in enumerate(outputs)),
            answered=tuple(
                (key, correlation) for key, correlation in _aliases(value["answered"], "answered", 2)
            ),
            reported=tuple(key for (key,) in _aliases(value["reported"], "reported", 1)),
        )

    converter.register_structure_hook(Past, structure)
    converter.register_unstructure_hook(
        Past,
        lambda past: {
            "count": past.count,
            "accepted": [moment.isoformat() for moment in past.accepted],
            "recorded": [[name, _pairs(refs)] for name, refs in past.recorded],
            "answered": [[key, correlation] for key, correlation in past.answered],
            "reported": list(past.reported),
        },
    )


def _aliases(value: object, field: str, width: int) -> list[tuple[str, ...]]:
    """The entries of ``past.answered`` (``width`` 2: ``[run key, correlation id]``) or
    ``past.reported`` (``width`` 1: a run key), at most
    :data:`~pipeline_state._model.ALIASES_KEPT` of them: a run key of 1 to 16 characters,
    a correlation id by the wire's rule (the engine keeps no other)."""
    if type(value) is not list or len(value) > ALIASES_KEPT:
        raise Invalid(f"field {field!r} should be a list of at most {ALIASES_KEPT} entries (at past.{field})")
    out = []
    for index, entry in enumerate(value):
        parts = entry if width > 1 and type(entry) is list else [entry]
        if (
            len(parts) != width
            or any(type(part) is not str for part in parts)
            or not 0 < len(parts[0]) <= RUN_KEY_LENGTH
            or not all(is_id_text(part) for part in parts)
        ):
            raise Invalid(f"holds a malformed entry {entry!r:.80} (at past.{field}[{index}])")
        out.append(tuple(parts))
    return out


STATE_LAYOUT = Layout(
    renames={
        BatchState: {
            "owner": "user_id",
            "category": "course_code",
            "expected_items": "expected_essay_count",
            "item_ids": "essay_ids",
            "group_id": "class_id",
            "items": "essays",
        },
        PhaseRun: {"failed_item_ids": "failed_essay_ids"},
    },
    # Shown only: the runs are in the history (the runs table), the state keeps ``past``.
    omit={BatchState: frozenset({"history"})},
    # Added to layout 1 with phase re-sends (issue 11.4): rows written before lack them.
    optional={PhaseRun: frozenset({"command_event_id", "resends"})},
    hooks=(_item_refs_as_pairs, _past_by_hand, _statuses_as_stored),
)
"""How the state's classes are laid out in a stored document (see the module doc)."""

_STATE = DocumentCodec(BatchState, layout=STATE_LAYOUT, schema=STATE_SCHEMA)
_RUN = DocumentCodec(Run, layout=STATE_LAYOUT, schema=RUN_SCHEMA, what="the stored run document")


def encode_state(state: BatchState) -> Document:
    """The JSON-compatible document of ``state`` (with ``schema``: :data:`SCHEMA_VERSION`)."""
    return _STATE.encode(state)


_TEXTS: dict[int, tuple[BatchState, EncodedDocument]] = {}
_TEXTS_KEPT = 256
_TEXTS_BYTES = 4 * 1024 * 1024
"""The memo's texts are a few seconds' worth of writes: 256 of them, and at most this much."""
_texts_bytes = 0


def state_text(state: BatchState) -> EncodedDocument:
    """The stored JSON text of ``state`` (:func:`encode_state`, then :func:`document_text`).

    The texts of the last states asked for are kept by identity (each with its state, so an
    id reused by a new object never matches): a store that wrote ``state`` asks again once
    the transaction committed, to remember the text it wrote, without encoding twice."""
    found = _TEXTS.get(id(state))
    if found is not None and found[0] is state:
        return found[1]
    global _texts_bytes
    text = EncodedDocument(document_text(encode_state(state)))
    if len(text) > _TEXTS_BYTES // 16:
        return text  # a large state is encoded again when asked again, not kept
    _TEXTS[id(state)] = (state, text)
    _texts_bytes += len(text)
    while len(_TEXTS) > _TEXTS_KEPT or _texts_bytes > _TEXTS_BYTES:
        _texts_bytes -= len(_TEXTS.pop(next(iter(_TEXTS)))[1])
    return text


def encode_run(run: Run) -> Document:
    """The JSON-compatible document of one archived run (with ``schema``: :data:`RUN_SCHEMA`)."""
    return _RUN.encode(run)


def decode_state(batch_id: str, document: object) -> BatchState:
    """The :class:`BatchState` stored in ``document`` for ``batch_id``.

    Raises :class:`~pipeline_state.errors.CorruptStateError` (naming ``batch_id``) when the
    document is not a JSON object of a known schema version with every field well-typed, or
    when it describes another batch.
    """
    if isinstance(document, UnreadableDocument):
        raise CorruptStateError(batch_id, "the stored document is not valid JSON")
    state = _STATE.decode(document, batch_id)
    if state.batch_id != batch_id:
        raise CorruptStateError(batch_id, f"the document describes batch {state.batch_id!r}")
    return state


def decode_run(batch_id: str, document: object) -> Run:
    """The archived :class:`Run` stored in ``document``; errors name ``batch_id``."""
    if isinstance(document, UnreadableDocument):
        raise CorruptStateError(batch_id, "the stored run document is not valid JSON")
    return _RUN.decode(document, batch_id)
