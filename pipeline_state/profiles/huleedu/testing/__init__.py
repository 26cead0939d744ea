"""The HuleEdu profile's own test kit: Hypothesis strategies of its wire data and of whole
engine traces (:mod:`.strategies`), a reference model of its behaviour (:mod:`.reference`),
the stateful harness that compares the two (:mod:`.harness`), envelope builders writing
its services' payloads (:mod:`.envelopes`) and the contract suite of its
results read model's stores (:mod:`.results_contract`).

The generic kit, for any profile, is :mod:`pipeline_state.testing`. Everything here is
imported on first use, so the reference model works without the ``testing`` extra.
"""

from __future__ import annotations

from typing import Any

from pipeline_state._lazy import lazy_attribute

_LAZY = {
    "HuleEduEnvelopes": "envelopes",
    "essay_refs": "envelopes",
    "ReferenceModel": "reference",
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
    "ResultsStoreContract": "results_contract",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    return lazy_attribute(__name__, _LAZY, name)
