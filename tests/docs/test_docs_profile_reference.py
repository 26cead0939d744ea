"""Issue 13.6: the profile reference is generated from the profile; for the media profile of
``examples/custom_catalog.py`` it shows that profile's own wire and readiness path."""

from __future__ import annotations

from pathlib import Path

from pipeline_state._profile_reference import render_profile_page
from pipeline_state.profiles import load_profile
from pipeline_state.profiles.huleedu.profile import huleedu_profile

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "custom_catalog.py"


def test_the_media_profile_page_shows_its_own_wire() -> None:
    page = render_profile_page(load_profile(f"{EXAMPLE}:MEDIA"))
    assert page.startswith("# The `media` profile")
    assert "Every batch takes the **content-only** path" in page
    for topic in ("media.season.opened.v1", "media.step.finished.v1", "media.release.report.v1"):
        assert f"| `{topic}` |" in page
    assert "| `media.captions.start.v1` | `CaptionsCommand` | `batch_id`, `episodes`, `language` |" in page
    assert "huleedu." not in page
    assert "None: every request the lifecycle allows starts a run." in page


def test_the_shipped_profile_page_names_every_inbound_topic_and_phase() -> None:
    profile = huleedu_profile()
    page = render_profile_page(profile)
    assert all(f"| `{topic}` |" in page for topic in profile.inbound.names)
    assert all(f"| `{phase}` |" in page for phase in profile.catalog.phases)
    assert "`StudentMatchingInitiateCommandV1`" in page
