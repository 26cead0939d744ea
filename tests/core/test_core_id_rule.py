"""The wire's id rule (``pipeline_state._wire.Id``, ``is_id_text``): an id never carries a
character that changes how the text around it is shown - C0 and C1 controls and DEL (a C1
CSI starts a terminal escape as ESC [ does), line and paragraph separators, bidirectional
marks, embeddings, overrides and isolates - whether it comes in an envelope or is checked
alone (an operator's name, a profile's names)."""

from __future__ import annotations

import pytest

from pipeline_state._wire import ID_ADAPTER, is_id_text
from pipeline_state.errors import InvalidMessageError
from pipeline_state.profiles.huleedu.events import parse_message
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes

UNSHOWABLE = [
    "\x00", "\x1b", "\x7f", "\x85", "\x9b", "\u061c", "\u200e", "\u200f",
    "\u2028", "\u2029", "\u202a", "\u202e", "\u2066", "\u2069",
]  # fmt: skip


@pytest.mark.parametrize("char", UNSHOWABLE)
def test_an_id_with_an_unshowable_character_is_refused_everywhere(char: str) -> None:
    """Was a defect (fixed) for C1 controls, DEL, the separators and the bidi marks: the
    rule refused only C0 controls and the bidi embeddings, overrides and isolates."""
    value = f"teacher{char}1"
    assert not is_id_text(value)
    with pytest.raises(ValueError, match="pattern"):
        ID_ADAPTER.validate_python(value)
    topic, envelope = HuleEduEnvelopes().register(value, items=1)
    with pytest.raises(InvalidMessageError):
        parse_message(topic, envelope)


@pytest.mark.parametrize("value", ["teacher-1@example.org", 'ä|b"<x>', "科目-7", "a b", "x" * 200])
def test_ids_of_every_script_and_punctuation_pass(value: str) -> None:
    assert is_id_text(value)
    assert ID_ADAPTER.validate_python(value) == value
