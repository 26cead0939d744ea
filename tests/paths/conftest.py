"""Fixtures of the generated-path tests: one exploration of the engine per session, and the
support module (replays through the service and the reference model) on ``sys.path``."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from pipeline_state.testing import Exploration, explore

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

__all__: list[str] = []


@pytest.fixture(scope="session")
def exploration() -> Exploration:
    """The breadth-first search from an unregistered batch with the default profiles."""
    return explore()
