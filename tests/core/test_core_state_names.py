"""A profile's names for the engine's batch states and triggers (issue 13, point 1): the
engine speaks its own words; the shipped profile keeps its wire's."""

from __future__ import annotations

import pytest

from pipeline_state import BatchStatus, DefinitionError, InMemoryRuntime, Profile
from pipeline_state._names import StateNames
from pipeline_state.profiles.huleedu.events import Topic
from pipeline_state.profiles.huleedu.profile import HULEEDU_STATE_NAMES, huleedu_profile
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes
from tests.core.core_flow import Flow, load_example, one


def test_names_show_and_read_back() -> None:
    names = StateNames(
        {BatchStatus.AWAITING_GROUP_VALIDATION: "waiting_for_members", "items_ready": "all_in"}
    )
    assert names.show("awaiting_group_validation") == "waiting_for_members"
    assert names.show("items_ready") == "all_in"
    assert names.show("cancelled") == "cancelled"  # not renamed: shown as it is
    assert names.read("waiting_for_members") == "awaiting_group_validation"
    assert names.read("cancelled") == "cancelled"
    assert StateNames(names) == names
    assert hash(StateNames(names)) == hash(names)
    assert not StateNames()
    assert names


@pytest.mark.parametrize(
    ("given", "words"),
    [
        ({"no_such_state": "x"}, ["no_such_state", "not batch states or triggers"]),
        ({"cancelled": "archived"}, ["'cancelled'", "'archived'", "already names"]),
        ({"cancelled": "gone", "archived": "gone"}, ["'gone'", "already names"]),
        ({"cancelled": ""}, ["non-empty"]),
        (["cancelled"], ["mapping"]),
    ],
)
def test_a_profile_with_bad_names_is_refused_when_built(given: object, words: list[str]) -> None:
    base = huleedu_profile()
    with pytest.raises(DefinitionError) as caught:
        Profile(
            name="renaming",
            catalog=base.catalog,
            phase_commands=base.phase_commands,
            state_names=given,  # type: ignore[arg-type]
        )
    for word in words:
        assert word in str(caught.value)


def test_the_shipped_profile_names_the_group_states_as_its_wire_does() -> None:
    assert huleedu_profile().state_names == HULEEDU_STATE_NAMES
    shown = {s.value: HULEEDU_STATE_NAMES.show(s.value) for s in BatchStatus}
    assert shown["awaiting_group_validation"] == "awaiting_student_validation"
    assert shown["group_validation_completed"] == "student_validation_completed"
    assert HULEEDU_STATE_NAMES.show("items_ready") == "essays_ready"
    # Every other status shows as the engine names it.
    assert sum(1 for value, name in shown.items() if value != name) == 2


async def test_reasons_waits_and_views_use_the_profile_names_the_state_keeps_the_engines() -> None:
    flow = Flow(InMemoryRuntime(huleedu_profile()), HuleEduEnvelopes())
    env = flow.env
    await flow.register("b1", items=2, group_id="class-7")
    ids = env.item_ids("b1", 2)
    await flow.rt.deliver(*env.provisioned("b1", ids))
    state = await flow.state("b1")
    assert state.status is BatchStatus.AWAITING_GROUP_VALIDATION
    view = await flow.rt.snapshot("b1")
    assert view["status"] == "awaiting_student_validation"
    # A request now is denied with the profile's word for the state in its detail.
    out = await flow.rt.deliver(*env.request("b1", "nlp"))
    denied = one(out, Topic.PIPELINE_DENIED.value)
    assert (denied["denial_reason"], denied["detail"]) == (
        "batch_not_ready",
        "the batch is awaiting_student_validation",
    )
    # A fact that comes too early waits for the state under the profile's name.
    early = env.items_ready("b1", ids)
    await flow.rt.deliver(*early)
    entry = await flow.rt.store.inbox_entry(early[1]["event_id"])
    assert entry is not None
    assert entry.result == "deferred:batch_state:student_validation_completed"
    # The transition log keeps the engine's names.
    moves = [(t.trigger, t.source, t.dest) for t in flow.rt.store.transitions("b1")]
    assert ("provision_regular", "awaiting_content_validation", "awaiting_group_validation") in moves


async def test_a_profile_without_names_speaks_the_engines_words() -> None:
    media: Profile = load_example("custom_catalog").MEDIA
    assert not media.state_names
    assert media.state_names.show("awaiting_group_validation") == "awaiting_group_validation"
