"""Test kit shipped with the library, for any profile: message builders driven by the
profile (:class:`Envelopes`), the store contract suite adapters must pass
(:mod:`.contract`), generated paths through the engine (``paths``: shortest and simple input
sequences, transition coverage), a stateful test for any profile (:mod:`.profile_machine`)
and span helpers (:mod:`.spans`).

The default profile's own kit (its reference model, strategies, stateful harness and the
results store contract) lives with it under :mod:`pipeline_state.profiles`. ``paths`` is
imported on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from .builders import Envelopes, item_refs

_LAZY = {
    "Exploration": "paths",
    "TransitionKey": "paths",
    "coverage": "paths",
    "declared_transitions": "paths",
    "engine_invariants": "paths",
    "explore": "paths",
    "replay": "paths",
    "simple_paths": "paths",
}

__all__ = ["Envelopes", "item_refs", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
