"""The names of a custom profile's inbound topics are checked when it is built.

Was a defect (found by an attack on the generic seam).

A profile's command topics are checked when it is built (``_check_text`` in
``pipeline_state/_profile.py``: 1 to 200 characters, no control characters, "it travels in
every envelope"), and a catalog's names likewise (``_check_name``), so that a name no
envelope can carry fails at load time with a ``DefinitionError``. The topics a profile
*consumes* (``InboundTopic.topic``, ``pipeline_state/_inbound.py``) were only checked to be
non-empty strings: a topic with a NUL or of more than 200 characters built, and then every
message consumed on it was refused as invalid input, because an envelope's ``event_type``
(the topic) is an id of at most 200 characters without control characters: such a profile
could never register a batch (shown in memory before the fix). Now ``InboundTopic`` refuses
such a topic with a ``DefinitionError``.
"""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest

from pipeline_state import Inbound, Profile
from pipeline_state.errors import DefinitionError
from pipeline_state.profiles import load_profile

MEDIA = load_profile(f"{Path(__file__).resolve().parents[2] / 'examples' / 'custom_catalog.py'}:MEDIA")
MEDIA_INBOUND = MEDIA.inbound

pytestmark = pytest.mark.timeout(60)

BAD_TOPICS = {"nul": "media.season\x00opened.v1", "long": "media.season.opened." + "x" * 190}


def _with_registration_topic(topic: str) -> Profile:
    specs = list(MEDIA_INBOUND.topics.values())
    specs[0] = attrs.evolve(specs[0], topic=topic)
    return attrs.evolve(MEDIA, name="media-bad-topic", inbound=Inbound(specs))


@pytest.mark.parametrize("bad", sorted(BAD_TOPICS))
def test_an_inbound_topic_no_envelope_can_carry_is_refused_when_built(bad: str) -> None:
    """Expected: ``DefinitionError`` at load time, as for a command topic with the same
    text (``tests/core/test_core_profile_checks.py::test_a_command_topic_must_be_a_short_string``).
    (It built, before the fix.)"""
    with pytest.raises(DefinitionError):
        _with_registration_topic(BAD_TOPICS[bad])
