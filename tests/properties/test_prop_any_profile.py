"""Issue 13.3: the stateful property test runs any profile. The shipped HuleEdu profile and
the media profile of ``examples/custom_catalog.py`` (its own inbound and outbound wire) are
held to the same promises: one active run at most, every ended run completed once, a
completed pipeline always unblocks the next request, redeliveries change nothing."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from hypothesis import HealthCheck, settings

from pipeline_state import Profile
from pipeline_state.profile import huleedu_profile
from pipeline_state.testing.profile_machine import ProfileMachine

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "custom_catalog.py"


def _media() -> Profile:
    spec = importlib.util.spec_from_file_location("media_property_example", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["media_property_example"] = module
    spec.loader.exec_module(module)
    profile: Profile = module.MEDIA
    return profile


BOUNDED = settings(
    max_examples=40, stateful_step_count=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

TestMediaProfile = ProfileMachine.for_profile(_media()).TestCase
TestMediaProfile.settings = BOUNDED
TestHuleEduProfile = ProfileMachine.for_profile(huleedu_profile()).TestCase
TestHuleEduProfile.settings = BOUNDED
