"""The states a SQLite store wrote or read last, by the exact text of their stored document.

Decoding a batch's document (JSON, then the state's classes) was the largest CPU share of a
unit of work on SQLite, and in ``serve`` the state a unit of work reads is almost always the
one this process committed a moment before. :class:`StateCache` keeps, per batch, the stored
JSON text and the :class:`~pipeline_state._model.BatchState` it decodes to. A read that finds
the very same text (compared whole, so a row another process or an operator rewrote never
matches) takes the state from the cache instead of decoding it; a read of any other text
decodes it (a corrupted row still raises
:class:`~pipeline_state.errors.CorruptStateError`) and keeps it. States are immutable, so the
one committed can be handed out again, as the in-memory store does.

Only SQLite stores use it: a SQLite row reads back with the text written
(:func:`~pipeline_state_sql.codec.state_text`); PostgreSQL returns ``jsonb`` in its own
normal form, so a cache of what was written would never match there.
"""

from __future__ import annotations

from pipeline_state._model import BatchState

from .codec import decode_state
from .engine import loads

__all__ = ["STATE_CACHE_SIZE", "StateCache"]

STATE_CACHE_SIZE = 2048
"""Batches a store's cache keeps (the least recently stored go first)."""


class StateCache:
    """Per batch id: the stored document's text and the state it decodes to."""

    def __init__(self, size: int = STATE_CACHE_SIZE) -> None:
        if size < 1:
            raise ValueError("size must be at least 1")
        self.size = size
        self._entries: dict[str, tuple[str, BatchState]] = {}
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def decoded(self, batch_id: str, text: str) -> BatchState:
        """The state stored as ``text`` for ``batch_id``: from the cache when it holds this
        exact text, else decoded (and kept)."""
        found = self._entries.get(batch_id)
        if found is not None and found[0] == text:
            self.hits += 1
            return found[1]
        self.misses += 1
        state = decode_state(batch_id, loads(text))
        self._keep(batch_id, text, state)
        return state

    def written(self, state: BatchState, text: str) -> None:
        """``state`` was committed with the document ``text``. A state carrying archived runs
        (``history``, only in states read to be shown) is not kept: a read never returns them."""
        if state.history:
            self._entries.pop(state.batch_id, None)
            return
        self._keep(state.batch_id, text, state)

    def forget(self) -> None:
        """Drop every entry."""
        self._entries.clear()

    def _keep(self, batch_id: str, text: str, state: BatchState) -> None:
        entries = self._entries
        entries.pop(batch_id, None)  # re-inserted last: the newest entry
        entries[batch_id] = (text, state)
        if len(entries) > self.size:
            del entries[next(iter(entries))]
