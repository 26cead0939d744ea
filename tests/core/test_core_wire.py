"""Wire contract: typed parse errors naming topic and field, extra fields ignored, and every
outgoing message a valid envelope with a valid payload, the right key and deterministic ids."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest
from core_flow import Flow, Message, new_id

from pipeline_state import EventEnvelope, InMemoryRuntime, InvalidMessageError, PipelineStateError
from pipeline_state.errors import UnknownTopicError
from pipeline_state.profiles.huleedu.events import (
    TOPICS,
    BatchRegistrationRequestV1,
    ELSBatchPhaseOutcomeV1,
    Topic,
    parse_message,
)
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes

REGISTER = Topic.BATCH_REGISTER.value
OUTCOME = Topic.PHASE_OUTCOME.value


def _register_value() -> dict[str, Any]:
    return HuleEduEnvelopes().register("b1")[1]


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(envelope: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target: Any = envelope
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target[part]
        target[last] = value

    return change


def _drop(path: str) -> Callable[[dict[str, Any]], None]:
    def change(envelope: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target: Any = envelope
        for part in parents:
            target = target[part]
        del target[last]

    return change


@pytest.mark.parametrize(
    ("change", "field"),
    [
        pytest.param(_drop("data.batch_id"), "data.batch_id", id="missing-data-field"),
        pytest.param(_drop("data.user_id"), "data.user_id", id="missing-user"),
        pytest.param(_set("data.expected_essay_count", "many"), "data.expected_essay_count", id="wrong-type"),
        pytest.param(_set("data.expected_essay_count", 0), "data.expected_essay_count", id="out-of-range"),
        pytest.param(_set("data.essay_ids", "b1-e0"), "data.essay_ids", id="not-a-list"),
        pytest.param(_set("event_id", "not-a-uuid"), "event_id", id="bad-event-uuid"),
        pytest.param(_set("correlation_id", "42"), "correlation_id", id="bad-correlation-uuid"),
        pytest.param(_set("event_timestamp", "yesterday"), "event_timestamp", id="bad-timestamp"),
        pytest.param(_drop("data"), "data", id="missing-data"),
        pytest.param(_set("data", [1, 2]), "data", id="data-not-an-object"),
        pytest.param(_set("event_type", Topic.PHASE_OUTCOME.value), "event_type", id="event-type-mismatch"),
    ],
)
def test_invalid_message_names_topic_and_field(change: Callable[[dict[str, Any]], None], field: str) -> None:
    value = _register_value()
    change(value)

    with pytest.raises(InvalidMessageError) as caught:
        parse_message(REGISTER, value)

    assert caught.value.topic == REGISTER
    assert caught.value.field == field
    assert REGISTER in str(caught.value)
    assert field in str(caught.value)


def test_nested_payload_field_is_named() -> None:
    topic, value = HuleEduEnvelopes().outcome("b1", "nlp", new_id(), processed=["e1", "e2"])
    del value["data"]["processed_essays"][1]["essay_id"]

    with pytest.raises(InvalidMessageError) as caught:
        parse_message(topic, value)

    assert caught.value.field == "data.processed_essays.1.essay_id"


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"{not json", id="invalid-json-bytes"),
        pytest.param("{", id="invalid-json-text"),
        pytest.param(b"\xff\xfe", id="not-utf8"),
        pytest.param("[1, 2]", id="array"),
        pytest.param('"text"', id="string"),
        pytest.param("null", id="null"),
    ],
)
def test_unreadable_or_non_object_message_is_rejected(raw: bytes | str) -> None:
    with pytest.raises(InvalidMessageError) as caught:
        parse_message(REGISTER, raw)

    assert caught.value.topic == REGISTER
    assert caught.value.field is None


@pytest.mark.parametrize(
    "topic",
    ["huleedu.no.such.topic.v1", Topic.PIPELINE_COMPLETED.value, ""],
    ids=["unknown", "outbound-topic", "empty"],
)
def test_unknown_or_outbound_topic_raises_unknown_topic(topic: str) -> None:
    with pytest.raises(UnknownTopicError) as caught:
        parse_message(topic, _register_value())

    assert caught.value.topic == topic
    assert isinstance(caught.value, InvalidMessageError)


def test_extra_fields_are_ignored_everywhere() -> None:
    value = _register_value()
    value["partition_hint"] = 7
    value["data"]["favourite_colour"] = "green"
    topic, outcome = HuleEduEnvelopes().outcome("b1", "nlp", new_id(), processed=["e1"])
    outcome["data"]["processed_essays"][0]["word_count"] = 120

    envelope, payload = parse_message(REGISTER, json.dumps(value).encode())
    _, parsed_outcome = parse_message(topic, outcome)

    assert isinstance(payload, BatchRegistrationRequestV1)
    assert payload.batch_id == "b1"
    assert str(envelope.event_id) == value["event_id"]
    assert not hasattr(payload, "favourite_colour")
    assert isinstance(parsed_outcome, ELSBatchPhaseOutcomeV1)
    assert parsed_outcome.processed_essays[0].essay_id == "e1"


@pytest.mark.parametrize("form", ["dict", "str", "bytes"])
async def test_runtime_accepts_dict_text_and_bytes(form: str) -> None:
    rt = InMemoryRuntime()
    topic, value = HuleEduEnvelopes().register("b1")
    raw: Any = {"dict": value, "str": json.dumps(value), "bytes": json.dumps(value).encode()}[form]

    out = await rt.deliver(topic, raw)

    assert [m["topic"] for m in out] == [Topic.ESSAYS_REGISTERED.value]


async def test_invalid_message_changes_nothing(flow: Flow) -> None:
    await flow.ready("b1")
    before = await flow.state("b1")
    topic, value = flow.env.request("b1", "nlp")
    value["data"]["is_retry"] = "perhaps"

    with pytest.raises(PipelineStateError):
        await flow.rt.deliver(topic, value)
    with pytest.raises(UnknownTopicError):
        await flow.rt.deliver("huleedu.unknown.v1", flow.env.request("b1", "nlp")[1])

    assert await flow.state("b1") == before
    assert await flow.rt.store.pending_count() == 0
    assert await flow.inbox_result(value["event_id"]) is None


async def _whole_flow(rt: InMemoryRuntime, ids_from: list[str] | None = None) -> list[Message]:
    """Every kind of outgoing message; inbound event and correlation ids come from ``ids_from``
    (in order) when given, so two runs can be compared."""
    counter = iter(ids_from or [])

    def next_id() -> str:
        return next(counter) if ids_from is not None else new_id()

    env = HuleEduEnvelopes()
    out: list[Message] = []

    async def send(delivery: tuple[str, dict[str, Any]]) -> None:
        topic, value = delivery
        value["event_id"] = next_id()
        out.extend(await rt.deliver(topic, value))

    essays = env.item_ids("b1", 3)
    await send(env.register("b1", group_id="class-7"))
    await send(env.provisioned("b1", essays))
    await send(env.group_confirmed("b1", "class-7", essays))
    await send(env.items_ready("b1", essays))
    # denied: unknown_pipeline (a request for an unknown batch would wait for its registration)
    await send(env.request("b1", "no_such_pipeline"))
    corr = next_id()
    await send(env.request("b1", "cj_assessment", correlation_id=corr))
    await send(env.outcome("b1", "spellcheck", corr, processed=essays[:2], failed=essays[2:]))
    await send(env.outcome("b1", "cj_assessment", corr, processed=essays[:2]))
    corr = next_id()
    await send(env.request("b1", "ai_feedback", correlation_id=corr))  # spellcheck pruned
    await send(env.outcome("b1", "nlp", corr, processed=essays[:2]))
    await send(env.outcome("b1", "ai_feedback", corr, processed=essays[:1], failed=essays[1:2]))
    return out


async def test_every_outgoing_message_matches_the_contract() -> None:
    out = await _whole_flow(InMemoryRuntime())

    seen = {m["topic"] for m in out}
    expected = {t for t, spec in TOPICS.items() if spec.direction == "out"} - {Topic.RESULTS_READY.value}
    assert seen == expected
    for message in out:
        topic, key, value = message["topic"], message["key"], message["value"]
        json.dumps(value)  # plain JSON
        envelope = EventEnvelope.model_validate(value)
        assert envelope.event_type == topic
        assert envelope.schema_version == 1
        assert envelope.source_service == "batch_orchestrator_service"
        assert envelope.event_timestamp.utcoffset() is not None
        spec = TOPICS[topic]
        payload = spec.model.model_validate(value["data"])
        assert key == value["data"][spec.key_field]
        if topic == Topic.TEACHER_NOTIFICATION.value:
            assert key == "teacher-1"
        else:
            assert key in ("b1", "ghost")
        assert payload.model_dump(mode="json") == value["data"]


async def test_outgoing_event_ids_are_deterministic_per_inbound_event() -> None:
    inbound = [new_id() for _ in range(13)]
    first = await _whole_flow(InMemoryRuntime(), copy.copy(inbound))
    second = await _whole_flow(InMemoryRuntime(), copy.copy(inbound))
    third = await _whole_flow(InMemoryRuntime())

    first_ids = [m["value"]["event_id"] for m in first]
    assert first_ids == [m["value"]["event_id"] for m in second]
    assert len(set(first_ids)) == len(first_ids)
    assert not set(first_ids) & set(inbound)
    assert not set(first_ids) & {m["value"]["event_id"] for m in third}
