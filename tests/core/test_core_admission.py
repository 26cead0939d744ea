"""Admission: every denial reason, in contract order, never silent and never changing state."""

from __future__ import annotations

import pytest
from core_flow import Flow, Message, one, topics

from pipeline_state import InMemoryCreditLedger, InMemoryRuntime, Profile, RateLimitGuard
from pipeline_state.profiles.huleedu.events import Topic
from pipeline_state.profiles.huleedu.profile import huleedu_profile
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes

DENIED = Topic.PIPELINE_DENIED.value
NOTIFY = Topic.TEACHER_NOTIFICATION.value


def assert_denied(
    out: list[Message], *, batch_id: str, pipeline: str, reason: str, user: str = "teacher-1"
) -> None:
    """A denial is a PipelineDeniedV1 plus an immediate, actionable teacher notification."""
    assert topics(out) == [DENIED, NOTIFY]
    denied_msg, note_msg = out
    assert denied_msg["key"] == batch_id
    denied = denied_msg["value"]["data"]
    assert denied["batch_id"] == batch_id
    assert denied["user_id"] == user
    assert denied["requested_pipeline"] == pipeline
    assert denied["denial_reason"] == reason
    assert note_msg["key"] == user
    note = note_msg["value"]["data"]
    assert note["teacher_id"] == user
    assert note["notification_type"] == "pipeline_denied"
    assert note["category"] == "batch_progress"
    assert note["priority"] == "immediate"
    assert note["action_required"] is True
    assert note["batch_id"] == batch_id
    assert note["payload"]["denial_reason"] == reason
    corr = denied_msg["value"]["correlation_id"]
    assert note_msg["value"]["correlation_id"] == corr
    assert note["correlation_id"] == corr


async def test_unknown_batch_is_denied_without_creating_state(
    rt: InMemoryRuntime, env: HuleEduEnvelopes
) -> None:
    # Issue 11: the request first waits for the registration; when its window passes
    # without one, it is denied batch_not_found (never silent).
    topic, value = env.request("ghost", "nlp", requested_by="t1")

    assert await rt.deliver(topic, value) == []
    rt.clock.advance(rt.service.waiting_window_seconds + 1)
    assert await rt.service.expired_waiting() == []  # a request is denied, not dead-lettered
    await rt.relay.drain()
    out = [m.as_dict() for m in rt.bus.messages()]

    assert_denied(out, batch_id="ghost", pipeline="nlp", reason="batch_not_found", user="t1")
    assert rt.store.batch_count() == 0
    entry = await rt.store.inbox_entry(value["event_id"])
    assert entry is not None
    assert entry.result == "denied:batch_not_found"
    assert await rt.store.count_waiting() == 0


async def test_active_run_is_denied_pipeline_already_active(flow: Flow) -> None:
    await flow.ready("b1")
    await flow.start("b1", "nlp")
    before = await flow.state("b1")

    out = await flow.request("b1", "cj_assessment")

    assert_denied(out, batch_id="b1", pipeline="cj_assessment", reason="pipeline_already_active")
    assert await flow.state("b1") == before


@pytest.mark.parametrize("class_id", [None, "class-7"])
async def test_batch_not_ready_is_denied(flow: Flow, env: HuleEduEnvelopes, class_id: str | None) -> None:
    await flow.register("b1", group_id=class_id)
    if class_id is not None:
        await flow.rt.deliver(*env.provisioned("b1", env.item_ids("b1", 3)))
    before = await flow.state("b1")

    out = await flow.request("b1", "nlp")

    assert_denied(out, batch_id="b1", pipeline="nlp", reason="batch_not_ready")
    assert await flow.state("b1") == before


async def test_unknown_pipeline_is_denied(flow: Flow) -> None:
    await flow.ready("b1")
    before = await flow.state("b1")

    out = await flow.request("b1", "astrology")

    assert_denied(out, batch_id="b1", pipeline="astrology", reason="unknown_pipeline")
    assert await flow.state("b1") == before


async def test_missing_prompt_is_denied(flow: Flow) -> None:
    await flow.ready("b1", prompt=None)
    before = await flow.state("b1")

    out = await flow.request("b1", "cj_assessment")

    assert_denied(out, batch_id="b1", pipeline="cj_assessment", reason="prompt_not_attached")
    assert await flow.state("b1") == before


async def test_prompt_payload_on_the_request_attaches_a_prompt(flow: Flow) -> None:
    await flow.ready("b1", prompt=None)

    started = await flow.start("b1", "cj_assessment", prompt_payload={"prompt_ref": "p-9"})

    assert started.run_id
    assert (await flow.state("b1")).prompt_ref == "p-9"


def _flow(profile: Profile) -> Flow:
    return Flow(InMemoryRuntime(profile), HuleEduEnvelopes())


async def test_insufficient_credits_is_denied() -> None:
    # 3 essays x 2 phases (spellcheck, nlp) x 1 credit = 6 credits needed.
    ledger = InMemoryCreditLedger({"teacher-1": 5})
    flow = _flow(huleedu_profile(credits=ledger))
    await flow.ready("b1")
    before = await flow.state("b1")

    out = await flow.request("b1", "nlp")

    assert_denied(out, batch_id="b1", pipeline="nlp", reason="insufficient_credits")
    assert await flow.state("b1") == before
    ledger.balances["teacher-1"] = 6
    await flow.start("b1", "nlp")


async def test_rate_limit_is_denied() -> None:
    flow = _flow(huleedu_profile(extra_guards=[RateLimitGuard(max_runs=1, window_seconds=60)]))
    ids = await flow.ready("b1")
    started = await flow.start("b1", "nlp")
    await flow.outcome("b1", "spellcheck", started.correlation_id, processed=ids)
    await flow.outcome("b1", "nlp", started.correlation_id, processed=ids)
    before = await flow.state("b1")
    assert before.status.value == "ready_for_pipeline_execution"

    out = await flow.request("b1", "cj_assessment")

    assert_denied(out, batch_id="b1", pipeline="cj_assessment", reason="rate_limit_exceeded")
    assert await flow.state("b1") == before
    flow.rt.clock.advance(61)
    await flow.start("b1", "cj_assessment")


@pytest.mark.parametrize(
    ("setup", "pipeline", "expected"),
    [
        pytest.param("active", "astrology", "pipeline_already_active", id="active-beats-unknown-pipeline"),
        pytest.param("active", "cj_assessment", "pipeline_already_active", id="active-beats-guards"),
        pytest.param("not_ready", "astrology", "batch_not_ready", id="not-ready-beats-unknown-pipeline"),
        pytest.param("not_ready", "cj_assessment", "batch_not_ready", id="not-ready-beats-guards"),
        pytest.param("ready", "astrology", "unknown_pipeline", id="unknown-pipeline-beats-guards"),
        pytest.param("ready", "cj_assessment", "prompt_not_attached", id="prompt-beats-credits"),
    ],
)
async def test_denials_follow_contract_order(setup: str, pipeline: str, expected: str) -> None:
    # Every later check would also fail: no prompt, no credits, rate limit reached.
    ledger = InMemoryCreditLedger()
    guards = [RateLimitGuard(max_runs=1, window_seconds=3600)]
    flow = _flow(huleedu_profile(credits=ledger, extra_guards=guards))
    if setup == "not_ready":
        await flow.register("b1", prompt=None)
    else:
        await flow.ready("b1", prompt=None)
    if setup == "active":
        # Let the one run the rate limit allows in (with a prompt and credits), then drain them.
        ledger.balances["teacher-1"] = 100
        await flow.start("b1", "nlp", prompt_payload={"prompt_ref": "p"})
        ledger.balances["teacher-1"] = 0
    before = await flow.state("b1")

    out = await flow.request("b1", pipeline)

    assert one(out, DENIED)["denial_reason"] == expected
    assert await flow.state("b1") == before


async def test_denial_is_not_recorded_as_a_run(flow: Flow) -> None:
    await flow.ready("b1")
    await flow.request("b1", "astrology")

    state = await flow.state("b1")
    assert state.history == ()
    assert state.active_run is None
    await flow.start("b1", "nlp")
