"""Issue 13, point 1: the generic test kit and views speak the engine's words.

``Envelopes`` writes any profile's wire from engine inputs; for the shipped profile its
messages read as the same inputs as ``HuleEduEnvelopes``' payload-exact ones. The batch
view keys the owner, group and item count as the profile says (``Profile.view_names``), and
the path generator's exploration profile is derived from any profile.
"""

from __future__ import annotations

from typing import Any

import attrs
import pytest

from pipeline_state import DefinitionError, InMemoryRuntime, Profile
from pipeline_state._profile import command_fields, command_size_bound
from pipeline_state._snapshot import ViewNames, snapshot
from pipeline_state.profiles import default_profile
from pipeline_state.profiles.huleedu import HULEEDU_INBOUND
from pipeline_state.profiles.huleedu.profile import huleedu_profile
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes
from pipeline_state.testing import Envelopes
from pipeline_state.testing.paths import exploration_profile

__all__: list[str] = []


def _read(delivery: tuple[str, dict[str, Any]]) -> object:
    topic, envelope = delivery
    return HULEEDU_INBOUND.parse(topic, envelope)[1]


CORRELATION = "0b6f7c1e-2f4d-4c1a-9e55-6d1f0a3b2c4d"


def _story(env: Envelopes) -> list[tuple[str, dict[str, Any]]]:
    ids = env.item_ids("b1", 2)
    return [
        env.register("b1", items=2, owner="o7", group_id="g1", category="ENG5", language="en"),
        env.provisioned("b1", ids),
        env.group_confirmed("b1", "g1", ids),
        env.items_ready("b1", ids),
        env.validation_errors("b1", critical=False),
        env.request("b1", "nlp", requested_by="o7", correlation_id=CORRELATION),
        env.outcome("b1", "spellcheck", CORRELATION, processed=ids[:1], failed=ids[1:]),
    ]


def test_generic_and_payload_exact_builders_read_as_the_same_inputs() -> None:
    generic, exact = _story(Envelopes()), _story(HuleEduEnvelopes())
    assert [topic for topic, _ in generic] == [topic for topic, _ in exact]
    assert [_read(d) for d in generic] == [_read(d) for d in exact]


def test_the_builders_defaults_are_the_engine_s_and_the_profile_s() -> None:
    assert _read(Envelopes().register("b1")).owner == "owner-1"  # type: ignore[attr-defined]
    assert _read(HuleEduEnvelopes().register("b1")).owner == "teacher-1"  # type: ignore[attr-defined]
    # Only the payload-exact builder lists a student per essay in the associations.
    generic = Envelopes().group_confirmed("b1", "g1", ["b1-e0"])[1]["data"]
    exact = HuleEduEnvelopes().group_confirmed("b1", "g1", ["b1-e0"])[1]["data"]
    assert "associations" not in generic
    assert exact["associations"] == [{"essay_id": "b1-e0", "student_id": "student-b1-e0"}]


async def test_the_batch_view_uses_the_profile_s_keys() -> None:
    shipped = huleedu_profile()
    plain = attrs.evolve(shipped, view_names=ViewNames())
    env = Envelopes(profile=shipped)
    views = []
    for profile in (shipped, plain):
        rt = InMemoryRuntime(profile)
        await rt.deliver(*env.register("b1", items=2, owner="o7", group_id="g1"))
        await rt.deliver(*env.provisioned("b1", env.item_ids("b1", 2)))
        views.append(await rt.snapshot("b1"))
    shipped_view, plain_view = views
    assert (shipped_view["user_id"], shipped_view["class_id"], shipped_view["essay_count"]) == ("o7", "g1", 2)
    assert (plain_view["owner"], plain_view["group_id"], plain_view["item_count"]) == ("o7", "g1", 2)
    assert {"owner", "group_id", "item_count"}.isdisjoint(shipped_view)
    assert {"user_id", "class_id", "essay_count"}.isdisjoint(plain_view)
    # Without names, snapshot keys the view as the default profile does (the HTTP API's shape).
    state = await rt.service.get_batch("b1")
    assert snapshot(state) == shipped_view
    assert snapshot(state, ViewNames()) == plain_view
    assert default_profile().view_names == shipped.view_names


def test_a_profile_with_view_names_of_the_wrong_type_is_refused() -> None:
    with pytest.raises(DefinitionError, match="view_names must be a ViewNames"):
        attrs.evolve(huleedu_profile(), view_names={"owner": "user_id"})


def test_the_exploration_profile_is_derived_from_any_profile() -> None:
    base = huleedu_profile(max_resends=4)
    explored = exploration_profile(base)
    assert isinstance(explored, Profile)
    assert (explored.max_items_per_batch, explored.max_resends) == (2, 1)
    fields = {command_fields(spec.model) for spec in base.phase_commands.values()}
    assert explored.max_command_bytes == max(command_size_bound(2, f) for f in fields)
    assert (explored.catalog, explored.phase_commands, explored.inbound) == (
        base.catalog,
        base.phase_commands,
        base.inbound,
    )
    assert exploration_profile().max_command_bytes == explored.max_command_bytes
