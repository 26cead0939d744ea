"""Test kit shipped with the library: message builders, a reference model, Hypothesis
strategies, a stateful harness, the contract suites adapters must pass, and generated
paths through the engine (``paths``: shortest and simple input sequences, transition
coverage).

The Hypothesis-based parts (``strategies``, ``harness``) are imported on first use, so the
builders and the reference model work without the ``testing`` extra installed; ``paths``
needs no extra and is imported on first use too.
"""

from __future__ import annotations

import importlib
from typing import Any

from .builders import Envelopes, essay_refs
from .reference import ReferenceModel

_LAZY = {
    "PipelineMachine": "harness",
    "EngineUnderTest": "harness",
    "EngineFactory": "harness",
    "check_outgoing": "harness",
    "ProfileSpec": "strategies",
    "profile_specs": "strategies",
    "catalogs": "strategies",
    "catalog_data": "strategies",
    "batch_states": "strategies",
    "engine_traces": "strategies",
    "commands_for": "strategies",
    "inbound_messages": "strategies",
    "envelopes": "strategies",
    "outcome_data": "strategies",
    "Exploration": "paths",
    "TransitionKey": "paths",
    "coverage": "paths",
    "declared_transitions": "paths",
    "engine_invariants": "paths",
    "explore": "paths",
    "replay": "paths",
    "simple_paths": "paths",
}

__all__ = ["Envelopes", "ReferenceModel", "essay_refs", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
