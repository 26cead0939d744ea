"""Fixtures of the core behaviour tests (runtime, envelope builder, flow driver)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from pipeline_state import InMemoryRuntime
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes

# The test modules import their shared helpers from core_flow.py next to this file.
_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from core_flow import Flow  # noqa: E402

__all__: list[str] = []


@pytest.fixture
def env() -> HuleEduEnvelopes:
    return HuleEduEnvelopes()


@pytest.fixture
def rt() -> InMemoryRuntime:
    return InMemoryRuntime()


@pytest.fixture
def flow(rt: InMemoryRuntime, env: HuleEduEnvelopes) -> Flow:
    return Flow(rt, env)
