"""Profiles are checked when built (issue 13.4): every mistake the engine would otherwise
meet mid-run raises a typed :class:`DefinitionError` naming the profile and the culprit;
:func:`check_profile` rejects what is not a profile at all. The shipped profiles still build.

Also here: a profile without student matching sends every batch down the content-only
readiness path (``test_STRAND_...``, the end-to-end test of the engine's side of it).
"""

from __future__ import annotations

from typing import Any

import attrs
import pytest
from core_flow import Flow, datas, load_example, topics
from hypothesis import given, settings
from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from pipeline_state import (
    BatchStatus,
    Catalog,
    CommandSpec,
    DefinitionError,
    Inbound,
    InMemoryRuntime,
    Profile,
    PromptGuard,
    WireModel,
)
from pipeline_state._profile import check_profile
from pipeline_state.ports import ContentReady, GroupConfirmed, ItemsReady
from pipeline_state.profiles.huleedu import HULEEDU_INBOUND
from pipeline_state.profiles.huleedu.catalog import HULEEDU_CATALOG
from pipeline_state.profiles.huleedu.events import INBOUND_TOPICS, PhaseInitiateCommand, Topic
from pipeline_state.profiles.huleedu.outbound import ENGINE_EVENT_TOPICS
from pipeline_state.profiles.huleedu.profile import (
    HULEEDU_PHASE_COMMANDS,
    MATCHING_COMMAND_FIELDS,
    PHASE_COMMAND_FIELDS,
    huleedu_profile,
)
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes
from pipeline_state.profiles.huleedu.testing.strategies import catalogs, profile_for
from pipeline_state.testing import Envelopes

CATALOG = Catalog.from_dict(
    {"pipelines": {"p": {"steps": [{"name": "extract"}, {"name": "score", "depends_on": ["extract"]}]}}}
)


class ExtractCommand(PhaseInitiateCommand):
    pass


class ScoreCommand(PhaseInitiateCommand):
    language: str
    course_code: str
    class_id: str | None = None


class MatchCommand(PhaseInitiateCommand):
    class_id: str


def commands(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "extract": CommandSpec("test.extract.v1", ExtractCommand),
        "score": CommandSpec("test.score.v1", ScoreCommand),
    }
    base.update(changes)
    return base


def build(**changes: Any) -> Profile:
    """A valid profile over CATALOG, with ``changes`` applied to its arguments."""
    kwargs: dict[str, Any] = {
        "name": "checked",
        "catalog": CATALOG,
        "phase_commands": commands(),
        "group_matching": CommandSpec("test.match.v1", MatchCommand),
        "guards": (PromptGuard(),),
    }
    kwargs.update(changes)
    return Profile(**kwargs)


def rejects(*culprits: str, **changes: Any) -> DefinitionError:
    """Building with ``changes`` raises a DefinitionError whose message names every culprit."""
    with pytest.raises(DefinitionError) as caught:
        build(**changes)
    message = str(caught.value)
    for culprit in culprits:
        assert culprit in message, f"{culprit!r} not named in: {message}"
    return caught.value


# --- the shipped profiles still build ------------------------------------------------------


def test_the_valid_test_profile_builds() -> None:
    profile = build()
    assert check_profile(profile) is profile


def test_the_shipped_huleedu_profile_builds_and_checks() -> None:
    profile = huleedu_profile()
    assert check_profile(profile) is profile
    assert dict(profile.phase_commands) == dict(HULEEDU_PHASE_COMMANDS)
    assert profile.group_validation


def test_huleedu_profile_over_part_of_its_catalog_declares_only_those_commands() -> None:
    catalog = Catalog.from_dict(
        {
            "pipelines": {
                "nlp": {"steps": [{"name": "spellcheck"}, {"name": "nlp", "depends_on": ["spellcheck"]}]}
            }
        }
    )
    profile = huleedu_profile(catalog=catalog)
    assert list(profile.phase_commands) == ["spellcheck", "nlp"]
    assert not profile.is_phase("cj_assessment")


def test_the_media_example_profile_builds() -> None:
    media = load_example("custom_catalog")
    profile = media.MEDIA
    assert check_profile(profile) is profile
    assert set(profile.phase_commands) == set(profile.catalog.phases)
    assert not profile.group_validation


def test_profile_for_builds_over_the_huleedu_catalog() -> None:
    assert check_profile(profile_for(HULEEDU_CATALOG)).catalog == HULEEDU_CATALOG


@settings(max_examples=100, deadline=None)
@given(catalogs())
def test_profile_for_builds_over_any_generated_catalog(catalog: Catalog) -> None:
    profile = profile_for(catalog)
    assert set(profile.phase_commands) == set(catalog.phases)


def test_a_built_profile_cannot_be_changed_behind_its_checks() -> None:
    given_commands = commands()
    profile = build(phase_commands=given_commands, guards=[PromptGuard()])
    given_commands["score"] = CommandSpec(Topic.PHASE_OUTCOME.value, ScoreCommand)
    assert profile.phase_commands["score"].topic == "test.score.v1"
    with pytest.raises(TypeError):
        profile.phase_commands["score"] = given_commands["score"]  # type: ignore[index]
    assert isinstance(profile.guards, tuple)


# --- check_profile: not a profile at all -----------------------------------------------------


def test_check_profile_rejects_a_catalog_where_a_profile_belongs() -> None:
    with pytest.raises(DefinitionError) as caught:
        check_profile(HULEEDU_CATALOG)
    message = str(caught.value)
    assert "Catalog" in message
    assert "huleedu_profile(catalog=catalog)" in message
    assert caught.value.definition == "profile"


def test_check_profile_hints_at_a_profile_of_its_own_for_a_catalog_of_other_phases() -> None:
    # CATALOG's phases (extract, score) are not HuleEdu's: huleedu_profile(catalog=...) would
    # fail for it, so the hint says to build a Profile with a command for each of them.
    with pytest.raises(DefinitionError) as caught:
        check_profile(CATALOG)
    message = str(caught.value)
    assert "huleedu_profile(catalog=catalog)" not in message
    assert "Profile(name=..., catalog=catalog, phase_commands=" in message
    assert "['extract', 'score']" in message
    assert "has no command for ['extract', 'score']" in message
    media = load_example("custom_catalog").CATALOG
    with pytest.raises(
        DefinitionError, match=r"no command for \['transcode', 'thumbnails', 'captions', 'publish'\]"
    ):
        check_profile(media)
    # The hint it gives for a catalog of HuleEdu phases works.
    partial = Catalog.from_dict({"pipelines": {"nlp": {"steps": [{"name": "spellcheck"}]}}})
    with pytest.raises(DefinitionError, match=r"huleedu_profile\(catalog=catalog\)"):
        check_profile(partial)
    assert check_profile(huleedu_profile(catalog=partial)).catalog == partial


@pytest.mark.parametrize("obj", [None, "huleedu", {"name": "huleedu"}, huleedu_profile])
def test_check_profile_rejects_anything_else_naming_its_type(obj: object) -> None:
    with pytest.raises(DefinitionError, match=type(obj).__name__):
        check_profile(obj)


# --- wrong object types --------------------------------------------------------------------


@pytest.mark.parametrize("name", [None, 42, "", "   "])
def test_the_name_must_be_a_non_empty_string(name: object) -> None:
    rejects("name", repr(name), name=name)


@pytest.mark.parametrize("source", [None, 7, "", "bad\nservice", "x" * 201])
def test_source_service_must_fit_an_envelope(source: object) -> None:
    rejects("'checked'", "source_service", source_service=source)


def test_the_catalog_must_be_a_catalog() -> None:
    error = rejects("catalog must be a Catalog", "dict", "Catalog.from_dict", catalog=CATALOG.to_dict())
    assert error.definition == "checked"
    rejects("catalog must be a Catalog", "Pipeline", catalog=CATALOG.get("p"))


def test_phase_commands_must_be_a_mapping() -> None:
    rejects("phase_commands", "list", phase_commands=list(commands().values()))


def test_a_phase_command_must_be_a_command_spec() -> None:
    rejects(
        "phase 'score'",
        "CommandSpec",
        "tuple",
        phase_commands=commands(score=("test.score.v1", ScoreCommand)),
    )


@pytest.mark.parametrize(
    "model",
    [dict, ScoreCommand(batch_id="b", essays_to_process=[], language="en", course_code="C"), "ScoreCommand"],
)
def test_a_command_model_must_be_a_pydantic_model_class(model: object) -> None:
    rejects(
        "phase 'score'",
        "pydantic model class",
        type(model).__name__,
        phase_commands=commands(score=CommandSpec("test.score.v1", model)),  # type: ignore[arg-type]
    )


def test_a_command_model_must_be_a_wire_model() -> None:
    class Plain(BaseModel):
        batch_id: str

    rejects(
        "phase 'extract'",
        "Plain",
        "WireModel",
        phase_commands=commands(extract=CommandSpec("test.extract.v1", Plain)),  # type: ignore[arg-type]
    )


@pytest.mark.parametrize("topic", [None, 3, "", "bad\ttopic", "t" * 201])
def test_a_command_topic_must_be_a_short_string(topic: object) -> None:
    rejects("phase 'extract'", "topic", phase_commands=commands(extract=CommandSpec(topic, ExtractCommand)))  # type: ignore[arg-type]


@pytest.mark.parametrize("matching", ["test.match.v1", MatchCommand, {"topic": "test.match.v1"}])
def test_student_matching_must_be_a_command_spec_or_none(matching: object) -> None:
    rejects("group_matching", "CommandSpec", type(matching).__name__, group_matching=matching)


def test_student_matching_model_is_checked_too() -> None:
    class Plain(BaseModel):
        batch_id: str

    rejects("group_matching", "Plain", "WireModel", group_matching=CommandSpec("test.match.v1", Plain))  # type: ignore[arg-type]


def test_a_guard_needs_a_callable_check() -> None:
    class NoCheck:
        pass

    class CheckNotCallable:
        check = "yes"

    rejects("guard 1", "NoCheck", "check", guards=(PromptGuard(), NoCheck()))
    rejects("guard 0", "CheckNotCallable", "check", guards=(CheckNotCallable(),))


def test_a_guard_class_instead_of_an_instance_is_named() -> None:
    rejects("guard 0", "PromptGuard", "instance", guards=(PromptGuard,))


def test_guards_must_be_a_tuple() -> None:
    rejects("guards", "PromptGuard", guards=PromptGuard())


@pytest.mark.parametrize("value", ["2", 1.5, True])
def test_max_parallel_must_be_a_whole_number(value: object) -> None:
    rejects("max_parallel", repr(value), max_parallel=value)


def test_strict_correlation_must_be_a_bool() -> None:
    rejects("strict_correlation", "'yes'", strict_correlation="yes")


# --- command models the engine cannot fill ---------------------------------------------------


def test_a_phase_command_requiring_a_field_the_engine_does_not_fill_is_rejected() -> None:
    class WithPriority(PhaseInitiateCommand):
        language: str
        priority: int

    error = rejects(
        "phase 'score'",
        "WithPriority",
        "priority",
        "essays_to_process",
        phase_commands=commands(score=CommandSpec("test.score.v1", WithPriority)),
    )
    assert "'language'" not in error.problem.split("fills exactly")[0]


def test_a_required_field_the_engine_fills_under_an_alias_is_accepted() -> None:
    class Aliased(WireModel):
        batch: str = Field(alias="batch_id")
        items: list[Any] = Field(validation_alias=AliasChoices("items", "essays_to_process"))
        note: str = "optional fields may be anything"

    class ByName(WireModel):
        model_config = ConfigDict(populate_by_name=True)
        language: str = Field(alias="lang")  # filled by its name: populate_by_name

    build(phase_commands=commands(extract=CommandSpec("test.extract.v1", Aliased)))
    build(phase_commands=commands(extract=CommandSpec("test.extract.v1", ByName)))


def test_a_required_field_under_an_alias_the_engine_does_not_fill_is_rejected() -> None:
    class Aliased(PhaseInitiateCommand):
        language: str = Field(alias="lang")

    rejects(
        "phase 'extract'",
        "Aliased",
        "language",
        phase_commands=commands(extract=CommandSpec("test.extract.v1", Aliased)),
    )


def test_the_matching_command_may_only_require_what_matching_fills() -> None:
    class MatchWithLanguage(PhaseInitiateCommand):
        class_id: str
        language: str  # filled in phase commands, not in the matching command

    rejects(
        "group_matching",
        "MatchWithLanguage",
        "language",
        group_matching=CommandSpec("test.match.v1", MatchWithLanguage),
    )
    assert {"batch_id", "class_id", "essays_to_process"} == MATCHING_COMMAND_FIELDS
    assert MATCHING_COMMAND_FIELDS < PHASE_COMMAND_FIELDS


def test_a_command_model_forbidding_fields_the_engine_passes_is_rejected() -> None:
    class Strict(PhaseInitiateCommand):
        model_config = ConfigDict(extra="forbid")
        language: str

    rejects(
        "phase 'score'",
        "Strict",
        "forbids",
        "course_code",
        "class_id",
        phase_commands=commands(score=CommandSpec("test.score.v1", Strict)),
    )


def test_a_phase_command_refusing_none_for_class_id_is_rejected() -> None:
    class NeedsClass(PhaseInitiateCommand):
        class_id: str

    class DefaultClass(PhaseInitiateCommand):
        class_id: str = "none"

    for model in (NeedsClass, DefaultClass):
        rejects(
            "phase 'score'",
            model.__name__,
            "'class_id'",
            "None",
            phase_commands=commands(score=CommandSpec("test.score.v1", model)),
        )


# --- topics ----------------------------------------------------------------------------------


def test_two_phases_on_one_topic_are_rejected() -> None:
    rejects(
        "'extract'",
        "'score'",
        "test.shared.v1",
        phase_commands={
            "extract": CommandSpec("test.shared.v1", ExtractCommand),
            "score": CommandSpec("test.shared.v1", ScoreCommand),
        },
    )


def test_the_matching_command_on_a_phase_topic_is_rejected() -> None:
    rejects(
        "group_matching",
        "'score'",
        "test.score.v1",
        group_matching=CommandSpec("test.score.v1", MatchCommand),
    )


@pytest.mark.parametrize("topic", INBOUND_TOPICS)
def test_a_phase_topic_that_is_inbound_is_rejected(topic: str) -> None:
    rejects(
        "phase 'extract'",
        topic,
        "inbound",
        phase_commands=commands(extract=CommandSpec(topic, ExtractCommand)),
    )


@pytest.mark.parametrize("topic", INBOUND_TOPICS)
def test_a_matching_topic_that_is_inbound_is_rejected(topic: str) -> None:
    rejects("group_matching", topic, "inbound", group_matching=CommandSpec(topic, MatchCommand))


@pytest.mark.parametrize(("topic", "event"), ENGINE_EVENT_TOPICS.items())
def test_a_command_topic_of_an_engine_event_is_rejected(topic: str, event: str) -> None:
    rejects(
        "phase 'score'",
        topic,
        f"{event} event",
        phase_commands=commands(score=CommandSpec(topic, ScoreCommand)),
    )
    rejects("group_matching", topic, f"{event} event", group_matching=CommandSpec(topic, MatchCommand))


def test_the_engine_event_topics_are_the_six_outbound_events() -> None:
    assert set(ENGINE_EVENT_TOPICS.values()) == {
        "registered", "skipped", "denied", "completed", "notification", "results",
    }  # fmt: skip
    assert not set(ENGINE_EVENT_TOPICS) & set(INBOUND_TOPICS)


def test_a_huleedu_command_topic_may_serve_another_profile() -> None:
    # Outbound command topics of the HuleEdu profile are not reserved: only the engine's events are.
    build(phase_commands=commands(extract=CommandSpec(Topic.SPELLCHECK.value, ExtractCommand)))


# --- commands and catalog --------------------------------------------------------------------


def test_a_command_for_a_phase_not_in_the_catalog_is_rejected() -> None:
    rejects(
        "not in the catalog",
        "'summarise'",
        phase_commands=commands(summarise=CommandSpec("test.summarise.v1", ExtractCommand)),
    )


def test_a_catalog_phase_without_a_command_is_rejected() -> None:
    rejects("no command declared", "'score'", phase_commands={"extract": commands()["extract"]})


# --- readiness: a profile without student matching --------------------------------------------


def test_student_validation_follows_student_matching() -> None:
    assert build().group_validation
    assert not build(group_matching=None).group_validation
    assert not attrs.evolve(huleedu_profile(), group_matching=None).group_validation


def _huleedu_inbound_without(*kinds: type) -> Inbound:
    return Inbound(t for t in HULEEDU_INBOUND.topics.values() if t.kind not in kinds)


@pytest.mark.parametrize(
    "kinds",
    [(GroupConfirmed,), (ItemsReady,), (GroupConfirmed, ItemsReady)],
    ids=lambda kinds: "+".join(k.__name__ for k in kinds),
)
def test_STRAND_group_matching_without_an_input_that_ends_group_validation_is_rejected(
    kinds: tuple[type, ...],
) -> None:
    # A batch with a group waits in awaiting_group_validation for GroupConfirmed, then for
    # ItemsReady: a profile that matches groups but consumes neither would strand it there.
    inbound = _huleedu_inbound_without(*kinds)
    names = [kind.__name__ for kind in kinds]
    error = rejects("group_matching", *names, "awaiting_group_validation", inbound=inbound)
    assert error.definition == "checked"
    with pytest.raises(DefinitionError, match="waits in awaiting_student_validation"):  # its own word
        attrs.evolve(huleedu_profile(), inbound=inbound)
    build(group_matching=None, inbound=inbound)  # every batch takes the content-only path: fine


def test_STRAND_an_inbound_without_content_ready_is_rejected() -> None:
    for matching in (None, CommandSpec("test.match.v1", MatchCommand)):
        rejects(
            "ContentReady",
            "awaiting_content_validation",
            group_matching=matching,
            inbound=_huleedu_inbound_without(ContentReady),
        )


# STRAND: the engine's side of "readiness paths that can strand a batch" (issue 13.4). Under a
# profile without student matching a batch registered with a class must take the content-only
# path (provisioning makes it ready), instead of waiting in awaiting_student_validation for
# associations nothing will ever ask for. The change is in pipeline_state/_decide/intake.py.
async def test_STRAND_a_class_batch_under_a_profile_without_matching_is_ready_on_content() -> None:
    profile = attrs.evolve(huleedu_profile(), group_matching=None)
    flow = Flow(InMemoryRuntime(profile), HuleEduEnvelopes())

    await flow.register("b1", items=2, group_id="class-7")
    out = await flow.rt.deliver(*flow.env.provisioned("b1", flow.env.item_ids("b1", 2)))

    assert Topic.STUDENT_MATCHING.value not in topics(out)
    state = await flow.state("b1")
    assert state.status.value == "ready_for_pipeline_execution", state.status
    assert state.group_id == "class-7"
    started = await flow.start("b1", "nlp")
    [command] = datas(started.out, Topic.SPELLCHECK.value)
    assert [e["essay_id"] for e in command["essays_to_process"]] == ["b1-e0", "b1-e1"]


async def test_STRAND_a_series_batch_of_the_media_example_is_ready_on_content_and_runs() -> None:
    # The media wire carries a season's series, the batch's group; the media profile has no
    # group matching, so a season of a series takes the content-only path like any other.
    media = load_example("custom_catalog")
    env = Envelopes(profile=media.MEDIA)
    rt = InMemoryRuntime(media.MEDIA)
    registration = env.register("s1", item_ids=["ep-1", "ep-2"], group_id="series-1", prompt=None)
    assert registration[1]["data"]["series_id"] == "series-1"  # on the media wire
    await rt.deliver(*registration)
    assert (await rt.service.get_batch("s1")).group_id == "series-1"
    out = await rt.deliver(*env.provisioned("s1", ["ep-1", "ep-2"]))
    assert out == []  # no matching command: the profile has none
    state = await rt.service.get_batch("s1")
    assert state.status.value == "ready_for_pipeline_execution"
    assert state.group_id == "series-1"
    assert (await rt.snapshot("s1"))["group_id"] == "series-1"

    pending = await rt.deliver(*env.request("s1", "preview"))
    while any(env.phase_of(m) for m in pending):
        message = next(m for m in pending if env.phase_of(m))
        pending.remove(message)
        pending += await rt.deliver(*env.answer(message))
    # The media profile reports the run's end in its own words (see examples/custom_catalog.py).
    [report] = datas(pending, "media.release.report.v1")
    assert report["outcome"] == "completed_successfully"


async def test_a_class_batch_under_a_profile_with_matching_still_waits_for_its_students() -> None:
    flow = Flow(InMemoryRuntime(huleedu_profile()), HuleEduEnvelopes())
    await flow.register("b1", items=2, group_id="class-7")
    out = await flow.rt.deliver(*flow.env.provisioned("b1", flow.env.item_ids("b1", 2)))
    assert Topic.STUDENT_MATCHING.value in topics(out)
    assert (await flow.state("b1")).status is BatchStatus.AWAITING_GROUP_VALIDATION


def test_the_service_refuses_a_catalog_where_a_profile_belongs() -> None:
    from pipeline_state import InMemoryStore, PipelineService
    from pipeline_state.profiles.huleedu.catalog import HULEEDU_CATALOG

    with pytest.raises(DefinitionError, match="Catalog"):
        PipelineService(InMemoryStore(), profile=HULEEDU_CATALOG)  # type: ignore[arg-type]


async def test_STRAND_early_associations_do_not_wait_for_a_path_the_profile_never_takes() -> None:
    # The waiting rules read the same readiness path as decide: under a profile without
    # student matching, associations for a class batch can never apply, so they are not held
    # as early facts (they used to wait for a provision_regular that would never fire).
    profile = attrs.evolve(huleedu_profile(), group_matching=None)
    flow = Flow(InMemoryRuntime(profile), HuleEduEnvelopes())
    await flow.register("b1", items=2, group_id="class-7")
    ids = flow.env.item_ids("b1", 2)

    await flow.rt.deliver(*flow.env.group_confirmed("b1", "class-7", ids))

    assert await flow.rt.service.store.list_waiting("b1") == []
    await flow.rt.deliver(*flow.env.provisioned("b1", ids))
    assert (await flow.state("b1")).status.value == "ready_for_pipeline_execution"
