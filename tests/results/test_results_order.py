"""Order independence: the same events of a batch in any order give the same read model.

Scenarios hold a registration (or not), up to three runs with the engine's dispatches (some
missing, some repeated with other figures), pruned-phase notices, retried outcomes (some
naming more items than were sent, some with a lost correlation id) and completions (the last
run possibly still in progress), ties in timestamps and redelivered messages. Each is
replayed in Hypothesis-chosen permutations, through the pure projection and through the
service with its store, and compared with the scenario in its original order.
"""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from results_events import Delivery, at, completion, dispatch, outcome, registered, skipped, uid

from pipeline_state import ManualClock
from pipeline_state.profiles.huleedu.events import Topic, parse_message
from pipeline_state.profiles.huleedu.results import (
    InMemoryResultsStore,
    ResultsService,
    batch_view,
    fact_from_message,
    project,
)

PHASES = ("spellcheck", "nlp", "cj_assessment", "ai_feedback")
FINAL = ("completed_successfully", "completed_with_failures", "failed_critically", "cancelled")
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def scenarios(draw: st.DrawFn) -> list[Delivery]:
    """One batch's messages in the order they were produced, redeliveries appended."""
    messages: list[Delivery] = []
    for n in range(draw(st.integers(0, 2))):  # a second registration fact disagrees on purpose
        class_id = draw(st.sampled_from([None, "k1", "k2"]))
        when = at(draw(st.integers(0, 3)))
        messages.append(registered("b1", user_id=f"t{n}", class_id=class_id, when=when, event_id=f"reg-{n}"))
    clock = 0
    runs = draw(st.integers(0, 3))
    for i in range(runs):
        corr = f"corr-{i}"
        if draw(st.booleans()):
            reason = draw(st.sampled_from(["already_completed", "already_completed", "dependency_failed"]))
            pruned = draw(st.sampled_from(PHASES))
            messages.append(skipped("b1", pruned, corr, reason=reason, when=at(clock), event_id=f"skip-{i}"))
        for phase in draw(st.lists(st.sampled_from(PHASES), min_size=1, max_size=3, unique=True)):
            for sent in range(draw(st.sampled_from([0, 1, 1, 1, 2]))):  # none, once, twice
                clock += draw(st.integers(0, 2))
                items = [f"e{k}" for k in range(draw(st.integers(0, 4)))]
                messages.append(
                    dispatch(
                        "b1", phase, corr, items=items, when=at(clock), event_id=f"cmd-{i}-{phase}-{sent}"
                    )
                )
            lost = draw(st.integers(0, 5)) == 0  # the worker lost the correlation id
            for attempt in range(draw(st.integers(1, 2))):
                clock += draw(st.integers(0, 3))
                ok = draw(st.integers(0, 3))
                bad = draw(st.integers(0, 2))
                messages.append(
                    outcome(
                        "b1",
                        phase,
                        f"lost-{i}" if lost else corr,
                        processed=[f"e{k}" for k in range(ok)],
                        failed=[f"x{k}" for k in range(bad)],
                        when=at(clock),
                        event_id=f"out-{i}-{phase}-{attempt}",
                    )
                )
        if i < runs - 1 or draw(st.booleans()):
            clock += draw(st.integers(0, 3))
            ok = draw(st.integers(0, 4))
            messages.append(
                completion(
                    "b1",
                    f"run-{i}",
                    corr,
                    final_status=draw(st.sampled_from(FINAL)),
                    successful=ok,
                    failed=4 - ok,
                    duration=float(draw(st.integers(1, 60))),
                    when=at(clock),
                    event_id=f"done-{i}",
                )
            )
    if messages:
        messages += draw(st.lists(st.sampled_from(messages), max_size=3))
    return messages


def _facts(messages: list[Delivery]) -> list[Any]:
    out = []
    for topic, value in messages:
        envelope, payload = parse_message(topic, value, inbound_only=False)
        out.append(fact_from_message(topic, envelope, payload))
    return out


@SETTINGS
@given(st.data())
def test_projection_is_the_same_in_any_order(data: st.DataObject) -> None:
    messages = data.draw(scenarios())
    reordered = data.draw(st.permutations(messages))
    expected = project("b1", _facts(messages))
    got = project("b1", _facts(reordered))
    assert got == expected
    assert batch_view(got) == batch_view(expected)


@SETTINGS
@given(st.data())
def test_projection_merge_is_idempotent(data: st.DataObject) -> None:
    facts = _facts(data.draw(scenarios()))
    once = project("b1", facts)
    assert project("b1", facts + facts) == once


async def _replay(messages: list[Delivery]) -> tuple[InMemoryResultsStore, list[Any]]:
    store = InMemoryResultsStore()
    service = ResultsService(store, clock=ManualClock())
    handled = [await service.handle_message(topic, value) for topic, value in messages]
    return store, handled


@SETTINGS
@given(st.data())
def test_service_gives_the_same_read_model_and_class_summary_in_any_order(data: st.DataObject) -> None:
    messages = data.draw(scenarios())
    reordered = data.draw(st.permutations(messages))
    reference, _ = asyncio.run(_replay(messages))
    store, handled = asyncio.run(_replay(reordered))

    expected = asyncio.run(reference.load("b1"))
    got = asyncio.run(store.load("b1"))
    assert got == expected
    for class_id in ("k1", "k2"):
        assert asyncio.run(store.class_results(class_id)) == asyncio.run(reference.class_results(class_id))

    # Every completed run is announced exactly once, once the owner is known.
    rows = store.outbox_rows()
    ids = [r.message.event_id for r in rows]
    assert len(ids) == len(set(ids))
    notified = [
        r.message.value["data"]["payload"]["run_id"]
        for r in rows
        if r.message.topic == Topic.TEACHER_NOTIFICATION.value
    ]
    ready = [
        r.message.value["data"]["batch_id"] for r in rows if r.message.topic == Topic.RESULTS_READY.value
    ]
    completed = [] if got is None else [c.run_id for c in got.completions]
    owned = got is not None and got.owner is not None
    assert sorted(notified) == (sorted(completed) if owned else [])
    assert len(ready) == len(notified)
    # Redelivered event ids were recognised as duplicates.
    event_ids = [value["event_id"] for _, value in reordered]
    assert sum(h.duplicate for h in handled) == len(event_ids) - len(set(event_ids))


def test_scenarios_cover_the_interesting_cases() -> None:
    """A fixed scenario with every kind of message, as a sanity check of the builders."""
    messages = [
        registered("b1", user_id="t1", class_id="k1", when=at(0)),
        dispatch("b1", "spellcheck", "corr-0", when=at(0.5), event_id="s0"),
        outcome("b1", "spellcheck", "corr-0", when=at(1), event_id="o1"),
        completion("b1", "run-0", "corr-0", when=at(2), event_id="d0"),
        dispatch("b1", "nlp", "corr-1", when=at(2.5), event_id="s1"),
        outcome("b1", "nlp", "corr-1", when=at(3), event_id="o2"),
    ]
    batch = project("b1", _facts(messages))
    assert batch.status == "processing"
    assert [o.correlation_id for o in batch.outcomes] == [uid("corr-1")]
    assert batch.latest is not None
    assert batch.latest.run_id == "run-0"
