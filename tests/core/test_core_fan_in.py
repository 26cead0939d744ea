"""Fan-in (issue 13, point 5): a phase with several dependencies gets, for each item that
succeeded in every one, each dependency's ref, merged as its profile's ``fan_in`` policy
says. The media example's ``publish`` lists the file of each step it waited for; HuleEdu
declares the merge that carries the last dependency's ref only (its wire is unchanged: the
golden files show it byte for byte); the policy and the room the commands have for what it
lists are checked when a profile is built."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, ClassVar

import attrs
import pytest
from core_flow import datas, load_example
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import Field

from pipeline_state import CommandSpec, DefinitionError, InMemoryRuntime, Profile, RetryPhase, WireModel
from pipeline_state._fan_in import gather
from pipeline_state.ports import (
    EVERY_DEPENDENCY,
    LAST_DEPENDENCY,
    CommandFields,
    DependencyRef,
    FanIn,
    FanInItem,
    ItemRef,
    Merged,
)
from pipeline_state.profiles.huleedu.profile import HULEEDU_FAN_IN, huleedu_profile
from pipeline_state.testing import Envelopes
from pipeline_state.testing.paths import exploration_profile

EXAMPLE = load_example("custom_catalog")
MEDIA: Profile = EXAMPLE.MEDIA
PUBLISH = MEDIA.phase_commands["publish"].topic
SEASON = "season-1"

Message = dict[str, Any]


async def _season(profile: Profile = MEDIA) -> tuple[InMemoryRuntime, Envelopes, list[str]]:
    rt, env = InMemoryRuntime(profile), Envelopes(source_service="media_upload", profile=profile)
    episodes = env.item_ids(SEASON, 3)
    await rt.deliver(*env.register(SEASON, items=3, category="MEDIA", prompt=None))
    await rt.deliver(*env.provisioned(SEASON, episodes))
    return rt, env, episodes


async def _run(
    rt: InMemoryRuntime, env: Envelopes, pipeline: str, failed: dict[str, Sequence[str]] | None = None
) -> list[Message]:
    """Request ``pipeline`` and answer every phase command: the items it was sent are
    processed, but those ``failed`` names for its phase; returns every message emitted."""
    out = await rt.deliver(*env.request(SEASON, pipeline))
    return await _answer(rt, env, out, failed or {})


async def _answer(
    rt: InMemoryRuntime, env: Envelopes, out: list[Message], failed: dict[str, Sequence[str]]
) -> list[Message]:
    seen = list(out)
    pending = list(out)
    while pending:
        message = pending.pop(0)
        phase = env.phase_of(message)
        if phase is None:
            continue
        bad = list(failed.get(phase, ()))
        done = [i for i in env.sent_item_ids(message) if i not in bad]
        correlation = message["value"]["correlation_id"]
        more = await rt.deliver(*env.outcome(SEASON, phase, correlation, processed=done, failed=bad))
        seen += more
        pending += more
    return seen


def _sources(uri: str, *steps: str) -> list[dict[str, str]]:
    return [{"step": step, "source_uri": f"{uri}-{step}"} for step in steps]


async def test_media_publish_lists_the_file_of_each_step_it_waited_for() -> None:
    rt, env, (e0, e1, e2) = await _season()
    out = await _run(rt, env, "release", failed={"captions": [e2]})
    (publish,) = datas(out, PUBLISH)
    # e2 failed in captions: it does not go on; the others carry thumbnails' and captions' files
    assert publish["episodes"] == [
        {"episode_id": e, "source_uri": f"{e}-captions", "sources": _sources(e, "thumbnails", "captions")}
        for e in (e0, e1)
    ]


async def test_media_publish_lists_the_recorded_file_of_a_pruned_step() -> None:
    rt, env, episodes = await _season()
    await _run(rt, env, "preview")  # transcode and thumbnails: pruned from the release below
    out = await _run(rt, env, "release")
    (publish,) = datas(out, PUBLISH)
    assert [e["sources"] for e in publish["episodes"]] == [
        _sources(e, "thumbnails", "captions") for e in episodes
    ]


async def test_a_retried_fan_in_phase_lists_each_dependency_recorded_file() -> None:
    rt, env, episodes = await _season()
    await _run(rt, env, "release")
    out = await rt.execute(RetryPhase(SEASON, "publish", "producer-1"))
    (publish,) = datas(out, PUBLISH)
    assert [e["sources"] for e in publish["episodes"]] == [
        _sources(e, "thumbnails", "captions") for e in episodes
    ]


async def test_a_phase_with_one_dependency_lists_nothing() -> None:
    rt, env, _ = await _season()
    out = await _run(rt, env, "release")
    for phase in ("thumbnails", "captions"):
        (command,) = datas(out, MEDIA.phase_commands[phase].topic)
        assert all(set(e) == {"episode_id", "source_uri"} for e in command["episodes"])


@attrs.frozen
class FirstDependency:
    """A profile's own merge: the first dependency's file, none listed."""

    lists_refs: ClassVar[bool] = False

    def merge(self, item: FanInItem) -> Merged:
        return Merged(item.refs[0].content_ref)


async def test_a_profile_brings_its_own_merge() -> None:
    first = attrs.evolve(MEDIA, fan_in=FirstDependency())
    assert isinstance(first.fan_in, FanIn)
    rt, env, episodes = await _season(first)
    (publish,) = datas(await _run(rt, env, "release"), PUBLISH)
    assert publish["episodes"] == [
        {"episode_id": e, "source_uri": f"{e}-thumbnails", "sources": []} for e in episodes
    ]


async def test_last_dependency_carries_the_last_ref_and_lists_none() -> None:
    last = attrs.evolve(MEDIA, fan_in=LAST_DEPENDENCY)
    rt, env, episodes = await _season(last)
    (publish,) = datas(await _run(rt, env, "release"), PUBLISH)
    assert publish["episodes"] == [
        {"episode_id": e, "source_uri": f"{e}-captions", "sources": []} for e in episodes
    ]


def test_huleedu_declares_the_merge_of_one_ref_per_essay() -> None:
    assert HULEEDU_FAN_IN is LAST_DEPENDENCY
    assert huleedu_profile().fan_in is LAST_DEPENDENCY
    assert MEDIA.fan_in is EVERY_DEPENDENCY  # the default


# -- the engine's gathering ------------------------------------------------------------------


def test_gather_keeps_the_items_of_every_dependency_in_the_last_one_order() -> None:
    a = (ItemRef("x", "x-a"), ItemRef("y", "y-a"), ItemRef("z", "z-a"))
    b = (ItemRef("z", "z-b"), ItemRef("x", "x-b"))
    inputs, listed = gather(EVERY_DEPENDENCY, ("a", "b"), (a, b))
    assert inputs == (ItemRef("z", "z-b"), ItemRef("x", "x-b"))
    assert listed == {
        "z": (DependencyRef("a", "z-a"), DependencyRef("b", "z-b")),
        "x": (DependencyRef("a", "x-a"), DependencyRef("b", "x-b")),
    }
    assert gather(LAST_DEPENDENCY, ("a", "b"), (a, b)) == (inputs, {})


def test_gather_takes_three_dependencies() -> None:
    outputs = tuple((ItemRef("x", f"x-{d}"), ItemRef(d, d)) for d in "abc")
    inputs, listed = gather(EVERY_DEPENDENCY, ("a", "b", "c"), outputs)
    assert inputs == (ItemRef("x", "x-c"),)
    assert listed == {"x": tuple(DependencyRef(d, f"x-{d}") for d in "abc")}


def test_gather_refuses_a_merge_that_returns_something_else() -> None:
    @attrs.frozen
    class Wrong:
        lists_refs: ClassVar[bool] = False

        def merge(self, item: FanInItem) -> Merged:
            return item.refs[0]  # type: ignore[return-value]

    with pytest.raises(TypeError, match="not a Merged"):
        gather(Wrong(), ("a", "b"), ((ItemRef("x"),), (ItemRef("x"),)))


# -- checked when built ----------------------------------------------------------------------


class OneRef(WireModel):
    """A command with one ref per item and no room for a list."""

    batch_id: str
    items: list[dict[str, str | None]]


def _with_publish(model: type[WireModel], **changes: Any) -> Profile:
    commands = dict(MEDIA.phase_commands)
    commands["publish"] = CommandSpec(PUBLISH, model)
    return attrs.evolve(MEDIA, phase_commands=commands, **changes)


def test_a_fan_in_command_without_room_for_the_list_is_refused() -> None:
    with pytest.raises(DefinitionError, match=r"'publish' has several dependencies.*LAST_DEPENDENCY"):
        _with_publish(OneRef)
    assert _with_publish(OneRef, fan_in=LAST_DEPENDENCY).fan_in is LAST_DEPENDENCY


def test_a_fan_in_policy_must_be_one() -> None:
    with pytest.raises(DefinitionError, match="the class EveryDependency"):
        attrs.evolve(MEDIA, fan_in=type(EVERY_DEPENDENCY))  # type: ignore[arg-type]
    with pytest.raises(DefinitionError, match="lists_refs and a callable merge"):
        attrs.evolve(MEDIA, fan_in=lambda item: item)  # type: ignore[arg-type]
    with pytest.raises(DefinitionError, match="lists_refs and a callable merge"):
        attrs.evolve(MEDIA, fan_in="last")  # type: ignore[arg-type]


LISTING = CommandFields(items="episodes", item_id="episode_id", content_ref="uri", dependency_refs="from")


class Plain(WireModel):
    episode_id: str
    uri: str | None = None


class NoRoom(WireModel):
    command_fields: ClassVar[CommandFields] = LISTING
    batch_id: str
    episodes: list[Plain]


class Required(Plain):
    from_: list[dict[str, Any]] = Field(alias="from")


class MustList(WireModel):
    command_fields: ClassVar[CommandFields] = LISTING
    batch_id: str
    episodes: list[Required]


def test_a_declared_list_its_items_lack_or_require_is_refused() -> None:
    with pytest.raises(DefinitionError, match=r"declares dependency_refs='from'.*Plain\) have no such field"):
        _with_publish(NoRoom)
    with pytest.raises(DefinitionError, match=r"requires 'from' in each item.*give it a default"):
        _with_publish(MustList)


def test_the_size_bound_counts_the_listed_refs() -> None:
    with pytest.raises(DefinitionError, match="max_items_per_batch=1000 items may take up to"):
        attrs.evolve(MEDIA, max_items_per_batch=1000)
    assert attrs.evolve(MEDIA, max_items_per_batch=1000, fan_in=LAST_DEPENDENCY).max_items_per_batch == 1000
    names = MEDIA.phase_commands["publish"].model.command_fields  # type: ignore[attr-defined]
    listed = names.listed_refs_max_bytes(("thumbnails", "captions"))
    refs = [{"step": "thumbnails", "source_uri": "u" * 100}, {"step": "captions", "source_uri": "u" * 100}]
    item = {"episode_id": "e" * 100, "source_uri": "u" * 100}
    measured = len(json.dumps({**item, "sources": refs}, separators=(",", ":"))) - len(
        json.dumps(item, separators=(",", ":"))
    )
    assert measured <= listed


def test_the_exploration_profile_of_a_listing_profile_fits_its_fan_in_commands() -> None:
    explored = exploration_profile(MEDIA)
    assert explored.max_items_per_batch == 2
    assert explored.max_command_bytes == MEDIA.largest_command_bytes(2)
    assert MEDIA.largest_command_bytes(2) > attrs.evolve(MEDIA, fan_in=LAST_DEPENDENCY).largest_command_bytes(
        2
    )


_IDS = st.sampled_from(["a", "b", "c", "d", "e"])


@st.composite
def _outputs(draw: st.DrawFn) -> tuple[tuple[str, ...], tuple[tuple[ItemRef, ...], ...]]:
    """Two to four dependencies, each with the refs of some items (each item once)."""
    deps = tuple(f"dep{i}" for i in range(draw(st.integers(2, 4))))
    outputs = tuple(tuple(ItemRef(i, f"{i}@{d}") for i in draw(st.lists(_IDS, unique=True))) for d in deps)
    return deps, outputs


@given(_outputs())
@settings(deadline=None)  # a loaded machine pauses longer than the default 200 ms
def test_gather_lists_each_dependency_ref_of_every_surviving_item(
    drawn: tuple[tuple[str, ...], tuple[tuple[ItemRef, ...], ...]],
) -> None:
    deps, outputs = drawn
    inputs, listed = gather(EVERY_DEPENDENCY, deps, outputs)
    survivors = set.intersection(*({e.item_id for e in out} for out in outputs))
    assert [e.item_id for e in inputs] == [e.item_id for e in outputs[-1] if e.item_id in survivors]
    assert set(listed) == survivors
    for ref in inputs:
        assert ref.content_ref == f"{ref.item_id}@{deps[-1]}"
        assert listed[ref.item_id] == tuple(DependencyRef(d, f"{ref.item_id}@{d}") for d in deps)
    # the last dependency's merge gives the same items and refs, and lists none
    assert gather(LAST_DEPENDENCY, deps, outputs) == (inputs, {})
