"""The state document codec: round trips (property-based) and clear errors on bad documents."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pipeline_state_sql.codec import (
    SCHEMA_VERSION,
    UnreadableDocument,
    decode_run,
    decode_state,
    encode_run,
    encode_state,
    stored_status,
)
from pipeline_state_sql.engine import dumps, loads

from pipeline_state import BatchStatus
from pipeline_state._lifecycle import PhaseStatus, RunStatus
from pipeline_state._model import BatchState, ItemRef, Past, PhaseRun, Run, run_key
from pipeline_state.errors import CorruptStateError
from pipeline_state.profiles.huleedu.testing.strategies import batch_states
from pipeline_state.testing import make_state, with_deadline
from pipeline_state.testing.contract import archived_run

text = st.text(max_size=12)
ids = st.text(alphabet="abcdefghij0123456789-_", min_size=1, max_size=12)
maybe_text = st.none() | text
# Aware datetimes in several offsets, to microseconds: the codec keeps the instant and offset.
zones = st.sampled_from([UTC, timezone(timedelta(hours=2)), timezone(timedelta(hours=-5, minutes=-30))])
times = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=zones)
refs = st.builds(ItemRef, ids, st.none() | ids)
phases = st.builds(
    PhaseRun,
    name=ids,
    depends_on=st.lists(ids, max_size=3).map(tuple),
    status=st.sampled_from(PhaseStatus),
    deadline_seconds=st.none() | st.floats(min_value=0, max_value=1e6, allow_nan=False),
    dispatched_at=st.none() | times,
    deadline_at=st.none() | times,
    finished_at=st.none() | times,
    inputs=st.lists(refs, max_size=3).map(tuple),
    outputs=st.lists(refs, max_size=3).map(tuple),
    failed_item_ids=st.lists(ids, max_size=3).map(tuple),
    error=maybe_text,
    command_event_id=st.none() | ids,
    resends=st.integers(0, 5),
)
runs = st.builds(
    Run,
    run_id=ids,
    pipeline_name=ids,
    correlation_id=ids,
    requested_by=text,
    accepted_at=times,
    final_step=ids,
    phases=st.lists(phases, max_size=3).map(tuple),
    pruned=st.lists(ids, max_size=3).map(tuple),
    status=st.sampled_from(RunStatus),
    completed_at=st.none() | times,
    is_retry=st.booleans(),
    retry_reason=maybe_text,
    plan=st.lists(ids, max_size=4).map(tuple),
)
states = st.builds(
    BatchState,
    batch_id=ids,
    status=st.sampled_from(BatchStatus),
    version=st.integers(min_value=1, max_value=2**31 - 1),
    owner=text,
    category=text,
    expected_items=st.integers(min_value=0, max_value=10_000),
    item_ids=st.lists(ids, max_size=5).map(tuple),
    created_at=times,
    updated_at=times,
    org_id=maybe_text,
    group_id=maybe_text,
    language=text,
    prompt_ref=maybe_text,
    items=st.lists(refs, max_size=4).map(tuple),
    active_run=st.none() | runs,
    past=st.lists(runs, max_size=2).map(lambda rs: Past.of(tuple(rs))),
)


def _stored(document: dict[str, Any]) -> Any:
    """What the database hands back: the document through the store's JSON text form."""
    return loads(dumps(document))


@settings(max_examples=50, deadline=None)
@given(states)
def test_any_state_round_trips(state: BatchState) -> None:
    document = encode_state(state)
    assert document["schema"] == SCHEMA_VERSION
    back = decode_state(state.batch_id, _stored(document))
    assert back == state
    assert back.past.count == state.past.count
    assert back.past.correlations == back.past.runs == ()  # ids are the runs table's
    # Same instants and the same offsets, not only equal datetimes.
    assert [moment.utcoffset() for moment in back.past.accepted] == [
        moment.utcoffset() for moment in state.past.accepted
    ]
    assert encode_state(back) == document


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch_states())
def test_reachable_states_round_trip(state: BatchState) -> None:
    assert decode_state(state.batch_id, _stored(encode_state(state))) == state


@settings(max_examples=30, deadline=None)
@given(runs)
def test_any_run_round_trips(run: Run) -> None:
    assert decode_run("b1", _stored(encode_run(run))) == run


def _document() -> dict[str, Any]:
    return encode_state(with_deadline(make_state("b1"), datetime(2025, 1, 1, 1, tzinfo=UTC)))


def _broken(change: Any) -> dict[str, Any]:
    doc = json.loads(json.dumps(_document()))
    change(doc)
    return doc


def _layout_1(state: BatchState, history: tuple[Run, ...]) -> dict[str, Any]:
    """``state`` as layout 1 stored it: every archived run in full under ``history``."""
    doc = json.loads(json.dumps(encode_state(state)))
    del doc["past"]
    runs = [encode_run(run) for run in history]
    for run in runs:
        del run["schema"]
    doc.update(schema=1, history=json.loads(json.dumps(runs)))
    return doc


def _layout_3(state: BatchState, history: tuple[Run, ...]) -> dict[str, Any]:
    """``state`` as layout 3 stored it: ``past`` listing the archived runs' correlation ids
    and keys."""
    doc = json.loads(json.dumps(encode_state(state)))
    past = doc["past"]
    doc.update(
        schema=3,
        past={
            "correlations": [run.correlation_id for run in history],
            "accepted": past["accepted"],
            "recorded": past["recorded"],
            "runs": ",".join(run_key(run.run_id) for run in history),
        },
    )
    return doc


def _broken_3(change: Any) -> dict[str, Any]:
    run = archived_run("b1")
    doc = _layout_3(attrs.evolve(make_state("b1"), past=Past.of((run,))), (run,))
    change(doc)
    return doc


def _broken_1(change: Any) -> dict[str, Any]:
    state = with_deadline(make_state("b1"), None)
    doc = _layout_1(state, (archived_run("b1"),))
    change(doc)
    return doc


@pytest.mark.parametrize(
    ("document", "reason"),
    [
        pytest.param(UnreadableDocument('{"schema": 1, "batch'), "not valid JSON", id="not-json"),
        pytest.param([1, 2], "should be an object", id="not-an-object"),
        pytest.param(_broken(lambda d: d.update(schema=99)), "unknown schema version 99", id="future-schema"),
        pytest.param(_broken(lambda d: d.pop("schema")), "unknown schema version None", id="no-schema"),
        pytest.param(
            _broken(lambda d: d.update(schema=True)), "unknown schema version True", id="bool-schema"
        ),
        pytest.param(_broken(lambda d: d.pop("user_id")), "missing field 'user_id'", id="missing-field"),
        pytest.param(
            _broken(lambda d: d.update(version="3")), "field 'version' should be int", id="wrong-type"
        ),
        pytest.param(
            _broken(lambda d: d.update(version=True)), "field 'version' should be int", id="bool-int"
        ),
        pytest.param(
            _broken(lambda d: d.update(status="exploded")), "unknown value 'exploded'", id="bad-enum"
        ),
        pytest.param(
            _broken(lambda d: d.update(created_at="yesterday")), "not an ISO-8601 time", id="bad-time"
        ),
        pytest.param(
            _broken(lambda d: d.update(created_at="2025-01-01T00:00:00")), "has no timezone", id="naive-time"
        ),
        pytest.param(
            _broken(lambda d: d["active_run"]["phases"][0].update(inputs=[["e0"]])),
            "malformed essay reference",
            id="bad-ref",
        ),
        pytest.param(
            _broken(lambda d: d["active_run"].update(phases="none")),
            "field 'phases' should be list",
            id="nested",
        ),
        pytest.param(
            _broken_1(lambda d: d["history"][0].update(phases="none")),
            "field 'phases' should be list",
            id="nested-layout-1",
        ),
        pytest.param(_broken(lambda d: d.pop("past")), "missing field 'past'", id="no-past"),
        pytest.param(
            _broken_3(lambda d: d["past"]["correlations"].append(9)),
            "field 'correlations' should be a list of str (at past.correlations)",
            id="bad-past-correlation-layout-3",
        ),
        pytest.param(
            _broken_3(lambda d: d["past"].update(runs=d["past"]["runs"] + ",abc")),
            "field 'runs' holds 2 keys for 1 runs (at past.runs)",
            id="more-keys-than-runs-layout-3",
        ),
        pytest.param(
            _broken(lambda d: d["past"].update(count="2")),
            "field 'count' should be a count of runs, got '2' (at past.count)",
            id="bad-past-count",
        ),
        pytest.param(
            _broken(lambda d: d["past"].update(count=-1)), "a count of runs, got -1", id="negative-count"
        ),
        pytest.param(
            _broken(lambda d: d["past"].update(count=True)), "a count of runs, got True", id="bool-count"
        ),
        pytest.param(
            _broken(lambda d: d["past"].update(count=0)),
            "field 'accepted' holds 1 times for 0 runs",
            id="more-times-than-runs",
        ),
        pytest.param(
            _broken(lambda d: d["past"].update(correlations=["c1"])),
            "should hold the fields ['accepted', 'answered', 'count', 'recorded', 'reported']",
            id="ids-in-layout-4",
        ),
        pytest.param(
            _broken(lambda d: d["past"].update(answered=[["k1"]])),
            "malformed entry ['k1'] (at past.answered[0])",
            id="answered-without-correlation",
        ),
        pytest.param(
            _broken(lambda d: d["past"].update(answered=[["k1", "c\u0000"]])),
            "(at past.answered[0])",
            id="answered-nul",
        ),
        pytest.param(
            _broken(lambda d: d["past"].update(reported=[7])),
            "malformed entry 7 (at past.reported[0])",
            id="reported-not-text",
        ),
        pytest.param(
            _broken(lambda d: d["past"].update(reported=["k"] * 17)),
            "a list of at most 16 entries (at past.reported)",
            id="reported-too-many",
        ),
        pytest.param(
            _broken(lambda d: d["past"].update(answered="k1")),
            "a list of at most 16 entries (at past.answered)",
            id="answered-not-a-list",
        ),
        pytest.param(
            _broken(lambda d: d["past"].update(answered=[["0123456789abcdef0", "c"]])),
            "(at past.answered[0])",
            id="answered-long-key",
        ),
        pytest.param(
            _broken(lambda d: d.update(schema=4)),
            "a layout-4 row holds no 'answered' or 'reported'",
            id="aliases-in-layout-4",
        ),
        pytest.param(
            _broken(lambda d: d["past"]["accepted"].append("yesterday")),
            "not an ISO-8601 time",
            id="bad-past-time",
        ),
        pytest.param(
            _broken(lambda d: d["past"]["recorded"].append(["ingest", [["e0"]]])),
            "malformed essay reference",
            id="bad-past-outputs",
        ),
        pytest.param(_broken(lambda d: d.update(batch_id="b2")), "describes batch 'b2'", id="other-batch"),
    ],
)
def test_bad_documents_raise_corrupt_state_naming_the_batch(document: Any, reason: str) -> None:
    with pytest.raises(CorruptStateError) as info:
        decode_state("b1", document)
    assert info.value.batch_id == "b1"
    assert reason in info.value.reason
    assert "b1" in str(info.value)


def test_bad_run_document_names_the_batch() -> None:
    doc = encode_run(archived_run("b1"))
    doc["schema"] = 2
    with pytest.raises(CorruptStateError, match="unknown schema version 2") as info:
        decode_run("b7", doc)
    assert info.value.batch_id == "b7"


def test_lenient_reader_marks_text_that_is_not_json() -> None:
    assert loads('{"a": [1]}') == {"a": [1]}
    broken = loads("{oops")
    assert isinstance(broken, UnreadableDocument)
    assert broken == "{oops"


def test_document_layout_is_explicit() -> None:
    state = attrs.evolve(make_state("b1"), group_id="c1")
    doc = encode_state(state)
    assert doc["status"] == "ready_for_pipeline_execution"
    assert doc["essays"] == [["b1-e0", "b1-e0-text"], ["b1-e1", None]]
    assert doc["created_at"] == "2025-01-01T00:00:00+00:00"
    assert doc["active_run"] is None
    assert "history" not in doc
    assert doc["past"] == {"count": 0, "accepted": [], "recorded": [], "answered": [], "reported": []}
    run = archived_run("b1")
    doc = encode_state(attrs.evolve(state, past=Past.of((run,))))
    assert doc["past"] == {
        "count": 1,
        "accepted": ["2025-01-01T00:00:00+00:00"],
        "recorded": [["ingest", [["e0", "t0-out"]]]],
        "answered": [],
        "reported": [],
    }
    answered = Past.of((run,)).answering("b1-run-9", "lost-corr").reporting("report-run")
    doc = encode_state(attrs.evolve(state, past=answered))
    assert doc["past"]["answered"] == [[run_key("b1-run-9"), "lost-corr"]]
    assert doc["past"]["reported"] == [run_key("report-run")]
    assert decode_state("b1", doc).past == answered


def test_a_layout_1_document_reads_as_the_current_layout_with_its_history_summed_up() -> None:
    # Layout 1 kept every archived run in the batch document; the runs table holds them too.
    first = archived_run("b1")
    second = attrs.evolve(
        first,
        run_id="b1-run-7",
        correlation_id="corr-7",
        phases=(attrs.evolve(first.phases[0], outputs=(ItemRef("e1", "t1"),)),),
    )
    state = with_deadline(make_state("b1"), None)
    current = attrs.evolve(state, past=Past.of((first, second)))
    old = _layout_1(current, (first, second))
    back = decode_state("b1", _stored(old))
    assert back == current
    assert back.past.count == 2
    assert back.past.recorded_outputs() == {"ingest": (ItemRef("e1", "t1"),)}
    # The ids are the runs table's (tests/sql/test_sql_archived_ids.py): looked up, as listed.
    known = back.past.knowing((r.run_id, r.correlation_id) for r in (first, second))
    assert (known.correlations, known.runs) == (current.past.correlations, current.past.runs)
    assert known.known
    assert not back.past.known
    assert encode_state(back)["schema"] == SCHEMA_VERSION == 5
    assert "history" not in encode_state(back)


def test_phase_rows_written_before_resends_load_with_defaults() -> None:
    # Issue 11.4 added command_event_id and resends to a phase; older rows lack them.
    phase = PhaseRun("spellcheck", (), PhaseStatus.DISPATCH_INITIATED, command_event_id="ev-1", resends=2)
    run = Run("r1", "nlp", "c1", "t1", datetime(2025, 1, 1, tzinfo=UTC), "spellcheck", (phase,))
    doc = encode_run(run)
    assert (doc["phases"][0]["command_event_id"], doc["phases"][0]["resends"]) == ("ev-1", 2)
    assert decode_run("b1", doc) == run
    for key in ("command_event_id", "resends"):
        del doc["phases"][0][key]
    old = decode_run("b1", doc).phases[0]
    assert (old.command_event_id, old.resends) == (None, 0)
    assert attrs.evolve(old, command_event_id="ev-1", resends=2) == phase


def test_document_keys_keep_their_order() -> None:
    # The store writes the document's JSON text as built (no sorted keys): the order of the
    # keys is part of the stored bytes.
    state = with_deadline(make_state("b1"), datetime(2025, 1, 1, 1, tzinfo=UTC))
    doc = encode_state(state)
    assert list(doc) == [
        "schema", "batch_id", "status", "version", "user_id", "course_code",
        "expected_essay_count", "essay_ids", "created_at", "updated_at", "org_id", "class_id",
        "language", "prompt_ref", "essays", "active_run", "past",
    ]  # fmt: skip
    assert list(doc["past"]) == ["count", "accepted", "recorded", "answered", "reported"]
    assert list(encode_run(archived_run("b1"))) == [
        "schema", "run_id", "pipeline_name", "correlation_id", "requested_by", "accepted_at", "final_step",
        "phases", "pruned", "status", "completed_at", "is_retry", "retry_reason", "plan",
    ]  # fmt: skip
    assert list(doc["active_run"]["phases"][0]) == [
        "name", "depends_on", "status", "deadline_seconds", "dispatched_at", "deadline_at",
        "finished_at", "inputs", "outputs", "failed_essay_ids", "error", "command_event_id", "resends",
    ]  # fmt: skip


def test_values_are_plain_json_types() -> None:
    doc = encode_state(with_deadline(make_state("b1"), datetime(2025, 1, 1, 1, tzinfo=UTC)))
    assert type(doc["status"]) is str
    assert type(doc["active_run"]["phases"][0]["status"]) is str
    assert type(doc["essay_ids"]) is list


def test_a_stored_field_with_a_default_must_be_present() -> None:
    doc = _document()
    del doc["language"]
    with pytest.raises(CorruptStateError, match="missing field 'language'"):
        decode_state("b1", doc)


@pytest.mark.parametrize(
    ("status", "stored"),
    [
        (BatchStatus.AWAITING_GROUP_VALIDATION, "awaiting_student_validation"),
        (BatchStatus.GROUP_VALIDATION_COMPLETED, "student_validation_completed"),
        (BatchStatus.READY_FOR_PIPELINE_EXECUTION, "ready_for_pipeline_execution"),
    ],
)
def test_statuses_keep_the_values_rows_have_always_held(status: BatchStatus, stored: str) -> None:
    # The engine renamed the group-validation states; rows keep their first values, and a
    # document holding the engine's value (written by hand, say) reads as well.
    state = make_state("b1", status=status)
    document = encode_state(state)
    assert document["status"] == stored == stored_status(status)
    assert decode_state("b1", document) == state
    assert decode_state("b1", {**document, "status": status.value}) == state


def test_an_unknown_stored_status_is_corruption_naming_the_batch() -> None:
    document = {**encode_state(make_state("b1")), "status": "waiting_for_godot"}
    with pytest.raises(CorruptStateError, match=r"b1.*waiting_for_godot"):
        decode_state("b1", document)


def test_layout_2_and_3_documents_read_with_their_runs_counted() -> None:
    """Layouts 2 and 3 listed the archived runs' correlation ids (and, in layout 3, their
    keys); such a row reads with the runs counted and no ids listed, and writes back in
    layout 4. A layout-3 row without its keys is malformed."""
    run = archived_run("b1")
    state = attrs.evolve(make_state("b1"), past=Past.of((run,)))
    three = _layout_3(state, (run,))
    assert decode_state("b1", three) == state
    two = {**three, "schema": 2, "past": {k: v for k, v in three["past"].items() if k != "runs"}}
    back = decode_state("b1", two)
    assert back == state
    assert encode_state(back) == encode_state(state)
    with pytest.raises(CorruptStateError, match=r"past\.runs"):
        decode_state("b1", {**two, "schema": 3})  # a layout-3 row must have them


def test_a_layout_3_row_listing_fewer_keys_than_runs_reads() -> None:
    """A layout-2 row read by the release that wrote layout 3 got no keys; a run it archived
    then added its own: that release wrote layout-3 rows with fewer keys than correlation
    ids, which must keep loading (more keys than runs are refused above)."""
    runs = (archived_run("b1"), attrs.evolve(archived_run("b1"), run_id="b1-run-7", correlation_id="corr-7"))
    state = attrs.evolve(make_state("b1"), past=Past.of(runs))
    partial = _layout_3(state, runs)
    partial["past"]["runs"] = run_key("b1-run-7")
    back = decode_state("b1", partial)
    assert back == state
    assert back.past.count == 2
