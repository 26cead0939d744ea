"""The stored form of batch state: a versioned JSON document, encoded and decoded by cattrs.

:func:`encode_state` turns a :class:`~pipeline_state.model.BatchState` into a
JSON-compatible ``dict`` carrying a ``schema`` field; :func:`decode_state` turns it back.
Archived runs are stored in the same layout (:func:`encode_run`, :func:`decode_run`). A
document that is not valid JSON, lacks a field, holds a wrong type or carries a schema
number this release cannot read raises :class:`~pipeline_state.errors.CorruptStateError`
naming the batch.

The layout is the model's attrs classes with three differences (:data:`STATE_LAYOUT`):

* the stored keys keep the names the state had before it was renamed into generic words
  (``user_id`` for :attr:`~pipeline_state.model.BatchState.owner`, ``essays`` for
  ``items``...), so rows written by earlier releases load;
* an :class:`~pipeline_state.model.ItemRef` is stored as the pair ``[item_id, content_ref]``;
* every field must be present except a phase's ``command_event_id`` and ``resends``,
  added to layout 1 later: rows written before them load with the model's defaults.

A change of layout gets a new schema number and an upgrade step in :data:`STATE_SCHEMA`
(see ``docs/stored-state.md``); ``tests/golden/test_golden_stored.py`` checks that rows
written by an earlier release still load, write back unchanged and decide the same.
"""

from __future__ import annotations

from cattrs import Converter

from pipeline_state.documents import Document, DocumentCodec, Invalid, Layout, Schema
from pipeline_state.errors import CorruptStateError
from pipeline_state.model import BatchState, ItemRef, PhaseRun, Run

__all__ = [
    "SCHEMA_VERSION",
    "STATE_LAYOUT",
    "STATE_SCHEMA",
    "UnreadableDocument",
    "decode_run",
    "decode_state",
    "encode_run",
    "encode_state",
]

STATE_SCHEMA = Schema(version=1)
"""The layout number written into every state and run document, and the upgrade steps
from older layouts (none yet)."""

SCHEMA_VERSION = STATE_SCHEMA.version
"""The layout number written into every document."""


class UnreadableDocument(str):
    """What the engine's lenient JSON reader returns for text that is not JSON.

    The store hands it to :func:`decode_state`, which reports it as corruption of the
    batch the row belongs to (the JSON reader itself cannot know the batch).
    """

    __slots__ = ()


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
    # Added to layout 1 with phase re-sends (issue 11.4): rows written before lack them.
    optional={PhaseRun: frozenset({"command_event_id", "resends"})},
    hooks=(_item_refs_as_pairs,),
)
"""How the state's classes are laid out in a stored document (see the module doc)."""

_STATE = DocumentCodec(BatchState, layout=STATE_LAYOUT, schema=STATE_SCHEMA)
_RUN = DocumentCodec(Run, layout=STATE_LAYOUT, schema=STATE_SCHEMA, what="the stored run document")


def encode_state(state: BatchState) -> Document:
    """The JSON-compatible document of ``state`` (with ``schema``: :data:`SCHEMA_VERSION`)."""
    return _STATE.encode(state)


def encode_run(run: Run) -> Document:
    """The JSON-compatible document of one archived run (with ``schema``)."""
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
