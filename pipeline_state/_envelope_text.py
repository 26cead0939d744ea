"""An outbox envelope's JSON text, encoded once per message.

A durable store writes each envelope's JSON into its outbox row, and when its relay was
handed that row (the same :class:`~pipeline_state.ports.OutboxMessage` object) the Kafka
adapter encoded the same envelope again to publish it. The store now encodes with
:func:`envelope_text`, which keeps the texts of the last envelopes it encoded by identity,
each with its envelope (an id reused by a new object never matches), and the adapter takes
the kept text (:func:`known_text`) or encodes as before. The text is compact JSON with non-ASCII
characters kept: what the stores wrote and the records carried before, byte for byte.
Envelopes are built once by the service and never changed afterwards.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

__all__ = ["envelope_text", "known_text"]

_KEPT = 512
"""How many texts are kept: the envelopes of the units of work a relay has not published yet
(a few fetches' worth); an envelope asked for after that is encoded again."""
_KEPT_LENGTH = 8192
"""Longer texts are not kept (so the memo holds at most about 4 MB): such an envelope, one
naming thousands of items, is encoded again when asked again."""

_texts: dict[int, tuple[Mapping[str, Any], str]] = {}


def known_text(value: Mapping[str, Any]) -> str | None:
    """The text :func:`envelope_text` made of this very ``value`` and still keeps, or
    ``None`` (a reader that encodes by itself then: nothing is kept for it)."""
    found = _texts.get(id(value))
    return found[1] if found is not None and found[0] is value else None


def envelope_text(value: Mapping[str, Any]) -> str:
    """The compact JSON text of ``value``, kept for the next asking for this very object;
    raises ``TypeError`` (nothing kept) when a value in it is not JSON-compatible."""
    found = _texts.get(id(value))
    if found is not None and found[0] is value:
        return found[1]
    plain = value if type(value) is dict else dict(value)
    text = json.dumps(plain, separators=(",", ":"), ensure_ascii=False)
    if len(text) > _KEPT_LENGTH:
        return text
    _texts[id(value)] = (value, text)
    if len(_texts) > _KEPT:
        # The older half goes at once. list() copies the keys without letting another
        # thread run, and pop() does not mind a key another thread removed meanwhile.
        for key in list(_texts)[: _KEPT // 2]:
            _texts.pop(key, None)
    return text
