"""Demos played in memory: :func:`~.any_profile.run_profile_demo` plays any profile
(``pipeline-state demo --profile SPEC``); the default profile brings its own story
(``pipeline-state demo``, see :func:`pipeline_state.profiles.run_default_demo`)."""

from __future__ import annotations

from .any_profile import run_profile_demo

__all__ = ["run_profile_demo"]
