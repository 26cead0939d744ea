"""Issue 11.3 (correlation strict where it can know) and 11.4 (no run blocks its batch for
ever: default deadlines, re-sends with the same event id, then ``timeout``)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from core_flow import Flow, new_id, one

from pipeline_state import CancelRun, Catalog, DefinitionError, InMemoryRuntime
from pipeline_state._commands import Command, ExpireOverdue
from pipeline_state._decide import CORRELATION_MISMATCH, decide, derive_id, outbox_event_id
from pipeline_state._model import evolve
from pipeline_state.profiles.huleedu.events import Topic, parse_message
from pipeline_state.profiles.huleedu.profile import HULEEDU_DEFAULT_DEADLINE_SECONDS, huleedu_profile
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes


def _flow(**profile: object) -> Flow:
    return Flow(InMemoryRuntime(huleedu_profile(**profile)), HuleEduEnvelopes())  # type: ignore[arg-type]


# -- correlation --------------------------------------------------------------------------


async def test_outcome_with_a_foreign_correlation_id_is_applied_and_flagged() -> None:
    flow = _flow()
    ids = await flow.ready("b1")
    corr = (await flow.start("b1", "nlp")).correlation_id
    foreign = new_id()
    topic, value = flow.env.outcome("b1", "spellcheck", foreign, processed=ids)
    state = await flow.state("b1")
    _, payload = parse_message(topic, value)

    decision = decide(
        state,
        Command(payload, value["event_id"], foreign),
        profile=flow.rt.service.profile,
        now=flow.rt.clock.now(),
    )

    assert decision.ignored is None
    assert decision.flags == (CORRELATION_MISMATCH,)
    phase_moves = [m for m in decision.moves if m.entity == "phase"]
    assert [(m.name, m.trigger) for m in phase_moves] == [("spellcheck", "succeed"), ("nlp", "dispatch")]
    # The flag marks the doubtful outcome's own move, not the dispatch it caused.
    assert [m.note for m in phase_moves] == [CORRELATION_MISMATCH, None]
    # Through the service: the run goes on with its own correlation id and completes.
    out = await flow.rt.deliver(topic, value)
    assert one(out, Topic.NLP.value)["batch_id"] == "b1"
    assert {m["value"]["correlation_id"] for m in out} == {corr}
    out = await flow.outcome("b1", "nlp", new_id(), processed=ids)
    assert one(out, Topic.PIPELINE_COMPLETED.value)["final_status"] == "completed_successfully"


async def test_outcome_with_an_earlier_runs_correlation_id_stays_stale() -> None:
    flow = _flow()
    ids = await flow.ready("b1")
    old = (await flow.start("b1", "nlp")).correlation_id
    await flow.rt.execute(CancelRun("b1"))
    await flow.start("b1", "nlp")
    topic, value = flow.env.outcome("b1", "spellcheck", old, processed=ids)

    assert await flow.rt.deliver(topic, value) == []
    assert await flow.inbox_result(value["event_id"]) == "ignored:stale_run"


async def test_strict_correlation_ignores_a_foreign_correlation_id() -> None:
    flow = _flow(strict_correlation=True)
    ids = await flow.ready("b1")
    await flow.start("b1", "nlp")
    before = await flow.state("b1")
    topic, value = flow.env.outcome("b1", "spellcheck", new_id(), processed=ids)

    assert await flow.rt.deliver(topic, value) == []
    assert await flow.inbox_result(value["event_id"]) == "ignored:stale_run"
    assert await flow.state("b1") == before


async def test_applied_outcomes_with_the_runs_correlation_id_are_not_flagged() -> None:
    flow = _flow()
    ids = await flow.ready("b1")
    corr = (await flow.start("b1", "nlp")).correlation_id
    topic, value = flow.env.outcome("b1", "spellcheck", corr, processed=ids)
    _, payload = parse_message(topic, value)
    decision = decide(
        await flow.state("b1"),
        Command(payload, new_id(), corr),
        profile=flow.rt.service.profile,
        now=flow.rt.clock.now(),
    )
    assert decision.flags == ()
    assert all(m.note is None for m in decision.moves)


# -- deadlines ----------------------------------------------------------------------------


async def test_every_phase_of_the_shipped_profile_has_a_default_deadline() -> None:
    flow = _flow()
    await flow.ready("b1")
    await flow.start("b1", "comprehensive")
    run = (await flow.state("b1")).active_run
    assert run is not None
    assert {p.name: p.deadline_seconds for p in run.phases} == dict.fromkeys(
        ("spellcheck", "cj_assessment", "nlp", "ai_feedback"), HULEEDU_DEFAULT_DEADLINE_SECONDS
    )
    spell = run.phase("spellcheck")
    assert spell is not None
    assert spell.deadline_at is not None


def test_deadlines_come_from_the_deployment_then_the_catalog_then_the_default() -> None:
    catalog = Catalog.from_dict(
        {
            "pipelines": {
                "nlp": {
                    "steps": [
                        {"name": "spellcheck", "deadline_seconds": 60},
                        {"name": "nlp", "depends_on": ["spellcheck"]},
                    ]
                }
            }
        }
    )
    steps = catalog.get("nlp").steps
    assert [huleedu_profile(catalog=catalog).deadline_for(s) for s in steps] == [60.0, 3600.0]
    deployed = huleedu_profile(catalog=catalog, deadlines={"spellcheck": 5, "nlp": None})
    assert [deployed.deadline_for(s) for s in steps] == [5.0, None]
    opted_out = huleedu_profile(catalog=catalog, default_deadline_seconds=None)
    assert [opted_out.deadline_for(s) for s in steps] == [60.0, None]


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"deadlines": {"astrology": 5}}, "astrology"),
        ({"deadlines": {"nlp": -1}}, "deadlines['nlp']"),
        ({"default_deadline_seconds": 0}, "default_deadline_seconds"),
        ({"max_resends": -1}, "max_resends"),
    ],
)
def test_bad_deadline_settings_are_definition_errors(kwargs: dict[str, object], words: str) -> None:
    with pytest.raises(DefinitionError) as caught:
        huleedu_profile(**kwargs)  # type: ignore[arg-type]
    assert words in str(caught.value)


# -- re-sends -----------------------------------------------------------------------------


def test_derive_id_is_uuid5() -> None:
    namespace = uuid.UUID("6f1c1c2e-9a53-4b8e-8f3c-0d8c43f1b7a1")
    for parts in (("a",), ("e", "out", "0"), (str(uuid.uuid4()), "run"), ("é", "😀")):
        assert derive_id(*parts) == str(uuid.uuid5(namespace, "\x1f".join(parts)))


async def test_an_overdue_command_is_re_sent_with_its_event_id_then_the_phase_times_out() -> None:
    flow = _flow(max_resends=2)
    ids = await flow.ready("b1")
    started = await flow.start("b1", "nlp")
    command = next(m for m in started.out if m["topic"] == Topic.SPELLCHECK.value)
    state = await flow.state("b1")
    spell = state.active_run.phase("spellcheck")  # type: ignore[union-attr]
    assert spell is not None
    # The recorded id is the published one (the wire stays the same).
    assert spell.command_event_id == command["value"]["event_id"]

    for attempt in (1, 2):
        flow.rt.clock.advance(HULEEDU_DEFAULT_DEADLINE_SECONDS)
        results = await flow.rt.service.expire_overdue()
        (result,) = results
        assert result.decision is not None
        assert result.decision.resend == (spell.command_event_id,)
        assert [(m.name, m.trigger, m.source, m.dest) for m in result.decision.moves] == [
            ("spellcheck", "expire", "dispatch_initiated", "dispatch_initiated")
        ]
        phase = (await flow.state("b1")).active_run.phase("spellcheck")  # type: ignore[union-attr]
        assert phase is not None
        assert (phase.status.value, phase.resends) == ("dispatch_initiated", attempt)
        # A fresh deadline, counted from the re-send.
        assert phase.deadline_at == flow.rt.clock.now() + timedelta(seconds=HULEEDU_DEFAULT_DEADLINE_SECONDS)

    flow.rt.clock.advance(HULEEDU_DEFAULT_DEADLINE_SECONDS)
    out = await flow.rt.expire_overdue()
    completed = one(out, Topic.PIPELINE_COMPLETED.value)
    assert completed["final_status"] == "failed_critically"
    assert completed["phase_results"]["spellcheck"]["failed"] == len(ids)
    state = await flow.state("b1")
    assert state.status.value == "ready_for_pipeline_execution"
    assert state.history[-1].phase("spellcheck").error == "timeout"  # type: ignore[union-attr]
    # The next request is accepted.
    assert (await flow.start("b1", "nlp")).correlation_id != started.correlation_id


async def test_a_silent_workers_run_shows_as_stalled_through_its_re_sends() -> None:
    """Found by review: each re-send counted as progress, so with the default deadline and
    the default threshold (both an hour) a run nobody answers never showed as stalled."""
    flow = _flow(max_resends=2)
    await flow.ready("b1")
    started_at = flow.rt.clock.now()
    await flow.start("b1", "nlp")
    for _ in (1, 2):
        flow.rt.clock.advance(HULEEDU_DEFAULT_DEADLINE_SECONDS)
        (result,) = await flow.rt.service.expire_overdue()
        assert result.decision is not None
        assert result.decision.resend  # re-sent, not failed
        stalled = await flow.rt.store.stalled_runs(flow.rt.clock.now(), HULEEDU_DEFAULT_DEADLINE_SECONDS)
        assert [(s.batch_id, s.last_change_at) for s in stalled] == [("b1", started_at)]
    flow.rt.clock.advance(HULEEDU_DEFAULT_DEADLINE_SECONDS)
    await flow.rt.expire_overdue()  # the phase times out: the run completes
    assert await flow.rt.store.stalled_runs(flow.rt.clock.now(), 0) == []


async def test_a_re_sent_phase_still_takes_its_outcome() -> None:
    flow = _flow()
    ids = await flow.ready("b1")
    corr = (await flow.start("b1", "nlp")).correlation_id
    flow.rt.clock.advance(HULEEDU_DEFAULT_DEADLINE_SECONDS + 1)
    await flow.rt.expire_overdue()

    out = await flow.outcome("b1", "spellcheck", corr, processed=ids)

    assert one(out, Topic.NLP.value)["batch_id"] == "b1"


def test_a_phase_dispatched_before_event_ids_were_recorded_times_out_at_once() -> None:
    profile = huleedu_profile()
    env = HuleEduEnvelopes()
    Cmd = Command
    now = datetime(2025, 1, 1, tzinfo=UTC)
    state = None
    for topic, value in (
        env.register("b1", items=1),
        env.provisioned("b1", env.item_ids("b1", 1)),
        env.request("b1", "nlp"),
    ):
        envelope, payload = parse_message(topic, value)
        state = decide(
            state,
            Cmd(payload, str(envelope.event_id), str(envelope.correlation_id)),
            profile=profile,
            now=now,
        ).state
    assert state is not None
    assert state.active_run is not None
    old = tuple(evolve(p, command_event_id=None) for p in state.active_run.phases)
    state = evolve(state, active_run=evolve(state.active_run, phases=old))
    later = datetime(2025, 1, 2, tzinfo=UTC)

    decision = decide(state, Cmd(ExpireOverdue("b1"), new_id(), new_id()), profile=profile, now=later)

    assert decision.resend == ()
    first = next(m for m in decision.moves if m.entity == "phase")
    assert (first.trigger, first.source, first.dest) == ("expire", "dispatch_initiated", "failed")


def test_outbox_event_id_is_the_services_rule() -> None:
    assert outbox_event_id("e1", 3) == derive_id("e1", "out", "3")
