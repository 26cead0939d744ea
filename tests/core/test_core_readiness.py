"""Registration, the guest and regular readiness paths and critical validation errors."""

from __future__ import annotations

from typing import Any

import pytest
from core_flow import Flow, one, topics

from pipeline_state import BatchStatus, InMemoryRuntime
from pipeline_state.errors import BatchConflictError
from pipeline_state.profiles.huleedu.events import Topic
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes

REGISTERED = Topic.ESSAYS_REGISTERED.value
MATCHING = Topic.STUDENT_MATCHING.value


async def test_registration_emits_batch_essays_registered_with_essay_ids(flow: Flow) -> None:
    out = await flow.register("b1", items=3, owner="t9", group_id="class-7")

    assert topics(out) == [REGISTERED]
    assert out[0]["key"] == "b1"
    data = one(out, REGISTERED)
    assert data["entity_id"] == "b1"
    assert data["essay_ids"] == ["b1-e0", "b1-e1", "b1-e2"]
    assert data["expected_essay_count"] == 3
    assert data["user_id"] == "t9"
    assert data["class_id"] == "class-7"
    state = await flow.state("b1")
    assert state.status.value == "awaiting_content_validation"
    assert state.version == 1


async def test_registration_without_essay_ids_derives_them(
    rt: InMemoryRuntime, env: HuleEduEnvelopes
) -> None:
    topic, value = env.register("b1", items=2)
    value["data"]["essay_ids"] = None
    out = await rt.deliver(topic, value)

    ids = one(out, REGISTERED)["essay_ids"]
    assert len(ids) == 2
    assert len(set(ids)) == 2


async def test_identical_registration_is_ignored(flow: Flow, env: HuleEduEnvelopes) -> None:
    await flow.register("b1")
    topic, value = env.register("b1")

    out = await flow.rt.deliver(topic, value)

    assert out == []
    assert await flow.version("b1") == 1
    assert await flow.inbox_result(value["event_id"]) == "ignored:already_registered"


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"owner": "someone-else"}, id="user"),
        pytest.param({"group_id": "class-2"}, id="class"),
        pytest.param({"category": "SV1"}, id="course"),
        pytest.param({"items": 4}, id="count"),
    ],
)
async def test_conflicting_registration_raises_and_changes_nothing(
    flow: Flow, env: HuleEduEnvelopes, change: dict[str, Any]
) -> None:
    await flow.register("b1")
    before = await flow.state("b1")
    topic, value = env.register("b1", **change)

    with pytest.raises(BatchConflictError) as caught:
        await flow.rt.deliver(topic, value)

    assert caught.value.batch_id == "b1"
    assert await flow.state("b1") == before
    assert await flow.inbox_result(value["event_id"]) is None
    assert await flow.rt.store.pending_count() == 0


async def test_guest_batch_becomes_ready_on_provisioning(flow: Flow, env: HuleEduEnvelopes) -> None:
    await flow.register("b1", items=2)

    out = await flow.rt.deliver(*env.provisioned("b1", ["b1-e0", "b1-e1"]))

    assert out == []
    state = await flow.state("b1")
    assert state.status.value == "ready_for_pipeline_execution"
    assert [e.item_id for e in state.items] == ["b1-e0", "b1-e1"]


async def test_regular_batch_goes_through_student_validation(flow: Flow, env: HuleEduEnvelopes) -> None:
    await flow.register("b1", items=2, group_id="class-7")
    ids = ["b1-e0", "b1-e1"]

    out = await flow.rt.deliver(*env.provisioned("b1", ids))

    assert topics(out) == [MATCHING]
    assert out[0]["key"] == "b1"
    command = one(out, MATCHING)
    assert command["batch_id"] == "b1"
    assert command["class_id"] == "class-7"
    assert [e["essay_id"] for e in command["essays_to_process"]] == ids
    assert (await flow.state("b1")).status is BatchStatus.AWAITING_GROUP_VALIDATION

    assert await flow.rt.deliver(*env.group_confirmed("b1", "class-7", ids)) == []
    assert (await flow.state("b1")).status is BatchStatus.GROUP_VALIDATION_COMPLETED

    assert await flow.rt.deliver(*env.items_ready("b1", ids)) == []
    assert (await flow.state("b1")).status.value == "ready_for_pipeline_execution"
    await flow.start("b1", "nlp")


@pytest.mark.parametrize(
    ("class_id", "steps", "late"),
    [
        # Early readiness facts (associations or essays-ready before the state they follow)
        # wait for their batch instead: tests/core/test_core_waiting.py.
        pytest.param("class-7", 3, "provisioned", id="provisioned-again-when-ready"),
        pytest.param(None, 1, "associations", id="guest-associations"),
        pytest.param(None, 1, "essays_ready", id="guest-ready-after-ready"),
    ],
)
async def test_out_of_order_readiness_events_are_ignored(
    flow: Flow, env: HuleEduEnvelopes, class_id: str | None, steps: int, late: str
) -> None:
    ids = ["b1-e0", "b1-e1"]
    await flow.register("b1", items=2, group_id=class_id)
    path = [
        env.provisioned("b1", ids),
        env.group_confirmed("b1", "class-7", ids),
        env.items_ready("b1", ids),
    ]
    for delivery in path[:steps]:
        await flow.rt.deliver(*delivery)
    before = await flow.state("b1")
    messages = {
        "provisioned": env.provisioned("b1", ids),
        "associations": env.group_confirmed("b1", "class-7", ids),
        "essays_ready": env.items_ready("b1", ids),
    }
    topic, value = messages[late]

    assert await flow.rt.deliver(topic, value) == []

    assert await flow.state("b1") == before
    result = await flow.inbox_result(value["event_id"])
    assert result is not None
    assert result.startswith("ignored:unexpected:")


async def test_critical_validation_error_fails_the_batch_for_good(flow: Flow, env: HuleEduEnvelopes) -> None:
    await flow.register("b1")

    assert await flow.rt.deliver(*env.validation_errors("b1", critical=True)) == []
    assert (await flow.state("b1")).status.value == "failed_critically"

    # Terminal: content arriving later is ignored and a request is denied.
    assert await flow.rt.deliver(*env.provisioned("b1", ["b1-e0", "b1-e1", "b1-e2"])) == []
    out = await flow.request("b1", "nlp")
    assert one(out, Topic.PIPELINE_DENIED.value)["denial_reason"] == "batch_not_ready"
    assert (await flow.state("b1")).status.value == "failed_critically"


async def test_critical_validation_error_during_a_run_closes_it(flow: Flow, env: HuleEduEnvelopes) -> None:
    await flow.ready("b1")
    started = await flow.start("b1", "nlp")

    out = await flow.rt.deliver(*env.validation_errors("b1", critical=True))

    completed = one(out, Topic.PIPELINE_COMPLETED.value)
    assert completed["final_status"] == "failed_critically"
    assert completed["correlation_id"] == started.correlation_id
    state = await flow.state("b1")
    assert state.status.value == "failed_critically"
    assert state.active_run is None
    assert state.history[-1].phase_statuses == {"spellcheck": "cancelled", "nlp": "cancelled"}


async def test_non_critical_validation_errors_are_ignored(flow: Flow, env: HuleEduEnvelopes) -> None:
    await flow.register("b1")
    topic, value = env.validation_errors("b1", critical=False)

    assert await flow.rt.deliver(topic, value) == []

    assert (await flow.state("b1")).status.value == "awaiting_content_validation"
    assert await flow.version("b1") == 1
    assert await flow.inbox_result(value["event_id"]) == "ignored:non_critical_validation_errors"


async def test_readiness_event_for_unknown_batch_waits(rt: InMemoryRuntime, env: HuleEduEnvelopes) -> None:
    # Issue 11: an early fact waits for its batch's registration (it used to raise).
    topic, value = env.provisioned("ghost", ["e1"])
    assert await rt.deliver(topic, value) == []
    assert rt.store.batch_count() == 0
    entry = await rt.store.inbox_entry(value["event_id"])
    assert entry is not None
    assert entry.result == "deferred:batch_registration"
    assert await rt.store.count_waiting() == 1
