"""The topics a custom profile's ``Outbound`` announces on are checked when it is built.

Was a defect (found by an attack on the generic seam).

Command topics were checked when a profile is built (``_check_text`` in
``pipeline_state/_profile.py``: 1 to 200 characters, no control characters, "it travels in
every envelope"); the topics of the events its ``outbound`` announces were found then
(``Profile.event_topics``) but their text was not checked. A profile whose completion report
went to a topic with a NUL (or of more than 200 characters, which no envelope's
``event_type`` may be) built, and on PostgreSQL the unit of work that finished a run with a
NUL topic could not be written (the outbox row refused: ``RejectedDataError``), on every
retry: the run never completed and its batch stayed in ``processing_pipelines`` (shown on
PostgreSQL before the fix; contract section 2, "Completion (exactly once per run)"). Now
such a topic is a ``DefinitionError`` when the profile is built, as a command topic is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import pytest

from pipeline_state import Profile
from pipeline_state.errors import DefinitionError
from pipeline_state.profiles import load_profile

MEDIA = load_profile(f"{Path(__file__).resolve().parents[2] / 'examples' / 'custom_catalog.py'}:MEDIA")
MediaOutbound = type(MEDIA.outbound)

pytestmark = pytest.mark.timeout(120)

BAD_TOPICS = {"nul": "media.release\x00report.v1", "long": "media.release.report." + "x" * 280}


def _reporting_on(topic: str) -> Profile:
    class Reports(MediaOutbound):
        def completed(self, state: Any, summary: Any) -> Any:
            return tuple(attrs.evolve(o, topic=topic) for o in super().completed(state, summary))

    return attrs.evolve(MEDIA, name="media-bad-report", outbound=Reports())


@pytest.mark.parametrize("bad", sorted(BAD_TOPICS))
def test_an_event_topic_no_envelope_or_outbox_can_carry_is_refused_when_built(bad: str) -> None:
    """Expected: ``DefinitionError`` at load time, as for a command topic with the same text.
    (It built, before the fix.)"""
    with pytest.raises(DefinitionError):
        _reporting_on(BAD_TOPICS[bad])
