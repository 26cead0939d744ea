"""The HuleEdu wire contract as the documentation's reference page shows it
(:func:`pipeline_state._docsgen.render_wire_contract_page`)."""

from __future__ import annotations

from pipeline_state._docsgen import WireContract

from .events import TOPICS

__all__ = ["HULEEDU_WIRE_CONTRACT"]

HULEEDU_WIRE_CONTRACT = WireContract(
    topics=TOPICS,
    source="[`TOPICS`][pipeline_state.profiles.huleedu.events.TOPICS]",
    parser="[`parse_message`][pipeline_state.profiles.huleedu.events.parse_message]",
    keys="`batch_id` for batch events, `teacher_id` for notifications",
)
"""Every HuleEdu topic, declared in :data:`~pipeline_state.profiles.huleedu.events.TOPICS`."""
