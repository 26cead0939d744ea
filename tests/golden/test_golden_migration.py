"""A change of stored layout, played on the golden rows (issue 14, point 5): how a later release
moves the state documents to a new layout without losing a row of an older one.

The real moves from layout 1 to 2 (the archived runs out of the document, ``past`` in), from 2
to 3 (``past`` lists the runs' ids), from 3 to 4 (``past`` counts them instead) and from 4 to 5
(``past`` keeps the ids outcomes and reports answered runs under) are checked by
``test_golden_stored.py``. The change shown here is the made-up one ``docs/stored-state.md``
walks through: layout 6 stores the batch's items under ``items`` and each item reference as an
object ``{"item_id": ..., "content_ref": ...}`` instead of the pair ``[item_id, content_ref]``.
The release makes it with two edits, both copied below: a new :data:`LAYOUT_6` (the renamed key
dropped from the renames, the pair hook dropped) and a :data:`SCHEMA_6` whose step 5 rewrites a
layout-5 document (steps 1 to 4 stay). Every golden row, of any layout, must then decode to the
same state through the layout-6 codec, and a batch restored from one must decide its next input
as recorded.
"""

from __future__ import annotations

import copy
from typing import Any

import attrs
import pytest
from pipeline_state_sql.codec import STATE_LAYOUT, STATE_SCHEMA, decode_state, encode_state

from pipeline_state._model import BatchState
from pipeline_state.documents import Document, DocumentCodec, Schema
from tests.golden.stored import LAYOUTS, STORED_SCENARIOS
from tests.golden.test_golden_stored import _migrated, _stored, replay_from_stored_rows


def _refs_as_objects(refs: list[list[Any]]) -> list[dict[str, Any]]:
    return [{"item_id": item_id, "content_ref": content_ref} for item_id, content_ref in refs]


def items_as_objects(doc: Document) -> Document:
    """Step 5 -> 6: ``essays`` becomes ``items``; every item reference becomes an object."""
    doc["items"] = _refs_as_objects(doc.pop("essays"))
    for run in [doc["active_run"]] if doc["active_run"] is not None else []:
        for phase in run["phases"]:
            phase["inputs"] = _refs_as_objects(phase["inputs"])
            phase["outputs"] = _refs_as_objects(phase["outputs"])
    return doc


SCHEMA_6 = Schema(version=6, upgrades={**STATE_SCHEMA.upgrades, STATE_SCHEMA.version: items_as_objects})
LAYOUT_6 = attrs.evolve(
    STATE_LAYOUT,
    renames={
        **STATE_LAYOUT.renames,
        BatchState: {k: v for k, v in STATE_LAYOUT.renames[BatchState].items() if k != "items"},
    },
    # ``past`` and the statuses keep their own form; item references change
    hooks=STATE_LAYOUT.hooks[1:],
)
STATE_6 = DocumentCodec(BatchState, layout=LAYOUT_6, schema=SCHEMA_6)


def _without_times(state: BatchState) -> BatchState:
    """``state`` without its acceptance times."""
    return attrs.evolve(state, past=attrs.evolve(state.past, accepted=()))


def test_the_current_release_writes_layout_5_and_layout_6_is_new() -> None:
    assert STATE_SCHEMA.version == 5
    assert SCHEMA_6.oldest == 1


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("name", STORED_SCENARIOS)
def test_stored_rows_decode_to_the_same_state_through_layout_6(name: str, layout: int) -> None:
    _, rows = _stored(name, layout)
    for row in rows:
        where = f"layout {layout}: {name} step {row['step']} {row['batch_id']}"
        kept = copy.deepcopy(row["document"])
        state = STATE_6.decode(row["document"], row["batch_id"])
        assert row["document"] == kept, f"{where}: the stored row was changed"
        assert state == decode_state(row["batch_id"], row["document"]), where
        # Written back in layout 6, and read back from it, still the same state.
        written = STATE_6.encode(state)
        assert written["schema"] == 6, where
        assert "essays" not in written, where
        assert all(set(ref) == {"item_id", "content_ref"} for ref in written["items"]), where
        assert STATE_6.decode(written, row["batch_id"]) == state, where
        # The current layout's document of the same state is the stored row, migrated.
        assert encode_state(state) == _migrated(row["document"]), where


def test_layout_5_is_really_different() -> None:
    _, rows = _stored("directed-fan-in-and-pruning", 5)
    row = next(r for r in rows if r["document"]["active_run"] and r["document"]["essays"])
    state = decode_state(row["batch_id"], row["document"])
    written = STATE_6.encode(state)
    phase = written["active_run"]["phases"][0]
    assert phase["inputs"]
    assert isinstance(phase["inputs"][0], dict)
    assert written["items"][0] == {
        "item_id": state.items[0].item_id,
        "content_ref": state.items[0].content_ref,
    }


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("name", STORED_SCENARIOS)
async def test_a_batch_restored_through_layout_6_decides_as_recorded(name: str, layout: int) -> None:
    played = await replay_from_stored_rows(name, layout, lambda batch_id, doc: STATE_6.decode(doc, batch_id))
    for where, after, now in played:
        expected = STATE_6.decode(after["document"], after["batch_id"])
        # A decision keeps only the acceptance times the profile's rate limits count; a row
        # migrated from layout 1 keeps them all: the kept ones are the latest.
        kept, wanted = now.past.accepted, expected.past.accepted
        assert kept == wanted[len(wanted) - len(kept) :] if kept else True, where
        if layout < 5:  # the row did not keep the aliases (past.answered, past.reported)
            now = attrs.evolve(now, past=attrs.evolve(now.past, answered=(), reported=()))
        assert _without_times(now) == _without_times(expected), where
