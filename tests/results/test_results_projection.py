"""The projection rules: facts from messages, winner rules, the views, class deltas, cache keys."""

from __future__ import annotations

import attrs
import pytest
from results_events import T0, Delivery, at, completion, dispatch, outcome, registered, skipped, uid

from pipeline_state.errors import UnknownTopicError
from pipeline_state.profiles.huleedu.events import Topic, parse_message
from pipeline_state.profiles.huleedu.results import (
    BatchResults,
    ClassDelta,
    Owner,
    PhaseDispatch,
    PhaseOutcome,
    PhasePruned,
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


def test_earliest_outcome_of_a_phase_wins_and_ties_break_on_content() -> None:
    """The engine applies the first outcome of a phase in a run and ignores a repeat
    (``duplicate_outcome``): the earliest wins (this test said the latest did, before the
    read model followed the engine)."""
    first = fact(outcome("b1", "nlp", "c-1", processed=["e0"], failed=["e1"], when=at(1), event_id="a"))
    retry = fact(outcome("b1", "nlp", "c-1", processed=["e0", "e1"], when=at(2), event_id="b"))
    sent = fact(dispatch("b1", "nlp", "c-1", items=["e0", "e1"], when=at(0)))
    for order in ([first, retry], [retry, first]):
        (only,) = project("b1", order).outcomes
        assert (only.event_id, only.successful) == (uid("a"), 1)
        (shown,) = project("b1", [sent, *order]).in_progress
        assert (shown.event_id, shown.successful, shown.failed) == (uid("a"), 1, 1)
    # Same instant, different content: the content decides, not the arrival order.
    one = fact(outcome("b1", "nlp", "c-1", processed=["e0"], when=at(1)))
    two = fact(outcome("b1", "nlp", "c-1", processed=["e0", "e1"], when=at(1)))
    assert project("b1", [one, two]).outcomes == project("b1", [two, one]).outcomes
    assert project("b1", [sent, one, two]).in_progress == project("b1", [two, sent, one]).in_progress
    assert project("b1", [one, two]).outcomes[0].successful == 1


def test_an_outcome_naming_more_items_than_sent_is_kept_but_never_shown() -> None:
    """The engine refuses an outcome naming more items than the phase was sent and applies
    the next one that fits: the read model keeps every outcome that could be the one shown
    (the earliest, and each later one with fewer figures) and shows the earliest that fits
    the dispatch, in any order of arrival."""
    forged = fact(outcome("b1", "nlp", "c-1", processed=[f"x{i}" for i in range(9)], when=at(1)))
    real = fact(outcome("b1", "nlp", "c-1", processed=["e0"], failed=["e1"], when=at(2), event_id="r"))
    repeat = fact(outcome("b1", "nlp", "c-1", processed=["e0", "e1"], when=at(3)))
    sent = fact(dispatch("b1", "nlp", "c-1", items=["e0", "e1"], when=at(0)))
    expected = project("b1", [sent, forged, real, repeat])
    assert [(o.successful, o.failed) for o in expected.outcomes] == [(9, 0), (1, 1)]
    assert [(o.event_id, o.total) for o in expected.in_progress] == [(uid("r"), 2)]
    for order in ([repeat, real, forged, sent], [real, sent, repeat, forged], [forged, repeat, sent, real]):
        assert project("b1", order) == expected
    # Without the dispatch nothing is shown; a dispatch sending one item admits none of them.
    assert project("b1", [forged, real, repeat]).in_progress == ()
    narrow = fact(dispatch("b1", "nlp", "c-1", items=["e0"], when=at(0)))
    assert project("b1", [narrow, forged, real, repeat]).in_progress == ()
    assert project("b1", [narrow, forged, real, repeat]).status == "processing"


def test_dispatch_becomes_a_phase_dispatch_with_its_item_count() -> None:
    f = fact(dispatch("b1", "cj_assessment", "c-1", items=["e0", "e1", "e2"], when=at(4), event_id="d"))
    assert (f.batch_id, f.event_id, f.event_type) == ("b1", uid("d"), Topic.CJ_ASSESSMENT.value)
    assert f.body == PhaseDispatch(uid("c-1"), "cj_assessment", 3, at(4), uid("d"))
    assert f.correlation_id == uid("c-1")


def test_skip_as_already_completed_becomes_a_pruned_phase_and_other_skips_nothing() -> None:
    f = fact(skipped("b1", "spellcheck", "c-2", when=at(4), event_id="s"))
    assert f.body == PhasePruned(uid("c-2"), "spellcheck", at(4), uid("s"))
    other = fact(skipped("b1", "nlp", "c-2", reason="dependency_failed", when=at(4)))
    assert other.body is None
    assert apply_fact(None, other) == BatchResults("b1")
    known = project("b1", [fact(registered("b1"))])
    assert apply_fact(known, other) is known


def test_the_earliest_dispatch_wins_and_a_completion_drops_its_runs_dispatches() -> None:
    first = fact(dispatch("b1", "nlp", "c-1", items=["e0", "e1"], when=at(1), event_id="a"))
    again = fact(dispatch("b1", "nlp", "c-1", items=["e0"], when=at(2), event_id="b"))
    for order in ([first, again], [again, first]):
        (only,) = project("b1", order).dispatches
        assert (only.event_id, only.items) == (uid("a"), 2)
    other = fact(dispatch("b1", "spellcheck", "c-2", when=at(20)))
    done = fact(completion("b1", "r1", "c-1", when=at(10)))
    for order in ([first, other, done], [done, other, first]):
        batch = project("b1", order)
        assert [(d.correlation_id, d.phase) for d in batch.dispatches] == [(uid("c-2"), "spellcheck")]
        assert batch.status == "processing"


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
    batch = apply_fact(batch, fact(dispatch("b1", "spellcheck", "c-1", when=at(0.5))))
    batch = apply_fact(batch, fact(outcome("b1", "spellcheck", "c-1", when=at(1))))
    assert batch.status == "processing"
    batch = apply_fact(batch, fact(completion("b1", "r1", "c-1", final_status="cancelled", when=at(2))))
    assert batch.status == "cancelled"
    # A newer run starts: processing again; an outcome older than the completion does not
    # count, nor does the dispatch of a run older than it (its completion has not arrived).
    stale = apply_fact(batch, fact(outcome("b1", "nlp", "c-0", when=at(1))))
    assert stale.status == "cancelled"
    stale = apply_fact(stale, fact(dispatch("b1", "nlp", "c-0", when=at(0.5))))
    assert (stale.status, stale.in_progress) == ("cancelled", ())
    # An outcome alone (a lost correlation id) is no run in progress.
    lost = apply_fact(batch, fact(outcome("b1", "nlp", "c-lost", when=at(5))))
    assert (lost.status, lost.in_progress) == ("cancelled", ())
    batch = apply_fact(batch, fact(dispatch("b1", "nlp", "c-2", when=at(2.5))))
    assert batch.status == "processing"  # dispatched, no outcome yet
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
            fact(dispatch("b1", "cj_assessment", "c-3", items=["e0", "e1", "e2"], when=at(25))),
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
