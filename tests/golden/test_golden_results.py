"""Golden results rows (issue 14, point 5): the read-model documents earlier releases wrote to
the results store load in this one, this release writes the same documents for the same
inputs, and a batch restored from a stored document handles its next input as that release
did.

``data/results/layout-<N>/<scenario>.jsonl`` holds one line per input of the results
projection, with what handling said and the document of every batch it changed, as written by
the release named in the header (see :mod:`tests.golden.results`):

* layout 1, written by ``b301a74`` and ``4fc364c``, before the read model kept the engine's
  dispatches and pruned phases: its inputs are the registrations, phase outcomes and
  completions (:data:`LAYOUT_1_TOPICS`). Read now, its documents are upgraded to layout 2 as
  the codec documents it (``dispatches_from_outcomes``), which :func:`_migrated` restates
  from the stored JSON alone;
* layout 2, the current one, whose inputs are also the phase commands and the phase-skipped
  notices: read and written back unchanged.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import attrs
import pytest

from pipeline_state.profiles.huleedu.results.codec import (
    DOCUMENT_SCHEMA,
    batch_from_document,
    batch_to_document,
)
from pipeline_state.profiles.huleedu.results.model import BatchResults
from pipeline_state.profiles.huleedu.results.ports import ResultsChange
from pipeline_state.profiles.huleedu.results.projection import CONSUMED_TOPICS, DISPATCH_TOPICS
from tests.golden.record import load_lines
from tests.golden.results import (
    RESULTS_LAYOUTS,
    RESULTS_SCENARIOS,
    ResultsDriver,
    results_layout_dir,
    results_lines,
)

Line = dict[str, Any]

LAYOUT_1_TOPICS = frozenset(
    {
        "huleedu.batch.essays.registered.v1",
        "huleedu.els.batch.phase.outcome.v1",
        "huleedu.batch.pipeline.completed.v1",
    }
)
"""The topics the results projection consumed when it wrote layout 1."""
PHASE_SKIPPED_TOPIC = "huleedu.batch.phase.skipped.v1"
FACTS_OF_LAYOUT_1 = ("owner", "completions", "outcomes", "announced")
"""The facts a layout-1 document kept (besides ``schema`` and ``batch_id``)."""


def _recorded(name: str, layout: int) -> tuple[Line, list[Line]]:
    header, *lines = load_lines(results_layout_dir(layout) / f"{name}.jsonl")
    return header, lines


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _migrated(document: Line) -> Line:
    """``document`` in layout 2: a layout-1 document keeps every key, in its order, and gains
    after ``outcomes`` the dispatches layout 1 implied and ``pruned``, empty. Layout 1 showed a
    run in progress from the outcomes stamped after the latest completion (all of them when
    no run has completed): each ``(correlation_id, phase)`` of those gets a dispatch of an
    unknown number of items (``items`` null), stamped as its earliest such outcome (the first
    of them stored, on a tie) and carrying that outcome's event id, ordered by
    ``(correlation_id, phase)``."""
    if document["schema"] == 2:
        return document
    assert document["schema"] == 1
    latest = max((_instant(run["completed_at"]) for run in document["completions"]), default=None)
    earliest: dict[tuple[str, str], Line] = {}
    for outcome in document["outcomes"]:
        at = _instant(outcome["observed_at"])
        if latest is not None and at <= latest:
            continue
        phase = (outcome["correlation_id"], outcome["phase"])
        if phase not in earliest or at < _instant(earliest[phase]["observed_at"]):
            earliest[phase] = outcome
    dispatches = [
        {
            "correlation_id": correlation_id,
            "phase": phase,
            "items": None,
            "observed_at": outcome["observed_at"],
            "event_id": outcome["event_id"],
        }
        for (correlation_id, phase), outcome in sorted(earliest.items())
    ]
    migrated: Line = {}
    for key, value in document.items():
        migrated[key] = 2 if key == "schema" else value
        if key == "outcomes":
            migrated["dispatches"] = dispatches
            migrated["pruned"] = []
    return migrated


def test_the_current_results_layout_is_the_last_kept() -> None:
    assert RESULTS_LAYOUTS[-1] == DOCUMENT_SCHEMA
    assert set(CONSUMED_TOPICS) >= LAYOUT_1_TOPICS


@pytest.mark.parametrize("layout", RESULTS_LAYOUTS)
def test_every_results_scenario_is_recorded_with_documents(layout: int) -> None:
    consumed = LAYOUT_1_TOPICS if layout == 1 else frozenset(CONSUMED_TOPICS)
    for name in RESULTS_SCENARIOS:
        header, lines = _recorded(name, layout)
        assert header["scenario"] == name
        assert header["written_by"], name
        assert sum(len(line["documents"]) for line in lines) >= 5, name
        documents = [document for line in lines for document in line["documents"].values()]
        assert {document["schema"] for document in documents} == {layout}, name
        assert {line["topic"] for line in lines} <= consumed, name
    lines = [line for name in RESULTS_SCENARIOS for line in _recorded(name, layout)[1]]
    assert {"applied", "unchanged", "duplicate"} <= {line["result"] for line in lines}
    assert len([line for line in lines if line["announced"]]) >= 5


def test_the_layout_2_recordings_hold_dispatches_and_pruned_phases() -> None:
    """The inputs layout 2 added are recorded: phase commands of every phase (their facts
    with the number of items sent) and phase-skipped notices (pruned phases among them)."""
    lines = [line for name in RESULTS_SCENARIOS for line in _recorded(name, 2)[1]]
    assert set(DISPATCH_TOPICS) | {PHASE_SKIPPED_TOPIC} <= {line["topic"] for line in lines}
    documents = [document for line in lines for document in line["documents"].values()]
    dispatches = [fact for document in documents for fact in document["dispatches"]]
    assert dispatches
    assert all(type(fact["items"]) is int for fact in dispatches)
    assert len([document for document in documents if document["pruned"]]) >= 10


@pytest.mark.parametrize("name", RESULTS_SCENARIOS)
@pytest.mark.parametrize("layout", RESULTS_LAYOUTS)
def test_results_documents_load_and_write_back_in_the_current_layout(layout: int, name: str) -> None:
    """A layout-2 document loads and writes back unchanged; a layout-1 document loads into
    what its upgrade says (:func:`_migrated`), and that writes back unchanged. The same text
    too: the store writes the document's keys in this order."""
    for index, line in enumerate(_recorded(name, layout)[1]):
        for batch_id, document in line["documents"].items():
            where = f"layout {layout}: {name} input {index} {batch_id}"
            batch = batch_from_document(document, version=3)
            assert (batch.batch_id, batch.version) == (batch_id, 3), where
            written = batch_to_document(batch)
            assert written == _migrated(document), where
            assert json.dumps(written) == json.dumps(_migrated(document)), where
            again = batch_to_document(batch_from_document(written))
            assert again == written, where
            assert json.dumps(again) == json.dumps(written), where
            assert batch_from_document(written) == batch, where


def _batch_of(line: Line) -> str:
    data = line["message"]["data"]
    return str(data.get("batch_id") or data["entity_id"])


@pytest.mark.parametrize("name", RESULTS_SCENARIOS)
def test_the_layout_2_recording_handles_the_layout_1_inputs_as_layout_1_did(name: str) -> None:
    """Both recordings are of the same story: the layout-2 inputs on the topics layout 1
    consumed are the layout-1 inputs, in the same order; each was handled as layout 1 recorded
    (``result``, ``announced``), and after it the batch holds the facts layout 1 kept as
    layout 1 recorded them (its status may differ: layout 2 shows a run in progress from the
    engine's dispatches, see the layout-1 restore test)."""
    old = _recorded(name, 1)[1]
    new: list[tuple[Line, dict[str, Line]]] = []
    latest: dict[str, Line] = {}
    for line in _recorded(name, 2)[1]:
        latest.update(line["documents"])
        if line["topic"] in LAYOUT_1_TOPICS:
            new.append((line, dict(latest)))
    inputs = [(line["clock"], line["topic"], line["message"]) for line in old]
    assert inputs == [(line["clock"], line["topic"], line["message"]) for line, _ in new]
    kept: dict[str, Line] = {}
    for index, (before, (after, documents)) in enumerate(zip(old, new, strict=True)):
        kept.update(before["documents"])
        batch_id = _batch_of(before)
        where = f"{name} input {index} ({batch_id})"
        assert (after["result"], after["announced"]) == (before["result"], before["announced"]), where
        assert (batch_id in documents) == (batch_id in kept), where
        if batch_id in kept:
            for fact in FACTS_OF_LAYOUT_1:
                assert documents[batch_id][fact] == kept[batch_id][fact], f"{where}: {fact}"


@pytest.mark.parametrize("name", RESULTS_SCENARIOS)
async def test_this_release_writes_the_results_documents_recorded(name: str) -> None:
    _, lines = _recorded(name, DOCUMENT_SCHEMA)
    assert await results_lines(name) == lines


def _restorable(name: str, layout: int) -> list[tuple[Line, Line, Line]]:
    """(document before, input line, document after) for each input to a batch that has a
    stored document before it. Duplicates are left out: the inbox decides those."""
    found = []
    latest: dict[str, Line] = {}
    for line in _recorded(name, layout)[1]:
        batch_id = _batch_of(line)
        before = latest.get(batch_id)
        latest.update(line["documents"])
        if before is not None and line["result"] != "duplicate":
            found.append((before, line, latest[batch_id]))
    return found


@pytest.mark.parametrize("layout", RESULTS_LAYOUTS)
def test_there_are_restorable_results_inputs_to_check(layout: int) -> None:
    assert sum(len(_restorable(name, layout)) for name in RESULTS_SCENARIOS) >= 40


async def _restore_and_handle(before: Line, line: Line) -> tuple[Line, BatchResults]:
    """A fresh results service holding only the batch read from ``before`` (version 1)
    handles the input of ``line``: what handling said, and the batch now stored."""
    driver = ResultsDriver()
    at = _instant(line["clock"])
    batch = batch_from_document(before, version=1, updated_at=at)
    await driver.store.commit(ResultsChange(batch.batch_id, None, batch, at))
    said = await driver.handle(line)
    now = await driver.store.load(batch.batch_id)
    assert now is not None
    return said, now


@pytest.mark.parametrize("name", RESULTS_SCENARIOS)
async def test_a_batch_restored_from_a_layout_2_document_handles_as_recorded(name: str) -> None:
    for before, line, after in _restorable(name, 2):
        said, now = await _restore_and_handle(before, line)
        where = f"{name} {now.batch_id} at {line['clock']} ({line['topic']})"
        assert said == {"result": line["result"], "announced": line["announced"]}, where
        assert batch_to_document(now) == after, where
        assert now.version == (1 if line["result"] == "unchanged" else 2), where
        assert attrs.evolve(now, version=0) == batch_from_document(after), where


def _restored_from_layout_1(before: Line, after: Line) -> Line:
    """The document of a batch restored from the layout-1 document ``before`` once it handled
    the next layout-1 input, whose recorded document is ``after``: the facts layout 1 kept
    as recorded (:func:`_migrated` of ``after``), with the dispatches the upgrade inferred
    from ``before``, less those of runs completed by then. No layout-1 input is a phase
    command, so none brings a dispatch; a completion drops its run's."""
    finished = {run["correlation_id"] for run in after["completions"]}
    inferred = [fact for fact in _migrated(before)["dispatches"] if fact["correlation_id"] not in finished]
    return {**_migrated(after), "dispatches": inferred}


@pytest.mark.parametrize("name", RESULTS_SCENARIOS)
async def test_a_batch_restored_from_a_layout_1_document_handles_as_recorded(name: str) -> None:
    """A batch restored from a layout-1 document handles the next input of the layout-1
    recording (every one is on a topic layout 1 consumed) as recorded: the same ``result``
    and ``announced``, and it then holds the facts layout 1 kept as recorded.

    Its document is not the recorded one upgraded, though, and its status not always the one
    layout 1 showed. Since layout 2 a run is in progress when the engine dispatched one of its
    phases (the phase commands), no longer when an outcome is stamped after the latest
    completion; the upgrade gives a restored batch a dispatch for each outcome layout 1
    showed in progress, so it shows what it showed. The layout-1 recording holds no phase
    command, though, so an outcome of a run that starts after the restore point has no
    dispatch here: it is kept but not shown, the batch keeps its status where layout 1 went
    ``processing``, while the recorded document, upgraded, infers a dispatch from that outcome.
    And an inferred dispatch stays running when a completion of another run stamped at the
    very same instant arrives (a dispatch counts from the latest completion on, an outcome
    counted after it only), while the recorded document, upgraded, no longer infers it
    (``directed-denials-and-duplicates``, batch ``n1``). So the document checked is what the
    upgrade of the document before, and the facts recorded after, say
    (:func:`_restored_from_layout_1`)."""
    for before, line, after in _restorable(name, 1):
        assert line["topic"] in LAYOUT_1_TOPICS
        said, now = await _restore_and_handle(before, line)
        where = f"{name} {now.batch_id} at {line['clock']} ({line['topic']})"
        assert said == {"result": line["result"], "announced": line["announced"]}, where
        expected = _restored_from_layout_1(before, after)
        assert batch_to_document(now) == expected, where
        for fact in FACTS_OF_LAYOUT_1:
            assert batch_to_document(now)[fact] == after[fact], f"{where}: {fact}"
        assert now.version == (1 if line["result"] == "unchanged" else 2), where
        assert attrs.evolve(now, version=0) == batch_from_document(expected), where
