"""A profile words what the engine announces (issue 13): its ``Outbound`` decides the topic,
model and fields of the registration, skip, denial and completion events and of owner
notifications - or that there are none. The HuleEdu wording is pinned by ``tests/golden``."""

from __future__ import annotations

import attrs
import pytest
from core_flow import load_example

from pipeline_state import InMemoryRuntime, Profile
from pipeline_state.errors import DefinitionError
from pipeline_state.profiles.huleedu import HULEEDU_OUTBOUND
from pipeline_state.profiles.huleedu.profile import huleedu_profile
from pipeline_state.testing import Envelopes


def test_the_shipped_profile_speaks_huleedu() -> None:
    assert huleedu_profile().outbound is HULEEDU_OUTBOUND


async def test_a_profile_of_its_own_emits_only_its_own_events() -> None:
    media = load_example("custom_catalog")
    profile: Profile = media.MEDIA
    rt, env = InMemoryRuntime(profile), Envelopes(profile=profile)
    episodes = env.item_ids("s1", 2)
    assert await rt.deliver(*env.register("s1", items=2)) == []  # no registration event
    await rt.deliver(*env.provisioned("s1", episodes))
    out = await rt.deliver(*env.request("s1", "preview"))
    seen = list(out)
    while out:
        commands = [m for m in out if m["topic"] in env.phase_topics()]
        out = []
        for command in commands:
            # transcode loses the second episode; thumbnails get only the first
            lost = episodes[1:] if command["topic"] == "media.transcode.start.v1" else []
            out += await rt.deliver(*env.answer(command, failed=lost))
        seen += out
    denied = await rt.deliver(*env.request("s1", "no-such-pipeline"))

    topics = {m["topic"] for m in seen}
    assert topics == {"media.transcode.start.v1", "media.thumbnails.start.v1", "media.release.report.v1"}
    (report,) = [m["value"]["data"] for m in seen if m["topic"] == "media.release.report.v1"]
    assert report == {
        "season_id": "s1",
        "pipeline": "preview",
        "outcome": "completed_with_failures",
        "episodes_done": 1,
        "episodes_failed": 1,
        "steps_done": ["transcode", "thumbnails"],
    }
    assert [(m["topic"], m["value"]["data"]["why"]) for m in denied] == [
        ("media.request.refused.v1", "unknown_pipeline")
    ]


def test_an_outbound_without_the_engine_s_methods_is_a_definition_error() -> None:
    class Mute:
        def registered(self, state: object) -> tuple[()]:
            return ()

    with pytest.raises(DefinitionError, match="phase_skipped"):
        attrs.evolve(huleedu_profile(), outbound=Mute())
