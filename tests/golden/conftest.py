"""The golden wire tests import their recorder as ``tests.golden.record`` (the module that
``python -m tests.golden.record`` runs), so the repository root must be importable."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from opentelemetry import trace

import pipeline_state._tracing

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)


@pytest.fixture(autouse=True)
def _wire_without_tracing(monkeypatch: pytest.MonkeyPatch) -> None:
    """The recordings pin the wire of a service without an OpenTelemetry SDK. A test that
    installed the SDK earlier in the process (the tracing tests do: a provider can only be
    installed once) would add ``traceparent`` headers, which the contract does not fix and
    the tracing tests check on their own; the library sees no tracer provider here."""
    monkeypatch.setattr(pipeline_state._tracing, "_sdk_tracer", _no_provider)


def _no_provider() -> trace.Tracer | None:
    return None
