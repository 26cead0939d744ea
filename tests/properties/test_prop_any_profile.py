"""Issue 13.3: the stateful property test runs any profile. The shipped HuleEdu profile and
the media profile of ``examples/custom_catalog.py`` (its own inbound and outbound wire) are
held to the same promises: one active run at most, every ended run completed once, a
completed pipeline always unblocks the next request, redeliveries change nothing."""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, settings

from pipeline_state.profiles import load_profile
from pipeline_state.profiles.huleedu.profile import huleedu_profile
from pipeline_state.testing import ProfileMachine

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "custom_catalog.py"


BOUNDED = settings(
    max_examples=40, stateful_step_count=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

TestMediaProfile = ProfileMachine.for_profile(load_profile(f"{EXAMPLE}:MEDIA")).TestCase
TestMediaProfile.settings = BOUNDED
TestHuleEduProfile = ProfileMachine.for_profile(huleedu_profile()).TestCase
TestHuleEduProfile.settings = BOUNDED
