"""Test kit shipped with the library, for any profile: message builders driven by the
profile (:class:`Envelopes`), the store contract suite adapters must pass
(:class:`StoreContract`), generated paths through the engine (:func:`explore`: shortest and
simple input sequences, transition :func:`coverage`), a stateful test for any profile
(:class:`ProfileMachine`), span capture (:func:`span_capture`) and a checker of records
against an AsyncAPI document (:class:`WireChecker`).

Import every name from here. The default profile's own kit (its reference model,
strategies, stateful harness and the results store contract) lives with it under
:mod:`pipeline_state.profiles`. Everything but the builders is imported on first use, so
the kit's optional dependencies (pytest, Hypothesis, the OpenTelemetry SDK, jsonschema-rs)
are needed only by the names that use them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipeline_state._lazy import lazy_attribute

from .builders import Envelopes, item_refs

if TYPE_CHECKING:
    from .asyncapi import WireChecker
    from .contract import T0, ContractStore, StoreContract, make_state, message, with_deadline
    from .paths import (
        START,
        Exploration,
        TransitionKey,
        coverage,
        declared_transitions,
        engine_invariants,
        explore,
        replay,
        simple_paths,
    )
    from .profile_machine import ProfileMachine
    from .spans import SpanCapture, span_capture

_LAZY = {
    **dict.fromkeys(
        ("T0", "ContractStore", "StoreContract", "make_state", "message", "with_deadline"), "contract"
    ),
    **dict.fromkeys(
        (
            "START",
            "Exploration",
            "TransitionKey",
            "coverage",
            "declared_transitions",
            "engine_invariants",
            "explore",
            "replay",
            "simple_paths",
        ),
        "paths",
    ),
    "ProfileMachine": "profile_machine",
    "SpanCapture": "spans",
    "span_capture": "spans",
    "WireChecker": "asyncapi",
}

__all__ = [
    "START",
    "T0",
    "ContractStore",
    "Envelopes",
    "Exploration",
    "ProfileMachine",
    "SpanCapture",
    "StoreContract",
    "TransitionKey",
    "WireChecker",
    "coverage",
    "declared_transitions",
    "engine_invariants",
    "explore",
    "item_refs",
    "make_state",
    "message",
    "replay",
    "simple_paths",
    "span_capture",
    "with_deadline",
]

if not TYPE_CHECKING:

    def __getattr__(name: str) -> object:
        return lazy_attribute(__name__, _LAZY, name)


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
