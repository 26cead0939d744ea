"""Queries and their JSON views (the shapes the HTTP adapter serves), and the document codec."""

from __future__ import annotations

import json
from types import MappingProxyType

import attrs
import pytest
from results_events import at, completion, dispatch, outcome, registered, uid

from pipeline_state.errors import CorruptStateError
from pipeline_state.profiles.huleedu.results import (
    InMemoryResultsStore,
    ResultsQueries,
    ResultsService,
    batch_from_document,
    batch_to_document,
)
from pipeline_state.profiles.huleedu.testing.results_contract import sample_batch


@pytest.fixture
async def queries(results: ResultsService, store: InMemoryResultsStore) -> ResultsQueries:
    await results.handle_message(*registered("b1", user_id="t1", class_id="k1", essays=3))
    await results.handle_message(*registered("b2", user_id="t1", class_id="k1", essays=2))
    await results.handle_message(*registered("b3", user_id="t2", class_id=None, essays=2))
    phases = {"spellcheck": ("completed_successfully", 3, 0, 1.5), "nlp": ("failed", 0, 3, 2.5)}
    await results.handle_message(
        *completion(
            "b1", "r1", "corr-1", pipeline="nlp", final_status="failed_critically", phases=phases,
            successful=0, failed=3, duration=4.0, when=at(10),
        )
    )  # fmt: skip
    await results.handle_message(*dispatch("b2", "spellcheck", "corr-2", items=["e0", "e1"], when=at(15)))
    await results.handle_message(*outcome("b2", "spellcheck", "corr-2", processed=["e0"], when=at(20)))
    return ResultsQueries(store)


async def test_batch_view(queries: ResultsQueries) -> None:
    view = await queries.batch_json("b1")
    assert view is not None
    json.dumps(view)  # JSON-compatible
    assert {k: view[k] for k in ("batch_id", "status", "user_id", "class_id", "expected_essays")} == {
        "batch_id": "b1",
        "status": "failed_critically",
        "user_id": "t1",
        "class_id": "k1",
        "expected_essays": 3,
    }
    assert (view["essays_succeeded"], view["essays_failed"], view["completed_phases"]) == (
        0,
        3,
        ["spellcheck"],
    )
    assert view["phases"] == {
        "spellcheck": {
            "status": "completed_successfully",
            "successful": 3,
            "failed": 0,
            "duration_seconds": 1.5,
        },
        "nlp": {"status": "failed", "successful": 0, "failed": 3, "duration_seconds": 2.5},
    }
    latest = view["latest_run"]
    assert (latest["run_id"], latest["pipeline_name"], latest["total_essays"]) == ("r1", "nlp", 3)
    assert latest["completed_at"] == at(10).isoformat()
    assert [r["run_id"] for r in view["runs"]] == ["r1"]
    assert view["in_progress"] == []
    assert view["version"] == 2


async def test_batch_in_progress_view(queries: ResultsQueries) -> None:
    view = await queries.batch_json("b2")
    assert view is not None
    assert view["status"] == "processing"
    assert view["latest_run"] is None
    assert view["in_progress"] == [
        {
            "correlation_id": uid("corr-2"),
            "phase": "spellcheck",
            "status": "completed_successfully",
            "successful": 1,
            "failed": 0,
            "observed_at": at(20).isoformat(),
        }
    ]


async def test_class_and_teacher_views(queries: ResultsQueries) -> None:
    view = await queries.class_json("k1")
    assert view is not None
    assert {k: v for k, v in view.items() if k != "batches"} == {
        "class_id": "k1",
        "batch_count": 2,
        "batches_by_status": {"failed_critically": 1, "processing": 1},
        "essays_succeeded": 0,
        "essays_failed": 3,
    }
    assert [(b["batch_id"], b["status"], b["latest_pipeline"]) for b in view["batches"]] == [
        ("b1", "failed_critically", "nlp"),
        ("b2", "processing", None),
    ]
    teacher = await queries.teacher_json("t1")
    assert (teacher["batch_count"], teacher["batches_by_status"]) == (
        2, {"failed_critically": 1, "processing": 1},
    )  # fmt: skip
    page = await queries.teacher_json("t1", limit=1, offset=1)
    assert [b["batch_id"] for b in page["batches"]] == ["b2"]


async def test_unknown_things_are_none_or_empty(queries: ResultsQueries) -> None:
    assert await queries.batch_json("nope") is None
    assert await queries.class_json("nope") is None
    assert (await queries.teacher_json("nobody"))["batches"] == []


def test_document_round_trips_through_json() -> None:
    batch = attrs.evolve(sample_batch("b1", in_progress=True), version=4)
    document = json.loads(json.dumps(batch_to_document(batch)))
    back = batch_from_document(document, version=4, updated_at=batch.updated_at)
    assert back == batch
    assert (back.version, back.updated_at) == (4, batch.updated_at)
    assert [r.event_id for r in back.completions] == [r.event_id for r in batch.completions]
    assert back.owner is not None
    assert batch.owner is not None
    assert back.owner.event_id == batch.owner.event_id


@pytest.mark.parametrize(
    "mangle",
    [
        lambda d: d.pop("completions"),
        lambda d: d.update(schema=99),
        lambda d: d["completions"][0].update(completed_at="yesterday"),
        lambda d: d["outcomes"][0].update(observed_at="2025-01-01T00:00:00"),  # no timezone
    ],
)
def test_unreadable_document_is_corrupt_state(mangle: object) -> None:
    document = batch_to_document(sample_batch("b1", in_progress=True))
    mangle(document)  # type: ignore[operator]
    with pytest.raises(CorruptStateError) as info:
        batch_from_document(document)
    assert info.value.batch_id == "b1"


def test_document_may_be_any_mapping_and_must_be_a_mapping() -> None:
    batch = sample_batch("b1", in_progress=True)
    document = json.loads(json.dumps(batch_to_document(batch)))
    assert batch_from_document(MappingProxyType(document)) == batch
    with pytest.raises(CorruptStateError, match="results document should be an object, got list"):
        batch_from_document([document])  # type: ignore[arg-type]
