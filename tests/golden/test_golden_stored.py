"""Golden stored rows (issue 14, point 5): the documents an earlier release wrote to the SQL
store load unchanged in this one, and a batch restored from one decides its next input as
that release did.

``data/stored/<scenario>.jsonl`` holds, for the demo's story and the directed stories, the
document of each batch after each step, as written by the release named in its header (see
:mod:`tests.golden.stored`). They were recorded before the engine's state was renamed into
generic words (``items``, ``owner``, ``group_id``...), so these tests are what shows that the
stored field names did not move.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from pipeline_state_sql.codec import decode_state, encode_state

from pipeline_state.model import BatchState
from pipeline_state.ports import Change
from tests.golden.record import DATA_DIR, Driver, load_lines
from tests.golden.stored import STORED_DIR, STORED_SCENARIOS, documents_after_each_step, scenario_lines

Row = dict[str, Any]


def _stored(name: str) -> tuple[Row, list[Row]]:
    lines = [json.loads(line) for line in (STORED_DIR / f"{name}.jsonl").read_text().splitlines()]
    return lines[0], lines[1:]


def test_every_stored_scenario_is_recorded_by_an_earlier_release() -> None:
    for name in STORED_SCENARIOS:
        header, rows = _stored(name)
        assert header["scenario"] == name
        assert header["written_by"], name
        assert rows, name


@pytest.mark.parametrize("name", STORED_SCENARIOS)
def test_stored_rows_load_and_write_back_unchanged(name: str) -> None:
    _, rows = _stored(name)
    for row in rows:
        state = decode_state(row["batch_id"], row["document"])
        assert encode_state(state) == row["document"], f"{name} step {row['step']} {row['batch_id']}"


@pytest.mark.parametrize("name", STORED_SCENARIOS)
async def test_this_release_writes_the_rows_the_recording_release_wrote(name: str) -> None:
    _, rows = _stored(name)
    assert await documents_after_each_step(name) == rows


def _restorable(result: Row) -> bool:
    """A step whose outcome depends only on its batch's row: not a duplicate (the inbox
    decides those), nothing deferred or resumed (the waiting set does), no error."""
    label = result.get("label", "")
    return (
        bool(label)
        and label != "duplicate"
        and not label.startswith("deferred")
        and not result.get("resumed")
    )


def _restorable_steps(name: str) -> list[tuple[Row, Row, Row, Row, Row]]:
    """(header, previous row, step, its recorded result line, next row) for each delivery of
    one message to a batch that has a stored row before and after it."""
    header, steps = scenario_lines(name)
    recorded = [line for line in load_lines(DATA_DIR / f"{name}.jsonl")[1:] if "op" in line]
    _, rows = _stored(name)
    found = []
    for index, step in enumerate(steps):
        if step["op"] != "deliver" or not _restorable(recorded[index]["result"]):
            continue
        batch_id = step["message"].get("data", {}).get("batch_id")
        before = [r for r in rows if r["batch_id"] == batch_id and r["step"] < index]
        after = [r for r in rows if r["batch_id"] == batch_id and r["step"] <= index]
        if before and after:
            found.append((header, before[-1], step, recorded[index], after[-1]))
    return found


def test_there_are_restorable_steps_to_check() -> None:
    assert sum(len(_restorable_steps(name)) for name in STORED_SCENARIOS) >= 20


async def replay_from_stored_rows(
    name: str, decode: Callable[[str, Row], BatchState]
) -> list[tuple[str, Row, BatchState]]:
    """For each restorable step of ``name``: a fresh runtime holding only the batch decoded
    (by ``decode``) from its row before the step plays the step, which must give the recorded
    result and messages. Returns (where, the row after the step, the batch's state now)."""
    played = []
    for header, before, step, recorded, after in _restorable_steps(name):
        driver = Driver(header["profile"])
        state = decode(before["batch_id"], before["document"])
        await driver.rt.store.commit(Change(state.batch_id, None, state, state.updated_at))
        line = await driver.step(step)
        where = f"{name} step {after['step']} ({before['batch_id']})"
        assert line["result"] == recorded["result"], where
        assert line["out"] == recorded["out"], where
        now = await driver.rt.store.load(state.batch_id)
        assert now is not None
        played.append((where, after, now))
    return played


@pytest.mark.parametrize("name", STORED_SCENARIOS)
async def test_a_batch_restored_from_a_stored_row_decides_as_recorded(name: str) -> None:
    for where, after, now in await replay_from_stored_rows(name, decode_state):
        assert encode_state(now) == after["document"], where
