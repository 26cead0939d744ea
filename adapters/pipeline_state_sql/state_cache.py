"""The states a store wrote or read last, by what identifies their stored row version.

Decoding a batch's document (JSON, then the state's classes) was the largest CPU share of a
unit of work, and in ``serve`` the state a unit of work reads is almost always the one this
process committed a moment before. :class:`StateCache` keeps, per batch, what identifies the
stored row version and the :class:`~pipeline_state._model.BatchState` it decodes to. A read
that finds the very same row version takes the state from the cache instead of decoding it;
a read of any other decodes it (a corrupted row still raises
:class:`~pipeline_state.errors.CorruptStateError`) and keeps it. States are immutable, so the
one committed can be handed out again, as the in-memory store does.

What identifies a row version depends on the database:

* **SQLite**: the stored JSON text itself, compared whole (a SQLite row reads back with the
  text written, :func:`~pipeline_state_sql.codec.state_text`), so a row another process or
  an operator rewrote never matches.
* **PostgreSQL** (``stamped``): ``jsonb`` reads back in its own normal form, not the text
  written, so the row's ``xmin`` is compared instead: the id of the transaction that wrote
  that row version, which every write of the row changes, whoever makes it (another
  process, an operator, a migration). The unit of work returns its transaction's id
  (:data:`~pipeline_state_sql.one_statement.WRITTEN_BY`), and the reads return each row's
  ``xmin`` with its document as text, which is decoded only on a miss.
"""

from __future__ import annotations

from pipeline_state._model import BatchState

from .codec import decode_state
from .engine import loads

__all__ = ["STATE_CACHE_BYTES", "STATE_CACHE_SIZE", "StateCache"]

STATE_CACHE_SIZE = 2048
"""Batches a store's cache keeps (the least recently stored go first)."""

STATE_CACHE_BYTES = 32 * 1024 * 1024
"""Stored text the cached states may stand for in all (their decoded states take a few times
that): a cache of large batches (a thousand items with long ids is ~0.2 MB of text) keeps
fewer of them. A state whose text is over a sixteenth of it is never cached."""


class StateCache:
    """Per batch id: what identifies the stored row version (its text, or with ``stamped``
    its ``xmin``) and the state it decodes to."""

    def __init__(
        self, size: int = STATE_CACHE_SIZE, *, stamped: bool = False, max_bytes: int = STATE_CACHE_BYTES
    ) -> None:
        if size < 1 or max_bytes < 1:
            raise ValueError("size and max_bytes must be at least 1")
        self.size = size
        self.max_bytes = max_bytes
        self.stamped = stamped
        """Row versions are told apart by ``xmin`` (PostgreSQL), not by their text."""
        self._entries: dict[str, tuple[str, BatchState, int]] = {}
        self.bytes = 0
        """The stored text the kept states stand for (at most :attr:`max_bytes`)."""
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def decoded(self, batch_id: str, text: str, stamp: str | None = None) -> BatchState:
        """The state stored as ``text`` for ``batch_id`` (a row version ``stamp`` names, in a
        stamped cache): from the cache when it holds this row version, else decoded (and
        kept)."""
        key = text if stamp is None else stamp
        found = self._entries.get(batch_id)
        if found is not None and found[0] == key:
            self.hits += 1
            return found[1]
        self.misses += 1
        state = decode_state(batch_id, loads(text))
        self._keep(batch_id, key, state, len(text))
        return state

    def written(self, state: BatchState, key: str, text_length: int | None = None) -> None:
        """``state`` was committed as the row version ``key`` names (its text, or in a
        stamped cache the writing transaction's id, with ``text_length`` the length of the
        text written). A state carrying archived runs (``history``, only in states read to
        be shown) is not kept: a read never returns them."""
        if state.history:
            self._drop(state.batch_id)
            return
        self._keep(state.batch_id, key, state, len(key) if text_length is None else text_length)

    def forget(self) -> None:
        """Drop every entry."""
        self._entries.clear()
        self.bytes = 0

    def _drop(self, batch_id: str) -> None:
        found = self._entries.pop(batch_id, None)
        if found is not None:
            self.bytes -= found[2]

    def _keep(self, batch_id: str, key: str, state: BatchState, weight: int) -> None:
        self._drop(batch_id)  # re-inserted last: the newest entry
        if weight > self.max_bytes // 16:
            return  # too large to be worth its memory: read and decoded each time
        entries = self._entries
        entries[batch_id] = (key, state, weight)
        self.bytes += weight
        while len(entries) > self.size or self.bytes > self.max_bytes:
            self._drop(next(iter(entries)))
