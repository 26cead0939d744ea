"""Golden stored rows (issue 14, point 5): the documents earlier releases wrote to the SQL
store load in this one, and a batch restored from one decides its next input as that
release did.

``data/stored/layout-<N>/<scenario>.jsonl`` holds, for the demo's story and the directed
stories, the document of each batch after each step, as written by the release named in its
header (see :mod:`tests.golden.stored`):

* layout 1, written by ``dc9d2c6``, before the engine's state was renamed into generic words
  (``items``, ``owner``, ``group_id``...): the stored field names did not move. Its documents
  carry every archived run in full (``history``); read now, they are migrated to layout 2 as
  the codec documents it, which :func:`_migrated` restates from the stored JSON alone;
* layout 2, whose ``past`` did not list the archived runs' ids: read, they get an empty
  list (``runs_remembered``);
* layout 3, whose ``past`` listed every archived run's correlation id and key: read, it
  keeps their count (``runs_counted``);
* layout 4, the current one: read and written back unchanged.

A batch restored from a row is restored with its archived runs (the ``runs`` table of the
deployment, which every layout had): a decision that asks about them reads them there.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from pipeline_state_sql.codec import SCHEMA_VERSION, decode_state, encode_state

from pipeline_state._model import BatchState, Run
from pipeline_state.ports import Change
from tests.golden.record import DATA_DIR, Driver, load_lines
from tests.golden.stored import (
    LAYOUTS,
    STORED_SCENARIOS,
    documents_after_each_step,
    layout_dir,
    scenario_lines,
)

Row = dict[str, Any]
DONE = ("completed_successfully", "completed_with_partial_success")


def _stored(name: str, layout: int) -> tuple[Row, list[Row]]:
    text = (layout_dir(layout) / f"{name}.jsonl").read_text()
    lines = [json.loads(line) for line in text.splitlines()]
    return lines[0], lines[1:]


def _migrated(document: Row, to: int = SCHEMA_VERSION) -> Row:
    """``document`` in layout ``to``. A layout-1 document keeps every field but ``history``,
    whose runs become their summary (correlation ids and acceptance times, in order) and the
    latest outputs of each phase they completed (a phase completed again moves last); in
    layout 3 the summary also lists the runs' ids, which a layout-2 document did not keep
    (an empty list); in layout 4 it counts the runs instead of listing their ids; layout 5
    adds the aliases a layout-4 document did not keep (empty lists)."""
    layout = document["schema"]
    if layout == to:
        return document
    if to == 5:
        base = _migrated(document, to=4)
        return {**base, "schema": 5, "past": {**base["past"], "answered": [], "reported": []}}
    if to == 4:
        base = _migrated(document, to=3) if layout < 3 else document
        past = base["past"]
        counted = {
            "count": len(past["correlations"]),
            "accepted": past["accepted"],
            "recorded": past["recorded"],
        }
        return {**base, "schema": 4, "past": counted}
    if layout == 2:
        assert to == 3
        return {**document, "schema": 3, "past": {**document["past"], "runs": ""}}
    assert layout == 1
    recorded: dict[str, Any] = {}
    for run in document["history"]:
        for phase in run["phases"]:
            if phase["status"] in DONE:
                recorded.pop(phase["name"], None)
                recorded[phase["name"]] = phase["outputs"]
    kept = {key: value for key, value in document.items() if key != "history"}
    past = {
        "correlations": [run["correlation_id"] for run in document["history"]],
        "accepted": [run["accepted_at"] for run in document["history"]],
        "recorded": [[name, outputs] for name, outputs in recorded.items()],
    }
    if to >= 3:  # each run's key: its id's first 16 characters without dashes, comma-separated
        past["runs"] = ",".join(run["run_id"].replace("-", "")[:16] for run in document["history"])
    return {**kept, "schema": to, "past": past}


def _same_keeping_fewer_times(
    written: Row, expected: Row, *, runs_known: bool = True, aliases_known: bool = True
) -> bool:
    """``written`` is ``expected`` except that its ``past.accepted`` may keep only the latest
    acceptance times (a decision keeps as many as the profile's rate limits count; a
    document migrated from layout 1 keeps them all). ``runs_known=False``: ``expected``
    comes from a layout-2 row, which did not keep the archived runs' ids, and ``past.runs``
    is not compared; ``aliases_known=False``: from a row older than layout 5, which did not
    keep ``past.answered`` and ``past.reported``."""
    if "past" not in written or "past" not in expected:
        return written == expected
    kept, wanted = written["past"]["accepted"], expected["past"]["accepted"]
    unknown = (() if runs_known else ("runs",)) + (() if aliases_known else ("answered", "reported"))

    def without_times(document: Row) -> Row:
        past = {k: v for k, v in document["past"].items() if k not in unknown}
        return {**document, "past": {**past, "accepted": None}}

    suffix = wanted[len(wanted) - len(kept) :] if kept else []
    return without_times(written) == without_times(expected) and kept == suffix


def test_the_current_layout_is_the_last_kept() -> None:
    assert LAYOUTS[-1] == SCHEMA_VERSION


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_stored_scenario_is_recorded_by_a_release(layout: int) -> None:
    for name in STORED_SCENARIOS:
        header, rows = _stored(name, layout)
        assert header["scenario"] == name
        assert header["written_by"], name
        assert rows, name
        assert {row["document"]["schema"] for row in rows} == {layout}, name


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("name", STORED_SCENARIOS)
def test_stored_rows_load_and_write_back_in_the_current_layout(name: str, layout: int) -> None:
    _, rows = _stored(name, layout)
    for row in rows:
        state = decode_state(row["batch_id"], row["document"])
        written = encode_state(state)
        where = f"layout {layout}: {name} step {row['step']} {row['batch_id']}"
        assert written == _migrated(row["document"]), where
        assert decode_state(row["batch_id"], written) == state, where


@pytest.mark.parametrize("name", STORED_SCENARIOS)
def test_the_layout_1_rows_migrate_to_the_rows_layout_2_was_recorded_with(name: str) -> None:
    _, old = _stored(name, 1)
    _, new = _stored(name, 2)
    assert [(row["step"], row["batch_id"]) for row in old] == [(row["step"], row["batch_id"]) for row in new]
    for before, after in zip(old, new, strict=True):
        where = f"{name} step {before['step']} {before['batch_id']}"
        assert _same_keeping_fewer_times(after["document"], _migrated(before["document"], to=2)), where


@pytest.mark.parametrize("name", STORED_SCENARIOS)
def test_the_layout_2_rows_migrate_to_the_layout_3_rows_but_for_the_run_ids(name: str) -> None:
    _, old = _stored(name, 2)
    _, new = _stored(name, 3)
    assert [(row["step"], row["batch_id"]) for row in old] == [(row["step"], row["batch_id"]) for row in new]
    for before, after in zip(old, new, strict=True):
        where = f"{name} step {before['step']} {before['batch_id']}"
        migrated = _migrated(before["document"], to=3)
        assert migrated["past"]["runs"] == "", where
        assert _same_keeping_fewer_times(after["document"], migrated, runs_known=False), where
        # Layout 3 lists every run archived: as many keys as correlation ids, all distinct.
        text = after["document"]["past"]["runs"]
        runs = text.split(",") if text else []
        assert len(runs) == len(set(runs)) == len(after["document"]["past"]["correlations"]), where


@pytest.mark.parametrize("name", STORED_SCENARIOS)
def test_the_layout_3_rows_migrate_to_the_layout_4_rows(name: str) -> None:
    """Layout 4 counts the archived runs instead of listing their ids; the rest is the
    layout-3 row as it was."""
    _, old = _stored(name, 3)
    _, new = _stored(name, 4)
    assert [(row["step"], row["batch_id"]) for row in old] == [(row["step"], row["batch_id"]) for row in new]
    for before, after in zip(old, new, strict=True):
        where = f"{name} step {before['step']} {before['batch_id']}"
        assert after["document"] == _migrated(before["document"], to=4), where
        assert after["document"]["past"]["count"] == len(before["document"]["past"]["correlations"]), where


@pytest.mark.parametrize("name", STORED_SCENARIOS)
def test_the_layout_4_rows_migrate_to_the_layout_5_rows_but_for_the_aliases(name: str) -> None:
    """Layout 5 keeps the ids outcomes and reports answered runs under (``past.answered``,
    ``past.reported``), which layout 4 did not: a layout-4 row upgrades with none, the rest
    is the layout-4 row as it was."""
    _, old = _stored(name, 4)
    _, new = _stored(name, 5)
    assert [(row["step"], row["batch_id"]) for row in old] == [(row["step"], row["batch_id"]) for row in new]
    for before, after in zip(old, new, strict=True):
        where = f"{name} step {before['step']} {before['batch_id']}"
        migrated = _migrated(before["document"])
        assert (migrated["past"]["answered"], migrated["past"]["reported"]) == ([], []), where
        aliases = {"answered": [], "reported": []}
        assert {**after["document"], "past": {**after["document"]["past"], **aliases}} == migrated, where


def test_a_recorded_mismatched_outcome_keeps_its_alias() -> None:
    """The directed story of denials and duplicates applies an outcome under a correlation
    id of no run (``correlation_mismatch``): from then on its batch's row keeps the pair."""
    _, rows = _stored("directed-denials-and-duplicates", 5)
    kept = [row["document"]["past"]["answered"] for row in rows if row["document"]["past"]["answered"]]
    assert kept, "no row keeps an alias"
    assert all(len(entry) == 2 for answered in kept for entry in answered)


@pytest.mark.parametrize("name", STORED_SCENARIOS)
async def test_this_release_writes_the_rows_of_the_current_layout(name: str) -> None:
    _, rows = _stored(name, SCHEMA_VERSION)
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


async def _archived_after_each_step(name: str) -> list[dict[str, tuple[Run, ...]]]:
    """Per step of ``name``: the archived runs of each batch after it (what the ``runs``
    table held, which changes only with the batch's row), from a play of the recording."""
    header, steps = scenario_lines(name)
    driver = Driver(header["profile"])
    after: list[dict[str, tuple[Run, ...]]] = []
    for step in steps:
        await driver.step(step)
        batches = await driver.rt.store.list_batches(limit=10_000)
        after.append({b.batch_id: tuple(await driver.rt.store.history(b.batch_id)) for b in batches})
    return after


def _restorable_steps(name: str, layout: int) -> list[tuple[Row, Row, Row, Row, Row]]:
    """(header, previous row, step, its recorded result line, next row) for each delivery of
    one message to a batch that has a stored row before and after it."""
    header, steps = scenario_lines(name)
    recorded = [line for line in load_lines(DATA_DIR / f"{name}.jsonl")[1:] if "op" in line]
    _, rows = _stored(name, layout)
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


@pytest.mark.parametrize("layout", LAYOUTS)
def test_there_are_restorable_steps_to_check(layout: int) -> None:
    assert sum(len(_restorable_steps(name, layout)) for name in STORED_SCENARIOS) >= 20


async def replay_from_stored_rows(
    name: str, layout: int, decode: Callable[[str, Row], BatchState]
) -> list[tuple[str, Row, BatchState]]:
    """For each restorable step of ``name``: a fresh runtime holding only the batch decoded
    (by ``decode``) from its row of ``layout`` before the step, and its archived runs, plays
    the step, which must give the recorded result and messages. Returns (where, the row
    after the step, the batch's state now)."""
    played = []
    archived = await _archived_after_each_step(name)
    for header, before, step, recorded, after in _restorable_steps(name, layout):
        driver = Driver(header["profile"])
        state = decode(before["batch_id"], before["document"])
        runs = archived[before["step"]][state.batch_id]
        await driver.rt.store.commit(Change(state.batch_id, None, state, state.updated_at, archived=runs))
        line = await driver.step(step)
        where = f"layout {layout}: {name} step {after['step']} ({before['batch_id']})"
        assert line["result"] == recorded["result"], where
        assert line["out"] == recorded["out"], where
        now = await driver.rt.store.load(state.batch_id)
        assert now is not None
        played.append((where, after, now))
    return played


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("name", STORED_SCENARIOS)
async def test_a_batch_restored_from_a_stored_row_decides_as_recorded(name: str, layout: int) -> None:
    for where, after, now in await replay_from_stored_rows(name, layout, decode_state):
        expected = _migrated(after["document"])
        assert _same_keeping_fewer_times(encode_state(now), expected, aliases_known=layout >= 5), where
