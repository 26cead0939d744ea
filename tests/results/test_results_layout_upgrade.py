"""The results document's layout 1 -> 2 upgrade: documents an earlier release wrote load, and a
batch keeps the status and progress it showed (the class summaries counted it under that
status), then goes on under the rules of this release.

Layout 1 knew no dispatch: it showed a run in progress from the outcomes stamped after the
latest completion. The step gives each such outcome's ``(correlation_id, phase)`` a dispatch
of an unknown number of items; :func:`_layout_1_view` restates what layout 1 showed from the
stored JSON alone.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import pytest
from results_events import at, completion, dispatch, outcome, registered, uid

from pipeline_state.errors import CorruptStateError
from pipeline_state.profiles.huleedu.results import (
    BatchResults,
    InMemoryResultsStore,
    PhaseDispatch,
    ResultsChange,
    ResultsQueries,
    ResultsService,
    batch_from_document,
    batch_to_document,
    batch_view,
    class_deltas,
)
from pipeline_state.profiles.huleedu.results.codec import DOCUMENT_SCHEMA, RESULTS_SCHEMA
from tests.golden.record import load_lines
from tests.golden.results import RESULTS_DIR, RESULTS_SCENARIOS

Document = dict[str, Any]


def _layout_1(batch: BatchResults) -> Document:
    """``batch`` as layout 1 stored it: no ``dispatches``, no ``pruned``."""
    document = batch_to_document(batch)
    del document["dispatches"], document["pruned"]
    document["schema"] = 1
    return json.loads(json.dumps(document))


def _layout_1_view(document: Document) -> tuple[str, list[Document]]:
    """What layout 1 showed: ``processing`` with the outcomes stamped after the latest
    completion (oldest first), else the latest completion's final status, else
    ``registered``."""
    completions = document["completions"]
    latest = max((datetime.fromisoformat(r["completed_at"]) for r in completions), default=None)
    newer = [
        o for o in document["outcomes"] if latest is None or datetime.fromisoformat(o["observed_at"]) > latest
    ]
    newer.sort(
        key=lambda o: (datetime.fromisoformat(o["observed_at"]), o["status"], o["successful"], o["failed"])
    )
    if newer:
        return "processing", newer
    return (completions[-1]["final_status"] if completions else "registered"), []


def _layout_1_phases(document: Document, newer: list[Document]) -> dict[str, Document]:
    """Each phase's figures as layout 1 showed them: the completions' in run order, then the
    outcomes in progress (no duration)."""
    phases: dict[str, Document] = {}
    for run in document["completions"]:
        for result in run["phase_results"]:
            phases[result["name"]] = {k: v for k, v in result.items() if k != "name"}
    for o in newer:
        phases[o["phase"]] = {
            "status": o["status"],
            "successful": o["successful"],
            "failed": o["failed"],
            "duration_seconds": None,
        }
    return phases


def test_the_results_layout_is_2_and_reads_layout_1() -> None:
    assert (DOCUMENT_SCHEMA, RESULTS_SCHEMA.oldest) == (2, 1)


async def _batch(*deliveries: tuple[str, dict[str, Any]]) -> BatchResults:
    store = InMemoryResultsStore()
    service = ResultsService(store)
    for delivery in deliveries:
        await service.handle_message(*delivery)
    batch = await store.load("b1")
    assert batch is not None
    return batch


async def test_an_in_flight_run_keeps_its_progress_through_the_upgrade() -> None:
    """A batch with a completed run and a newer run in progress, stored in layout 1, reads as
    ``processing`` with the same outcome in progress: its key has a dispatch of an unknown
    number of items, stamped as the outcome and carrying its event id."""
    batch = await _batch(
        registered("b1", class_id="k1"),
        completion("b1", "r1", "c-1", when=at(10)),
        dispatch("b1", "nlp", "c-2", when=at(15)),
        outcome("b1", "nlp", "c-2", processed=["e0"], failed=["e1"], when=at(20), event_id="o-2"),
    )
    old = _layout_1(batch)
    assert _layout_1_view(old)[0] == "processing"
    upgraded = batch_from_document(old)
    assert upgraded.dispatches == (PhaseDispatch(uid("c-2"), "nlp", None, at(20), uid("o-2")),)
    assert upgraded.dispatches[0].event_id == uid("o-2")
    assert upgraded.pruned == ()
    assert (upgraded.status, upgraded.in_progress) == ("processing", batch.in_progress)
    assert batch_view(upgraded)["phases"] == batch_view(batch)["phases"]
    # Written back, the document is layout 2 and reads as the same facts.
    written = batch_to_document(upgraded)
    assert written["schema"] == 2
    assert written["dispatches"] == [
        {
            "correlation_id": uid("c-2"),
            "phase": "nlp",
            "items": None,
            "observed_at": at(20).isoformat(),
            "event_id": uid("o-2"),
        }
    ]
    assert batch_from_document(written) == upgraded


async def test_an_outcome_layout_1_did_not_show_stays_unshown() -> None:
    """An outcome older than the latest completion (a lost correlation id, or a run whose
    completion had not arrived) was not shown by layout 1: it gets no dispatch, the batch
    keeps its final status."""
    batch = await _batch(
        registered("b1", class_id="k1"),
        outcome("b1", "cj_assessment", "lost", when=at(5)),
        completion("b1", "r1", "c-1", when=at(10), final_status="completed_with_failures"),
    )
    old = _layout_1(batch)
    assert _layout_1_view(old) == ("completed_with_failures", [])
    upgraded = batch_from_document(old)
    assert (upgraded.dispatches, upgraded.status, upgraded.in_progress) == ((), "completed_with_failures", ())
    assert [o.correlation_id for o in upgraded.outcomes] == [uid("lost")]


async def test_an_upgraded_batch_goes_on_and_its_class_summary_stays_right() -> None:
    """Restored from layout 1 into a store whose class summary counted it ``processing``, the
    batch's run completes: it leaves ``processing`` for the final status (the delta subtracts
    the status it was counted under), its outcome and inferred dispatch are dropped."""
    batch = await _batch(
        registered("b1", class_id="k1"),
        dispatch("b1", "spellcheck", "c-1", when=at(1)),
        outcome("b1", "spellcheck", "c-1", when=at(2)),
    )
    upgraded = batch_from_document(_layout_1(batch), version=1, updated_at=at(2))
    store = InMemoryResultsStore()
    await store.commit(ResultsChange("b1", None, upgraded, at(2), class_deltas=class_deltas(None, upgraded)))
    summary = await store.class_results("k1")
    assert summary is not None
    assert summary.batches_by_status == {"processing": 1}
    service = ResultsService(store)
    await service.handle_message(*completion("b1", "r1", "c-1", when=at(3)))
    after = await store.load("b1")
    assert after is not None
    assert (after.status, after.outcomes, after.dispatches) == ("completed_successfully", (), ())
    summary = await store.class_results("k1")
    assert summary is not None
    assert summary.batches_by_status == {"completed_successfully": 1}
    view = await ResultsQueries(store).batch_json("b1")
    assert view is not None
    assert view["status"] == "completed_successfully"


def _recorded_layout_1_documents() -> list[tuple[str, Document]]:
    found = []
    for name in RESULTS_SCENARIOS:
        for line in load_lines(RESULTS_DIR / f"{name}.jsonl")[1:]:
            for batch_id, document in line["documents"].items():
                if document["schema"] == 1:
                    found.append((f"{name}:{batch_id}", document))
    return found


def test_every_recorded_layout_1_document_shows_what_it_showed() -> None:
    """Every results document an earlier release wrote in layout 1 (the golden rows) loads;
    the batch shows the status and the outcomes in progress layout 1 showed, and its
    completed phases and figures; written back, it is layout 2 and reads as the same facts."""
    documents = _recorded_layout_1_documents()
    assert len(documents) >= 90
    in_flight = 0
    for where, document in documents:
        status, newer = _layout_1_view(document)
        batch = batch_from_document(document)
        assert batch.status == status, where
        shown = [{k: v for k, v in o.items() if k != "event_id"} for o in newer]
        assert batch_view(batch)["in_progress"] == shown, where
        assert batch_view(batch)["phases"] == _layout_1_phases(document, newer), where
        assert all(d.items is None for d in batch.dispatches), where
        in_flight += bool(newer)
        again = batch_to_document(batch)
        assert again["schema"] == 2, where
        assert batch_from_document(again) == batch, where
        assert {k: v for k, v in again.items() if k not in ("schema", "dispatches", "pruned")} == {
            k: v for k, v in document.items() if k != "schema"
        }, where
    assert in_flight >= 10  # the rows hold runs in progress


@pytest.mark.parametrize(
    ("mangle", "field"),
    [
        (lambda d: d.update(outcomes="none"), "outcomes"),
        (lambda d: d["outcomes"][0].update(observed_at="soon"), "observed_at"),
        (lambda d: d["outcomes"][0].update(correlation_id=7), "correlation_id"),
        (lambda d: d["completions"][0].update(completed_at="2025-01-01T00:00:00"), "completed_at"),
    ],
)
async def test_an_unreadable_layout_1_document_is_corrupt_state_naming_the_field(
    mangle: Any, field: str
) -> None:
    batch = await _batch(
        completion("b1", "r1", "c-1", when=at(10)),
        dispatch("b1", "nlp", "c-2", when=at(15)),
        outcome("b1", "nlp", "c-2", when=at(20)),
    )
    document = _layout_1(batch)
    mangle(document)
    with pytest.raises(CorruptStateError, match=field) as info:
        batch_from_document(document)
    assert info.value.batch_id == "b1"
