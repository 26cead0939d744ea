"""Test kit shipped with the library: message builders, Hypothesis strategies, a stateful
harness and the contract suites adapters must pass."""

from __future__ import annotations

from .builders import Envelopes, essay_refs

__all__ = ["Envelopes", "essay_refs"]
