"""The projection rules: facts from messages, winner rules, the views, class deltas, cache keys."""

from __future__ import annotations

import attrs
import pytest
from results_events import T0, Delivery, at, completion, outcome, registered, uid

from pipeline_state.errors import UnknownTopicError
from pipeline_state.profiles.huleedu.events import Topic, parse_message
from pipeline_state.profiles.huleedu.results import (
    BatchResults,
    ClassDelta,
    Owner,
    PhaseOutcome,
    ResultsFact,
    RunCompletion,
    apply_fact,
    cache_keys,
    class_deltas,
    fact_from_message,
    pending_announcements,
    project,
)
from pipeline_state.profiles.huleedu.results.projection import mark_announced


def fact(delivery: Delivery) -> ResultsFact:
    topic, value = delivery
    envelope, payload = parse_message(topic, value, inbound_only=False)
    return fact_from_message(topic, envelope, payload)


# -- facts from messages ----------------------------------------------------------------------


def test_outcome_becomes_a_phase_outcome_with_mapped_status_and_counts() -> None:
    f = fact(outcome("b1", "nlp", "c-1", processed=["e0", "e1"], failed=["e2"], when=at(7), event_id="ev-1"))
    assert (f.batch_id, f.event_id, f.event_type) == ("b1", uid("ev-1"), Topic.PHASE_OUTCOME.value)
    assert f.body == PhaseOutcome(
        uid("c-1"), "nlp", "completed_with_partial_success", 2, 1, at(7), uid("ev-1")
    )
    failed = fact(outcome("b1", "nlp", "c-1", processed=[], failed=["e0"]))
    assert isinstance(failed.body, PhaseOutcome)
    assert failed.body.status == "failed"


def test_completion_becomes_a_run_completion_stamped_with_its_metadata_time() -> None:
    phases = {"spellcheck": ("completed_successfully", 3, 0, 2.0), "nlp": ("failed", 0, 3, 4.0)}
    f = fact(
        completion(
            "b1", "r1", "c-1", pipeline="nlp", final_status="failed_critically", phases=phases,
            successful=0, failed=3, duration=6.5, when=at(30), event_id="ev-c",
        )
    )  # fmt: skip
    run = f.body
    assert isinstance(run, RunCompletion)
    assert (run.run_id, run.correlation_id, run.pipeline_name, run.final_status) == (
        "r1", uid("c-1"), "nlp", "failed_critically",
    )  # fmt: skip
    assert run.completed_at == at(30)
    assert (run.successful_essays, run.failed_essays, run.total_essays) == (0, 3, 3)
    assert [(p.name, p.status, p.successful, p.failed, p.duration_seconds) for p in run.phase_results] == [
        ("spellcheck", "completed_successfully", 3, 0, 2.0),
        ("nlp", "failed", 0, 3, 4.0),
    ]
    assert run.completed_phases == ("spellcheck",)


def test_registration_becomes_the_owner() -> None:
    f = fact(registered("b1", user_id="t9", class_id="c7", essays=4, when=at(1), event_id="ev-r"))
    assert f.body == Owner("t9", "c7", 4, at(1), uid("ev-r"))


def test_a_topic_the_projection_does_not_consume_is_refused() -> None:
    topic, value = completion("b1", "r1", "c")
    envelope, payload = parse_message(topic, value, inbound_only=False)
    with pytest.raises(UnknownTopicError):
        fact_from_message(Topic.PIPELINE_REQUEST.value, envelope, payload)


# -- merge rules --------------------------------------------------------------------------------


def test_completion_for_an_unknown_batch_creates_it() -> None:
    batch = apply_fact(None, fact(completion("b1", "r1", "c-1", when=at(5))))
    assert batch.batch_id == "b1"
    assert batch.owner is None
    assert batch.status == "completed_successfully"
    assert batch.is_completed


def test_fact_about_another_batch_is_refused() -> None:
    with pytest.raises(ValueError, match="b2"):
        apply_fact(BatchResults("b1"), fact(completion("b2", "r1", "c")))


def test_applying_a_fact_twice_changes_nothing() -> None:
    f = fact(outcome("b1", "nlp", "c-1"))
    once = apply_fact(None, f)
    assert apply_fact(once, f) == once


def test_latest_outcome_of_a_phase_wins_and_ties_break_on_content() -> None:
    first = fact(outcome("b1", "nlp", "c-1", processed=["e0"], failed=["e1"], when=at(1), event_id="a"))
    retry = fact(outcome("b1", "nlp", "c-1", processed=["e0", "e1"], when=at(2), event_id="b"))
    for order in ([first, retry], [retry, first]):
        (only,) = project("b1", order).outcomes
        assert (only.event_id, only.successful) == (uid("b"), 2)
    # Same instant, different content: the content decides, not the arrival order.
    one = fact(outcome("b1", "nlp", "c-1", processed=["e0"], when=at(1)))
    two = fact(outcome("b1", "nlp", "c-1", processed=["e0", "e1"], when=at(1)))
    assert project("b1", [one, two]).outcomes == project("b1", [two, one]).outcomes
    assert project("b1", [one, two]).outcomes[0].successful == 2


def test_the_same_fact_under_a_new_event_id_changes_nothing() -> None:
    done = fact(completion("b1", "r1", "c-1", when=at(5), event_id="x"))
    again = fact(completion("b1", "r1", "c-1", when=at(5), event_id="y"))
    batch = project("b1", [done])
    assert apply_fact(batch, again) == batch
    assert apply_fact(batch, again).completions[0].event_id == uid("x")  # the first one stays


def test_earliest_registration_is_the_owner() -> None:
    early = fact(registered("b1", user_id="t1", when=at(1)))
    late = fact(registered("b1", user_id="t2", when=at(2)))
    assert project("b1", [late, early]).user_id == "t1"
    assert project("b1", [early, late]).user_id == "t1"


def test_completion_drops_the_outcomes_of_its_run_but_keeps_other_runs() -> None:
    ours = fact(outcome("b1", "spellcheck", "c-1", when=at(1)))
    theirs = fact(outcome("b1", "nlp", "c-2", when=at(20)))
    done = fact(completion("b1", "r1", "c-1", when=at(10)))
    for order in ([ours, theirs, done], [done, ours, theirs]):
        batch = project("b1", order)
        assert [(o.correlation_id, o.phase) for o in batch.outcomes] == [(uid("c-2"), "nlp")]


def test_old_completion_does_not_overwrite_the_newer_run() -> None:
    newer = fact(completion("b1", "r2", "c-2", pipeline="nlp", successful=3, when=at(100)))
    older = fact(
        completion("b1", "r1", "c-1", final_status="failed_critically", successful=0, failed=3, when=at(50))
    )
    batch = project("b1", [newer, older])
    assert batch == project("b1", [older, newer])
    assert batch.latest is not None
    assert batch.latest.run_id == "r2"
    assert batch.status == "completed_successfully"
    assert (batch.essays_succeeded, batch.essays_failed) == (3, 0)
    assert [r.run_id for r in batch.completions] == ["r1", "r2"]


# -- views --------------------------------------------------------------------------------------


def test_status_moves_from_registered_to_processing_to_the_final_status() -> None:
    batch = project("b1", [fact(registered("b1"))])
    assert batch.status == "registered"
    batch = apply_fact(batch, fact(outcome("b1", "spellcheck", "c-1", when=at(1))))
    assert batch.status == "processing"
    batch = apply_fact(batch, fact(completion("b1", "r1", "c-1", final_status="cancelled", when=at(2))))
    assert batch.status == "cancelled"
    # A newer run starts: processing again; an outcome older than the completion does not count.
    stale = apply_fact(batch, fact(outcome("b1", "nlp", "c-0", when=at(1))))
    assert stale.status == "cancelled"
    batch = apply_fact(batch, fact(outcome("b1", "nlp", "c-2", when=at(3))))
    assert batch.status == "processing"
    assert not batch.is_completed


def test_phases_keep_pruned_results_and_show_the_run_in_progress() -> None:
    run1 = {
        "spellcheck": ("completed_successfully", 3, 0, 2.0),
        "cj_assessment": ("failed", 0, 3, 5.0),
    }
    run2 = {"nlp": ("completed_with_partial_success", 2, 1, 4.0)}  # spellcheck pruned
    batch = project(
        "b1",
        [
            fact(completion("b1", "r1", "c-1", phases=run1, when=at(10))),
            fact(completion("b1", "r2", "c-2", pipeline="nlp", phases=run2, when=at(20))),
            fact(outcome("b1", "cj_assessment", "c-3", processed=["e0"], when=at(30))),
        ],
    )
    assert [(p.name, p.status, p.duration_seconds) for p in batch.phases] == [
        ("spellcheck", "completed_successfully", 2.0),
        ("cj_assessment", "completed_successfully", None),
        ("nlp", "completed_with_partial_success", 4.0),
    ]
    assert batch.completed_phases == ("spellcheck", "cj_assessment", "nlp")
    assert batch.last_activity_at == at(30)


# -- announcements, class deltas, cache keys ----------------------------------------------------


def test_runs_are_due_for_announcement_once_the_owner_is_known() -> None:
    runs = [fact(completion("b1", f"r{i}", f"c-{i}", when=at(i))) for i in (1, 2)]
    batch = project("b1", runs)
    assert pending_announcements(batch) == ()
    owned = apply_fact(batch, fact(registered("b1")))
    assert [r.run_id for r in pending_announcements(owned)] == ["r1", "r2"]
    marked = mark_announced(owned, ["r1"])
    assert [r.run_id for r in pending_announcements(marked)] == ["r2"]
    assert mark_announced(marked, ["r1"]) is marked


def test_class_deltas_move_a_batch_between_statuses() -> None:
    before = project("b1", [fact(registered("b1", class_id="k"))])
    after = apply_fact(before, fact(completion("b1", "r1", "c", successful=2, failed=1, when=at(5))))
    assert class_deltas(None, before) == (ClassDelta("k", 1, (("registered", 1),), 0, 0),)
    assert class_deltas(before, after) == (
        ClassDelta("k", 0, (("completed_successfully", 1), ("registered", -1)), 2, 1),
    )
    assert class_deltas(after, after) == ()
    guest = project("b2", [fact(registered("b2", class_id=None))])
    assert class_deltas(None, guest) == ()


def test_class_deltas_when_the_class_becomes_known() -> None:
    before = project("b1", [fact(completion("b1", "r1", "c", successful=2, when=at(5)))])
    after = apply_fact(before, fact(registered("b1", class_id="k")))
    assert class_deltas(before, after) == (ClassDelta("k", 1, (("completed_successfully", 1),), 2, 0),)


def test_cache_keys_cover_the_batch_its_class_and_its_teacher() -> None:
    before = project("b1", [fact(completion("b1", "r1", "c", when=at(5)))])
    assert cache_keys(None, before) == ("results:batch:b1",)
    after = apply_fact(before, fact(registered("b1", user_id="t1", class_id="k")))
    assert cache_keys(before, after) == ("results:batch:b1", "results:class:k", "results:teacher:t1")


def test_version_and_updated_at_are_not_part_of_equality() -> None:
    batch = project("b1", [fact(registered("b1"))])
    assert attrs.evolve(batch, version=9, updated_at=T0) == batch
