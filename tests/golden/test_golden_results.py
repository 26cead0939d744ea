"""Golden results rows (issue 14, point 5): the read-model documents an earlier release wrote
to the results store load unchanged in this one, this release writes the same documents for
the same inputs, and a batch restored from a stored document handles its next input as that
release did.

``data/results/<scenario>.jsonl`` holds one line per input of the results projection, with
what handling said and the document of every batch it changed, as written by the release
named in the header (see :mod:`tests.golden.results`).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import attrs
import pytest

from pipeline_state.profiles.huleedu.results.codec import batch_from_document, batch_to_document
from pipeline_state.profiles.huleedu.results.ports import ResultsChange
from tests.golden.record import load_lines
from tests.golden.results import RESULTS_DIR, RESULTS_SCENARIOS, ResultsDriver, results_lines

Line = dict[str, Any]


def _recorded(name: str) -> tuple[Line, list[Line]]:
    header, *lines = load_lines(RESULTS_DIR / f"{name}.jsonl")
    return header, lines


def test_every_results_scenario_is_recorded_with_documents() -> None:
    for name in RESULTS_SCENARIOS:
        header, lines = _recorded(name)
        assert header["scenario"] == name
        assert header["written_by"], name
        assert sum(len(line["documents"]) for line in lines) >= 5, name
    results = {line["result"] for name in RESULTS_SCENARIOS for line in _recorded(name)[1]}
    assert {"applied", "unchanged", "duplicate"} <= results
    announced = [line for name in RESULTS_SCENARIOS for line in _recorded(name)[1] if line["announced"]]
    assert len(announced) >= 5


@pytest.mark.parametrize("name", RESULTS_SCENARIOS)
def test_results_documents_load_and_write_back_unchanged(name: str) -> None:
    for index, line in enumerate(_recorded(name)[1]):
        for batch_id, document in line["documents"].items():
            batch = batch_from_document(document, version=3)
            assert (batch.batch_id, batch.version) == (batch_id, 3)
            again = batch_to_document(batch)
            assert again == document, f"{name} input {index} {batch_id}"
            # The same text too: the store writes the document's keys in this order.
            assert json.dumps(again) == json.dumps(document), f"{name} input {index} {batch_id}"


@pytest.mark.parametrize("name", RESULTS_SCENARIOS)
async def test_this_release_writes_the_results_documents_recorded(name: str) -> None:
    _, lines = _recorded(name)
    assert await results_lines(name) == lines


def _batch_of(line: Line) -> str:
    data = line["message"]["data"]
    return str(data.get("batch_id") or data["entity_id"])


def _restorable(name: str) -> list[tuple[Line, Line, Line]]:
    """(document before, input line, document after) for each input to a batch that has a
    stored document before it. Duplicates are left out: the inbox decides those."""
    found = []
    latest: dict[str, Line] = {}
    for line in _recorded(name)[1]:
        batch_id = _batch_of(line)
        before = latest.get(batch_id)
        latest.update(line["documents"])
        if before is not None and line["result"] != "duplicate":
            found.append((before, line, latest[batch_id]))
    return found


def test_there_are_restorable_results_inputs_to_check() -> None:
    assert sum(len(_restorable(name)) for name in RESULTS_SCENARIOS) >= 40


@pytest.mark.parametrize("name", RESULTS_SCENARIOS)
async def test_a_batch_restored_from_a_results_document_handles_as_recorded(name: str) -> None:
    for before, line, after in _restorable(name):
        driver = ResultsDriver()
        batch = batch_from_document(before, version=1, updated_at=datetime.fromisoformat(line["clock"]))
        await driver.store.commit(ResultsChange(batch.batch_id, None, batch, batch.updated_at))
        said = await driver.handle(line)
        where = f"{name} {batch.batch_id} at {line['clock']}"
        assert said == {"result": line["result"], "announced": line["announced"]}, where
        now = await driver.store.load(batch.batch_id)
        assert now is not None
        assert batch_to_document(now) == after, where
        assert now.version == (1 if line["result"] == "unchanged" else 2), where
        assert attrs.evolve(now, version=0) == batch_from_document(after), where
