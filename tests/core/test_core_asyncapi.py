"""The AsyncAPI document of a profile's wire (issue 15, point 4): valid against the official
AsyncAPI 3.0.0 schema, complete (every topic of the profile, nothing else), and true (what the
engine really emits and accepts matches the document's messages and keys)."""

from __future__ import annotations

import copy
import hashlib
import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
from core_flow import load_example

from pipeline_state import InMemoryRuntime, Profile, WireModel
from pipeline_state._asyncapi import asyncapi_document, asyncapi_json
from pipeline_state._asyncapi_kafka import (
    DEAD_LETTER_HEADERS,
    DEAD_LETTER_SUFFIX,
    ENVELOPE_HEADERS,
    TRACE_HEADERS,
)
from pipeline_state.errors import DefinitionError
from pipeline_state.ports import Outgoing
from pipeline_state.profiles.huleedu.events import Topic
from pipeline_state.profiles.huleedu.profile import huleedu_profile
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes
from pipeline_state.testing import Envelopes, WireChecker
from pipeline_state.testing.asyncapi import refs_in, resolve

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_FILE = ROOT / "tests" / "schemas" / "asyncapi-3.0.0.json"
SCHEMA_SHA256 = "1786a007ac00344a8f529e5a6fc5db786b0be6757e0b94a8b95a8a6a52b7fe9a"


MEDIA: Profile = load_example("custom_catalog").MEDIA


def _no_network(uri: str) -> Any:
    raise AssertionError(f"the vendored schema refers to {uri}, which is not inside it")


@pytest.fixture(scope="module")
def official() -> Any:
    """A validator of the official AsyncAPI 3.0.0 JSON Schema (vendored, never fetched)."""
    raw = SCHEMA_FILE.read_bytes()
    assert hashlib.sha256(raw).hexdigest() == SCHEMA_SHA256, "tests/schemas/asyncapi-3.0.0.json was edited"
    return jsonschema_rs.validator_for(json.loads(raw), retriever=_no_network)


def _errors(validator: Any, document: object) -> list[str]:
    return [
        f"{'/'.join(map(str, e.instance_path))}: {e.message[:200]}" for e in validator.iter_errors(document)
    ]


@pytest.mark.parametrize("profile", [huleedu_profile(), MEDIA], ids=["huleedu", "media"])
def test_asyncapi_document_is_valid_asyncapi_3(official: Any, profile: Profile) -> None:
    document = asyncapi_document(profile)
    assert document["asyncapi"] == "3.0.0"
    assert _errors(official, document) == []
    for ref in refs_in(document):  # the schema does not follow references: every one must land
        resolve(document, ref)


def test_asyncapi_validation_rejects_broken_documents(official: Any) -> None:
    document = asyncapi_document()
    register = Topic.BATCH_REGISTER.value
    breakages: dict[str, Callable[[dict[str, Any]], None]] = {
        "an operation without action": lambda d: d["operations"][f"receive.{register}"].pop("action"),
        "an unknown action": lambda d: d["operations"][f"receive.{register}"].update(action="consume"),
        "a payload that is no schema": lambda d: d["components"]["messages"][register].update(
            payload={"type": "nonsense"}
        ),
        "a Kafka binding of an unknown version": lambda d: d["components"]["messages"][register]["bindings"][
            "kafka"
        ].update(bindingVersion="9.9.9"),
        "a Kafka key that is no schema": lambda d: d["components"]["messages"][register]["bindings"][
            "kafka"
        ].update(key=7),
        "another AsyncAPI version": lambda d: d.update(asyncapi="2.6.0"),
        "no info": lambda d: d.pop("info"),
    }
    for what, breakage in breakages.items():
        broken = copy.deepcopy(document)
        breakage(broken)
        assert _errors(official, broken), f"the schema accepted {what}"


def test_asyncapi_reference_check_finds_a_dangling_reference() -> None:
    document = asyncapi_document()
    del document["components"]["schemas"]["EssayProcessingInputRefV1"]
    dangling = [ref for ref in refs_in(document) if ref.endswith("/EssayProcessingInputRefV1")]
    assert dangling
    with pytest.raises(AssertionError, match="points nowhere"):
        resolve(document, dangling[0])


def _sends(document: dict[str, Any]) -> dict[str, str]:
    return {
        op["channel"]["$ref"].removeprefix("#/channels/"): op["action"]
        for op in document["operations"].values()
    }


def test_asyncapi_channels_are_exactly_the_profiles_topics() -> None:
    for profile, events in (
        (
            huleedu_profile(),
            {
                Topic.ESSAYS_REGISTERED,
                Topic.PHASE_SKIPPED,
                Topic.PIPELINE_DENIED,
                Topic.PIPELINE_COMPLETED,
                Topic.TEACHER_NOTIFICATION,
            },
        ),
        (MEDIA, {"media.step.skipped.v1", "media.request.refused.v1", "media.release.report.v1"}),
    ):
        inbound = dict.fromkeys(profile.inbound.names, "receive")
        commands = {spec.topic for spec in profile.phase_commands.values()}
        if profile.group_matching is not None:
            commands.add(profile.group_matching.topic)
        document = asyncapi_document(profile)
        letters = {f"{topic}{DEAD_LETTER_SUFFIX}" for topic in inbound}
        expected = {**inbound, **dict.fromkeys(commands | {str(e) for e in events} | letters, "send")}
        assert _sends(document) == expected, profile.name
        assert list(document["channels"]) == [
            *sorted(inbound),
            *sorted(expected.keys() - inbound.keys() - letters),
            *sorted(letters),
        ]
        for topic, channel in document["channels"].items():
            assert channel["address"] == topic
            (message,) = channel["messages"].values()
            sent = resolve(document, message["$ref"])
            # What is sent carries the envelope headers; what is consumed may carry the trace
            # context the consumer continues (and any other header, not read).
            declared = sent["headers"]
            if topic in letters:
                assert list(declared["properties"]) == list(DEAD_LETTER_HEADERS), topic
            elif expected[topic] == "send":
                assert declared["required"] == list(ENVELOPE_HEADERS), topic
            else:
                assert list(declared["properties"]) == list(TRACE_HEADERS), topic
                assert "required" not in declared, topic
            assert (sent["name"] == "DeadLetter") == (topic in letters), topic
    # The results service's announcement is no event of the engine: not on the engine's wire.
    assert Topic.RESULTS_READY not in asyncapi_document()["channels"]


def test_asyncapi_messages_show_the_envelope_the_model_the_key_and_the_headers() -> None:
    document = asyncapi_document()
    notification = document["components"]["messages"][Topic.TEACHER_NOTIFICATION.value]
    envelope, specific = notification["payload"]["allOf"]
    assert envelope == {"$ref": "#/components/schemas/EventEnvelope"}
    assert specific["properties"]["event_type"] == {"const": Topic.TEACHER_NOTIFICATION.value}
    assert specific["properties"]["data"] == {"$ref": "#/components/schemas/TeacherNotificationRequestedV1"}
    kafka = notification["bindings"]["kafka"]
    assert kafka["x-key-location"] == "$message.payload#/data/teacher_id"
    assert "owner" in kafka["key"]["description"]
    headers = notification["headers"]
    assert list(headers["properties"]) == [*ENVELOPE_HEADERS, *TRACE_HEADERS]
    assert headers["required"] == list(ENVELOPE_HEADERS)  # the trace context only when tracing is on
    assert notification["headers"]["properties"]["event_type"]["const"] == Topic.TEACHER_NOTIFICATION.value
    registered = document["components"]["messages"][Topic.ESSAYS_REGISTERED.value]
    assert registered["bindings"]["kafka"]["x-key-location"] == "$message.payload#/data/entity_id"
    media = asyncapi_document(MEDIA)["components"]["messages"]["media.release.report.v1"]
    assert media["bindings"]["kafka"]["x-key-location"] == "$message.payload#/data/season_id"
    assert media["description"] == "How a run of the media platform ended."


def test_asyncapi_output_is_deterministic_json() -> None:
    text = asyncapi_json()
    assert text == asyncapi_json(huleedu_profile())
    assert json.loads(text) == asyncapi_document()
    assert text.endswith("}\n")


def _wire(message: dict[str, Any]) -> dict[str, Any]:
    """A message as it travels: JSON, dates as text (as the Kafka codec writes it)."""
    loaded: dict[str, Any] = json.loads(json.dumps(message["value"], default=str))
    return loaded


async def test_asyncapi_describes_what_the_huleedu_engine_really_exchanges() -> None:
    checker = WireChecker(asyncapi_document())
    rt, env = InMemoryRuntime(), HuleEduEnvelopes()
    ids = env.item_ids("b1", 3)
    corr, corr2 = str(uuid.uuid4()), str(uuid.uuid4())
    inputs = [
        env.register("b1", items=3, group_id="c1", owner="teacher-7"),
        env.provisioned("b1", ids),
        env.group_confirmed("b1", "c1", ids),
        env.items_ready("b1", ids),
        env.request("b1", "no_such_pipeline", requested_by="teacher-7"),
        env.request("b1", "ai_feedback", requested_by="teacher-7", correlation_id=corr),
        env.outcome("b1", "spellcheck", corr, processed=ids),
        env.outcome("b1", "nlp", corr, processed=ids[:2], failed=ids[2:]),
        env.outcome("b1", "ai_feedback", corr, processed=ids[:2]),
        env.request("b1", "nlp", requested_by="teacher-7", correlation_id=corr2),
        env.register("b2", items=1),
        env.validation_errors("b2"),
    ]
    sent: list[dict[str, Any]] = []
    for topic, envelope in inputs:
        checker.check(topic, action="receive", key=envelope["data"]["batch_id"], value=envelope)
        sent += await rt.deliver(topic, envelope)
    for message in sent:
        checker.check(message["topic"], action="send", key=message["key"], value=_wire(message))
    assert {m["topic"] for m in sent} == {
        Topic.ESSAYS_REGISTERED,
        Topic.PHASE_SKIPPED,
        Topic.PIPELINE_DENIED,
        Topic.PIPELINE_COMPLETED,
        Topic.TEACHER_NOTIFICATION,
        Topic.STUDENT_MATCHING,
        Topic.SPELLCHECK,
        Topic.NLP,
        Topic.AI_FEEDBACK,
    }


async def test_asyncapi_describes_what_a_custom_profile_really_sends() -> None:
    document = asyncapi_document(MEDIA)
    checker = WireChecker(document)
    rt, env = InMemoryRuntime(MEDIA), Envelopes(source_service="media_upload", profile=MEDIA)
    episodes = env.item_ids("s1", 2)
    corr = str(uuid.uuid4())
    sent: list[dict[str, Any]] = []
    for delivery in (
        env.register("s1", items=2, category="MEDIA", prompt=None),
        env.provisioned("s1", episodes),
        env.request("s1", "preview", correlation_id=corr),
        env.request("s1", "no_such_pipeline"),
        env.outcome("s1", "transcode", corr, processed=episodes),
        env.outcome("s1", "thumbnails", corr, processed=episodes[:1], failed=episodes[1:]),
        env.request("s1", "preview"),
    ):
        topic, envelope = delivery
        checker.check(topic, action="receive", key=envelope["data"]["season_id"], value=envelope)
        sent += await rt.deliver(*delivery)
    for message in sent:
        checker.check(message["topic"], action="send", key=message["key"], value=_wire(message))
    assert {m["topic"] for m in sent} == {
        "media.transcode.start.v1",
        "media.thumbnails.start.v1",
        "media.request.refused.v1",
        "media.release.report.v1",
        "media.step.skipped.v1",
    }


async def test_asyncapi_checker_notices_records_the_document_does_not_allow() -> None:
    checker = WireChecker(asyncapi_document())
    env = HuleEduEnvelopes()
    topic, envelope = env.register("b1", items=2)
    checker.check(topic, action="receive", key="b1", value=envelope)
    (out,) = await InMemoryRuntime().deliver(topic, envelope)
    sent, value = out["topic"], _wire(out)
    headers = {name: str(value[name]) for name in ENVELOPE_HEADERS}
    checker.check(sent, action="send", key="b1", value=value, headers=headers)
    wrong: list[tuple[str, Callable[[], None]]] = [
        (
            "a missing header",
            lambda: checker.check(
                sent, action="send", key="b1", value=value, headers={"event_id": headers["event_id"]}
            ),
        ),
        (
            "an undeclared header",
            lambda: checker.check(sent, action="send", key="b1", value=value, headers={**headers, "x": "1"}),
        ),
        (
            "an event_type header of another topic",
            lambda: checker.check(
                sent, action="send", key="b1", value=value, headers={**headers, "event_type": topic}
            ),
        ),
        (
            "an event_id header that is no UUID",
            lambda: checker.check(
                sent, action="send", key="b1", value=value, headers={**headers, "event_id": "x"}
            ),
        ),
        ("another key", lambda: checker.check(topic, action="receive", key="b2", value=envelope)),
        ("sent, not received", lambda: checker.check(topic, action="send", key="b1", value=envelope)),
        ("an unknown topic", lambda: checker.check("nowhere.v1", action="receive", key="b1", value=envelope)),
        (
            "a payload of another topic",
            lambda: checker.check(Topic.ESSAYS_READY, action="receive", key="b1", value=envelope),
        ),
        (
            "a count of zero",
            lambda: checker.check(
                topic,
                action="receive",
                key="b1",
                value={**envelope, "data": {**envelope["data"], "expected_essay_count": 0}},
            ),
        ),
    ]
    for what, call in wrong:
        try:
            call()
        except AssertionError:
            continue
        pytest.fail(f"the checker accepted {what}")


class _Raising:
    def registered(self, state: object) -> tuple[Outgoing, ...]:
        raise KeyError("boom")

    phase_skipped = denied = completed = notify = registered


class _TwoModelsOnOneTopic:
    def registered(self, state: Any) -> tuple[Outgoing, ...]:
        return (Outgoing("media.mixed.v1", state.batch_id, _model("a"), {}),)

    def phase_skipped(self, state: Any, *_: object) -> tuple[Outgoing, ...]:
        return (Outgoing("media.mixed.v1", state.batch_id, _model("b"), {}),)

    def denied(self, *_: object) -> tuple[Outgoing, ...]:
        return ()

    completed = notify = denied


def _model(name: str) -> type[WireModel]:
    return type(f"Model{name.upper()}", (WireModel,), {})


class _OnAnInboundTopic(_TwoModelsOnOneTopic):
    def registered(self, state: Any) -> tuple[Outgoing, ...]:
        return (Outgoing(Topic.BATCH_REGISTER.value, state.batch_id, _model("c"), {}),)

    def phase_skipped(self, *_: object) -> tuple[Outgoing, ...]:
        return ()


def _media_with(outbound: object) -> Profile:
    return Profile(
        name="m",
        catalog=MEDIA.catalog,
        phase_commands=MEDIA.phase_commands,
        max_items_per_batch=MEDIA.max_items_per_batch,
        outbound=outbound,  # type: ignore[arg-type]
    )


def test_asyncapi_refuses_what_it_cannot_describe() -> None:
    with pytest.raises(DefinitionError, match=r"expected a pipeline_state\.Profile"):
        asyncapi_document(MEDIA.catalog)  # type: ignore[arg-type]
    with pytest.raises(DefinitionError, match=r"outbound\.registered raised KeyError"):
        asyncapi_document(_media_with(_Raising()))
    with pytest.raises(DefinitionError, match=r"two kinds of message to 'media\.mixed\.v1'"):
        asyncapi_document(_media_with(_TwoModelsOnOneTopic()))
    # An event on a consumed topic: the profile itself refuses it now, before the document.
    consumed = r"registered event goes to 'huleedu\.commands\.batch\.register\.v1', a topic the engine"
    with pytest.raises(DefinitionError, match=consumed):
        asyncapi_document(_media_with(_OnAnInboundTopic()))
