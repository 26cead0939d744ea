"""The inbound seam (issue 13): a profile's ``Inbound`` names the topics its service consumes
and reads each message as an engine input; nothing past it reads a wire model. The media
profile of ``examples/custom_catalog.py`` has a wire of its own, and the engine runs it."""

from __future__ import annotations

import attrs
import pytest
from core_flow import load_example
from pydantic import Field

from pipeline_state import CommandSpec, Inbound, InboundTopic, InMemoryRuntime, Profile, WireModel
from pipeline_state._commands import Command
from pipeline_state._decide import decide
from pipeline_state.errors import DefinitionError, InvalidMessageError, UnknownTopicError
from pipeline_state.ports import (
    ContentReady,
    GroupConfirmed,
    ItemRef,
    ItemsReady,
    PhaseOutcome,
    RegisterBatch,
    RequestPipeline,
    ValidationFailed,
)
from pipeline_state.profiles.huleedu import HULEEDU_INBOUND
from pipeline_state.profiles.huleedu.events import INBOUND_TOPICS, PhaseInitiateCommand
from pipeline_state.profiles.huleedu.profile import huleedu_profile
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes
from pipeline_state.testing import Envelopes

EXAMPLE_MODULE = load_example("custom_catalog")
MEDIA: Profile = EXAMPLE_MODULE.MEDIA

CORRELATION = "7b1f3c52-34a4-4a55-9a8e-0d4f1f0e6a11"
HULEEDU_INPUTS = (
    RegisterBatch("b1", "t1", 2, ("e1", "e2"), "SV1", "sv", org_id="o1", group_id="c1", prompt_ref="p1"),
    RegisterBatch("b1", "t1", 2, None, "ENG5", "en"),
    ContentReady("b1", (ItemRef("e1", "s1"), ItemRef("e2", None))),
    GroupConfirmed("b1", "c1"),
    ItemsReady("b1", (ItemRef("e1", "s1"),)),
    ValidationFailed("b1", critical=True),
    ValidationFailed("b1", critical=False),
    RequestPipeline("b1", "nlp", "t1", is_retry=True, retry_reason="again", prompt={"prompt_ref": "p"}),
    PhaseOutcome("b1", "spellcheck", "completed_with_failures", (ItemRef("e1", "s9"),), ("e2",), CORRELATION),
)


@pytest.mark.parametrize("value", HULEEDU_INPUTS, ids=lambda v: type(v).__name__)
def test_huleedu_inputs_survive_the_wire_both_ways(value: object) -> None:
    topic, data = HULEEDU_INBOUND.encode(value)  # type: ignore[arg-type]
    envelope = HuleEduEnvelopes().wrap(topic, data)[1]
    _, read = HULEEDU_INBOUND.parse(topic, envelope)
    assert read == value


def test_huleedu_reads_the_language_from_the_course_code_when_the_wire_has_none() -> None:
    topic = "huleedu.commands.batch.register.v1"
    data = {"batch_id": "b", "expected_essay_count": 1, "user_id": "t", "course_code": "sv2"}
    _, value = HULEEDU_INBOUND.parse(topic, HuleEduEnvelopes().wrap(topic, data)[1])
    assert isinstance(value, RegisterBatch)
    assert value.language == "sv"


def test_the_shipped_profile_consumes_exactly_the_contract_topics() -> None:
    assert huleedu_profile().inbound is HULEEDU_INBOUND
    assert HULEEDU_INBOUND.names == INBOUND_TOPICS
    assert HULEEDU_INBOUND.is_request("huleedu.commands.batch.pipeline.v1")
    assert not HULEEDU_INBOUND.is_request("huleedu.els.batch.phase.outcome.v1")
    assert HULEEDU_INBOUND.topic_of(PhaseOutcome) == "huleedu.els.batch.phase.outcome.v1"


class _Opened(WireModel):
    batch_id: str


def _topic(topic: str, model: type[WireModel] = _Opened, kind: type = GroupConfirmed) -> InboundTopic:
    return InboundTopic(
        topic, model, kind, lambda p: GroupConfirmed(p.batch_id, "g"), lambda g: {"batch_id": g.batch_id}
    )


class _Other(WireModel):
    batch_id: str


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ((_topic("a"), _topic("a", _Other, ItemsReady)), "topic a is listed twice"),
        ((_topic("a"), _topic("b", _Opened, ItemsReady)), "payload model _Opened is listed twice"),
        ((_topic("a"), _topic("b", _Other)), "input kind GroupConfirmed is listed twice"),
        (("a",), "must be an InboundTopic, not str"),
    ],
)
def test_an_inbound_that_would_be_ambiguous_is_a_definition_error(
    entries: tuple[object, ...], message: str
) -> None:
    with pytest.raises(DefinitionError, match=message):
        Inbound(entries)  # type: ignore[arg-type]


def _decode(p: _Opened) -> GroupConfirmed:
    return GroupConfirmed(p.batch_id, "g")


def _encode(g: GroupConfirmed) -> dict[str, str]:
    return {"batch_id": g.batch_id}


class _Keyed(WireModel):
    season: str = Field(alias="season_id")


@pytest.mark.parametrize(
    ("changes", "culprits"),
    [
        ({"decode": "GroupConfirmed"}, ["decode must be callable", "str"]),
        ({"encode": None}, ["encode must be callable", "NoneType"]),
        ({"model": dict}, ["pydantic model class", "type"]),
        ({"model": _Opened(batch_id="b")}, ["pydantic model class", "_Opened"]),
        ({"model": "_Opened"}, ["pydantic model class", "str"]),
        ({"kind": str}, ["one of the engine's inputs", "RegisterBatch", "str"]),
        ({"kind": Command}, ["one of the engine's inputs", "Command"]),
        ({"key_field": "season_id"}, ["key_field 'season_id'", "_Opened", "['batch_id']"]),
        ({"key_field": None}, ["key_field None", "_Opened"]),
    ],
)
def test_an_inbound_topic_is_checked_when_built_naming_the_topic(
    changes: dict[str, object], culprits: list[str]
) -> None:
    parts: dict[str, object] = {
        "topic": "t.opened.v1",
        "model": _Opened,
        "kind": GroupConfirmed,
        "decode": _decode,
        "encode": _encode,
    }
    parts.update(changes)
    with pytest.raises(DefinitionError) as caught:
        InboundTopic(**parts)  # type: ignore[arg-type]
    assert caught.value.definition == "inbound"
    message = str(caught.value)
    for culprit in ["'t.opened.v1'", *culprits]:
        assert culprit in message, f"{culprit!r} not named in: {message}"


@pytest.mark.parametrize("topic", [None, "", "  ", 7])
def test_an_inbound_topic_name_must_be_a_non_empty_string(topic: object) -> None:
    with pytest.raises(DefinitionError, match="an inbound topic must be a non-empty string"):
        InboundTopic(topic, _Opened, GroupConfirmed, _decode, _encode)  # type: ignore[arg-type]


def test_an_inbound_topic_may_be_keyed_by_a_field_alias() -> None:
    keyed = InboundTopic("t", _Keyed, GroupConfirmed, _decode, _encode, key_field="season_id")
    assert InboundTopic("t", _Keyed, GroupConfirmed, _decode, _encode, key_field="season") != keyed


def test_an_empty_inbound_is_a_definition_error() -> None:
    with pytest.raises(DefinitionError, match="lists no topic"):
        Inbound(())


def test_a_profile_checks_its_inbound() -> None:
    with pytest.raises(DefinitionError, match="inbound must be an Inbound, got"):
        attrs.evolve(MEDIA, inbound=HULEEDU_INBOUND.names)  # type: ignore[arg-type]

    class Transcode(PhaseInitiateCommand):
        pass

    commands = dict(MEDIA.phase_commands)
    commands["transcode"] = CommandSpec("media.step.finished.v1", Transcode)
    with pytest.raises(DefinitionError, match="an inbound topic the engine consumes"):
        attrs.evolve(MEDIA, phase_commands=commands)


def test_encode_refuses_what_the_wire_cannot_carry() -> None:
    with pytest.raises(TypeError, match="no inbound topic carries ValidationFailed"):
        MEDIA.inbound.encode(ValidationFailed("s1", critical=True))
    with pytest.raises(InvalidMessageError, match=r"media.step.finished.v1.*valid string") as err:
        MEDIA.inbound.encode(
            PhaseOutcome("s1", "transcode", "completed_successfully", (ItemRef("e", None),), (), "r")
        )
    assert err.value.field == "produced.0.uri"


async def test_the_media_profile_runs_on_its_own_wire() -> None:
    rt, env = InMemoryRuntime(MEDIA), Envelopes(profile=MEDIA)
    episodes = env.item_ids("s1", 2)
    registration = env.register("s1", item_ids=episodes)
    assert registration[0] == "media.season.opened.v1"
    assert registration[1]["data"] == {
        "season_id": "s1",
        "producer_id": "owner-1",
        "episodes": episodes,
        "language": "en",
    }
    # Sources before the season is opened: the fact waits on the media wire too.
    early = await rt.service.handle_message(*env.provisioned("s1", episodes))
    assert early.waiting == "batch_registration"
    opened = await rt.service.handle_message(*registration)
    assert len(opened.resumed) == 1
    assert (await rt.service.get_batch("s1")).status.value == "ready_for_pipeline_execution"

    out = await rt.deliver(*env.request("s1", "preview"))
    ran = []
    while out:
        commands = [m for m in out if env.phase_of(m) is not None]
        out = []
        for command in commands:
            ran.append(env.phase_of(command))
            out += await rt.deliver(*env.answer(command))
    state = await rt.service.get_batch("s1")
    assert ran == ["transcode", "thumbnails"]
    assert [r.status.value for r in state.history] == ["completed_successfully"]
    assert state.history[0].phase("thumbnails").inputs == tuple(
        ItemRef(e, f"{e}-transcode") for e in episodes
    )


async def test_each_profile_consumes_only_its_own_topics() -> None:
    media, huleedu = InMemoryRuntime(MEDIA), InMemoryRuntime()
    with pytest.raises(UnknownTopicError):
        await media.service.handle_message(*HuleEduEnvelopes().register("b1"))
    with pytest.raises(UnknownTopicError):
        await huleedu.service.handle_message(*Envelopes(profile=MEDIA).register("s1"))


def test_decide_reads_a_wire_payload_of_the_profile_as_its_input() -> None:
    from datetime import UTC, datetime

    now = datetime(2025, 1, 1, tzinfo=UTC)
    _, payload = MEDIA.inbound.parse(*Envelopes(profile=MEDIA).register("s1", items=2))
    wire = EXAMPLE_MODULE.SeasonOpenedV1(season_id="s1", producer_id="owner-1", episodes=["s1-e0", "s1-e1"])
    via_wire = decide(None, Command(wire, "e1", "c1"), profile=MEDIA, now=now)
    via_input = decide(None, Command(payload, "e1", "c1"), profile=MEDIA, now=now)
    assert via_wire.state == via_input.state
    assert via_wire.state is not None
    assert via_wire.state.item_ids == ("s1-e0", "s1-e1")
