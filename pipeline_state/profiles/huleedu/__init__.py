"""The HuleEdu education platform as a profile of the engine: how its inbound messages read
as engine inputs (:mod:`.inbound`) and how it words the events the engine emits
(:mod:`.outbound`). Its catalog, wire models and profile factory still live in
:mod:`pipeline_state.catalog`, :mod:`pipeline_state.events` and
:mod:`pipeline_state.profile` while the engine is made generic."""

from __future__ import annotations

from .inbound import HULEEDU_INBOUND, default_language
from .outbound import HULEEDU_OUTBOUND, HuleEduOutbound

__all__ = ["HULEEDU_INBOUND", "HULEEDU_OUTBOUND", "HuleEduOutbound", "default_language"]
