"""The test kit takes any profile (issue 13.6): ``Envelopes`` sets item ids and answers the
phase commands of any profile, ``profile_for`` / ``ProfileSpec`` put each phase on the
topic given, and a catalog travels as its dict (``Catalog.to_dict``)."""

from __future__ import annotations

from typing import Any

import pytest
from core_flow import Flow, datas, one
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from pipeline_state import Catalog, CommandSpec, DefinitionError, InMemoryRuntime, Profile
from pipeline_state.errors import InvalidMessageError, ItemMismatchError
from pipeline_state.ports import LAST_DEPENDENCY
from pipeline_state.profiles.huleedu.catalog import HULEEDU_CATALOG
from pipeline_state.profiles.huleedu.events import (
    ELSBatchPhaseOutcomeV1,
    PhaseInitiateCommand,
    Topic,
    parse_message,
)
from pipeline_state.profiles.huleedu.profile import HULEEDU_PHASE_COMMANDS
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes
from pipeline_state.profiles.huleedu.testing.harness import PipelineMachine
from pipeline_state.profiles.huleedu.testing.strategies import ProfileSpec, profile_for
from pipeline_state.testing import Envelopes

CATALOG = Catalog.from_dict(
    {
        "pipelines": {
            "publish": {
                "steps": [
                    {"name": "ingest"},
                    {"name": "transcode", "depends_on": ["ingest"]},
                    {"name": "thumbnail", "depends_on": ["ingest"], "deadline_seconds": 30},
                    {"name": "publish", "depends_on": ["transcode", "thumbnail"]},
                ]
            },
            "reindex": {"steps": [{"name": "ingest"}, {"name": "index", "depends_on": ["ingest"]}]},
        }
    }
)
TOPICS = {phase: f"media.{phase}.start.v1" for phase in CATALOG.phases}


def media_profile() -> Profile:
    return Profile(
        name="media",
        catalog=CATALOG,
        phase_commands={phase: CommandSpec(topic, PhaseInitiateCommand) for phase, topic in TOPICS.items()},
        source_service="media_orchestrator",
        fan_in=LAST_DEPENDENCY,  # PhaseInitiateCommand holds one ref per item
    )


# --- Envelopes: item ids -------------------------------------------------------------------------------


def test_register_takes_explicit_item_ids() -> None:
    env = HuleEduEnvelopes()
    topic, envelope = env.register("s1", item_ids=["ep-a", "ep-b"], category="MEDIA")
    _, payload = parse_message(topic, envelope)
    assert payload.essay_ids == ["ep-a", "ep-b"]  # type: ignore[attr-defined]
    assert payload.expected_essay_count == 2  # type: ignore[attr-defined]


def test_register_derives_ids_by_default_as_before() -> None:
    env = HuleEduEnvelopes()
    assert env.register("b1")[1]["data"]["essay_ids"] == ["b1-e0", "b1-e1", "b1-e2"]
    assert env.register("b1", items=2)[1]["data"]["essay_ids"] == env.item_ids("b1", 2)


def test_register_can_build_a_count_that_disagrees_with_the_ids() -> None:
    topic, envelope = HuleEduEnvelopes().register("b1", items=3, item_ids=["x", "y"])
    with pytest.raises(InvalidMessageError, match="expected_essay_count"):
        parse_message(topic, envelope)


async def test_explicit_item_ids_are_the_batch_items() -> None:
    flow = Flow(InMemoryRuntime(), HuleEduEnvelopes())
    ids = ["essay-α", "essay-β"]
    out = await flow.rt.deliver(*flow.env.register("b1", item_ids=ids))
    assert one(out, Topic.ESSAYS_REGISTERED.value)["essay_ids"] == ids
    with pytest.raises(ItemMismatchError, match="unregistered_items"):
        await flow.rt.deliver(*flow.env.provisioned("b1", ["b1-e0", "b1-e1"]))
    await flow.rt.deliver(*flow.env.provisioned("b1", ids))
    assert [e.item_id for e in (await flow.state("b1")).items] == ids


# --- Envelopes: any profile's phases -----------------------------------------------------------------


def test_outcome_takes_any_phase_name() -> None:
    topic, envelope = HuleEduEnvelopes().outcome(
        "s1", "transcode", "00000000-0000-4000-8000-000000000001", processed=["ep-a"], failed=["ep-b"]
    )
    _, payload = parse_message(topic, envelope)
    assert isinstance(payload, ELSBatchPhaseOutcomeV1)
    assert payload.phase_name == "transcode"
    assert payload.phase_status == "completed_with_failures"
    assert payload.processed_essays[0].text_storage_id == "ep-a-transcode"


def test_phase_of_knows_the_profile_topics_and_defaults_to_huleedu() -> None:
    media = Envelopes(profile=media_profile())
    for phase, topic in TOPICS.items():
        assert media.phase_of({"topic": topic}) == phase
    assert media.phase_of({"topic": Topic.SPELLCHECK.value}) is None
    assert HuleEduEnvelopes().phase_of({"topic": Topic.SPELLCHECK.value}) == "spellcheck"
    assert HuleEduEnvelopes().phase_of({"topic": TOPICS["ingest"]}) is None
    assert dict(HuleEduEnvelopes().phase_topics()) == {s.topic: p for p, s in HULEEDU_PHASE_COMMANDS.items()}


async def test_answer_drives_a_custom_profile_through_fan_in_to_completion() -> None:
    profile = media_profile()
    rt, env = InMemoryRuntime(profile), Envelopes(profile=profile)
    ids = ["ep-1", "ep-2", "ep-3"]
    await rt.deliver(*env.register("s1", item_ids=ids, category="MEDIA", prompt=None))
    await rt.deliver(*env.provisioned("s1", ids))

    pending = await rt.deliver(*env.request("s1", "publish"))
    sent: dict[str, list[str]] = {}
    out: list[dict[str, Any]] = []
    while commands := [m for m in pending if env.phase_of(m)]:
        message = commands[0]
        pending.remove(message)
        phase = env.phase_of(message)
        assert phase is not None
        sent[phase] = [e["essay_id"] for e in message["value"]["data"]["essays_to_process"]]
        failed = ["ep-3"] if phase == "thumbnail" else []
        new = await rt.deliver(*env.answer(message, failed=failed))
        pending += new
        out += new

    assert sent == {"ingest": ids, "transcode": ids, "thumbnail": ids, "publish": ["ep-1", "ep-2"]}
    [completed] = datas(out, Topic.PIPELINE_COMPLETED.value)
    assert completed["final_status"] == "completed_with_failures"
    assert completed["successful_essay_count"] == 2


def test_answer_refuses_what_is_not_a_phase_command_or_was_not_sent() -> None:
    env = Envelopes(profile=media_profile())
    command = {
        "topic": TOPICS["index"],
        "value": {
            "correlation_id": "00000000-0000-4000-8000-000000000002",
            "data": {"batch_id": "s1", "essays_to_process": [{"essay_id": "ep-1", "text_storage_id": "t"}]},
        },
    }
    topic, envelope = env.answer(command, failed=["ep-1"])
    assert topic == Topic.PHASE_OUTCOME.value
    assert envelope["data"]["phase_name"] == "index"
    assert envelope["data"]["phase_status"] == "failed_critically"
    assert envelope["correlation_id"] == "00000000-0000-4000-8000-000000000002"
    with pytest.raises(ValueError, match="did not send"):
        env.answer(command, failed=["ep-9"])
    with pytest.raises(ValueError, match="not the command topic"):
        env.answer({**command, "topic": Topic.PIPELINE_COMPLETED.value})


# --- profile_for / ProfileSpec: the topics given ----------------------------------------------


def test_profile_for_puts_each_phase_on_the_topic_given() -> None:
    profile = profile_for(CATALOG, topics=TOPICS)
    assert {phase: spec.topic for phase, spec in profile.phase_commands.items()} == TOPICS
    assert all(spec.model is PhaseInitiateCommand for spec in profile.phase_commands.values())


def test_profile_for_keeps_the_huleedu_model_of_a_huleedu_phase_on_another_topic() -> None:
    topics = {phase: f"other.{phase}.v1" for phase in HULEEDU_CATALOG.phases}
    profile = profile_for(HULEEDU_CATALOG, topics=topics)
    for phase, spec in profile.phase_commands.items():
        assert spec.topic == topics[phase]
        assert spec.model is HULEEDU_PHASE_COMMANDS[phase].model


def test_profile_for_without_topics_is_unchanged() -> None:
    profile = profile_for(CATALOG)
    assert profile.phase_commands["ingest"].topic == "test.ingest.initiate.command.v1"
    assert dict(profile_for(HULEEDU_CATALOG).phase_commands) == dict(HULEEDU_PHASE_COMMANDS)


def test_profile_for_wants_a_topic_for_every_phase_and_no_other() -> None:
    with pytest.raises(ValueError, match="'publish'"):
        profile_for(CATALOG, topics={p: t for p, t in TOPICS.items() if p != "publish"})
    with pytest.raises(ValueError, match="'extra'"):
        profile_for(CATALOG, topics={**TOPICS, "extra": "media.extra.v1"})


def test_profile_for_topics_are_checked_like_any_profile() -> None:
    with pytest.raises(DefinitionError, match=r"'ingest'.*'transcode'"):
        profile_for(CATALOG, topics={**TOPICS, "transcode": TOPICS["ingest"]})
    with pytest.raises(DefinitionError, match="inbound"):
        profile_for(CATALOG, topics={**TOPICS, "index": Topic.PHASE_OUTCOME.value})


def test_profile_spec_carries_topics_and_a_catalog_dict() -> None:
    spec = ProfileSpec(CATALOG.to_dict(), max_parallel=1, topics=TOPICS)
    profile = spec.profile()
    assert profile.catalog == CATALOG
    assert profile.max_parallel == 1
    assert {phase: s.topic for phase, s in profile.phase_commands.items()} == TOPICS
    assert ProfileSpec(CATALOG.to_dict()).profile().phase_commands["index"].topic == (
        "test.index.initiate.command.v1"
    )


class CustomTopicsMachine(PipelineMachine):
    """The stateful harness on a non-education catalog with its own command topics."""

    def profile_strategy(self) -> st.SearchStrategy[ProfileSpec]:
        return st.sampled_from(
            [
                ProfileSpec(CATALOG.to_dict(), topics=TOPICS),
                ProfileSpec(CATALOG.to_dict(), 1, 1, topics=TOPICS),
            ]
        )


CustomTopicsMachine.TestCase.settings = settings(
    max_examples=25, stateful_step_count=30, deadline=None, suppress_health_check=list(HealthCheck)
)
TestCustomTopicsMachine = CustomTopicsMachine.TestCase
