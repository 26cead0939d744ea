"""An in-memory outbox that follows the :class:`~pipeline_state.ports.Outbox` rules.

Rows keep their messages and go out in order per key: only the oldest pending row of a key
can be claimed. A claim leases the rows for ``lease_seconds``, during which no other claim
returns them; a failed row waits until its ``retry_at`` and holds its key back meanwhile; a
parked row leaves delivery and frees its key; published rows are dropped.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

import attrs

from pipeline_state.ports import OutboxMessage, OutboxRow

__all__ = ["MemoryOutbox"]


class MemoryOutbox:
    """Outbox rows in a dictionary (the caller serialises access, as the event loop does)."""

    def __init__(self, *, lease_seconds: float = 60.0) -> None:
        self.lease = timedelta(seconds=lease_seconds)
        self._rows: dict[int, OutboxRow] = {}
        self._not_before: dict[int, datetime] = {}
        self._next = 1

    def append(self, messages: Iterable[OutboxMessage], at: datetime) -> None:
        for message in messages:
            self._rows[self._next] = OutboxRow(self._next, message, at)
            self._next += 1

    def claim(self, now: datetime, limit: int) -> list[OutboxRow]:
        seen: set[str | None] = set()
        claimed: list[OutboxRow] = []
        for row_id, row in self._rows.items():
            if row.parked:
                continue
            key = row.message.key
            if key in seen:
                continue  # an older pending row of this key goes first
            seen.add(key)
            not_before = self._not_before.get(row_id)
            if not_before is not None and not_before > now:
                continue  # leased to a relay, or backing off
            claimed.append(attrs.evolve(row, leased_until=now + self.lease))
            self._not_before[row_id] = now + self.lease
            if len(claimed) >= limit:
                break
        return claimed

    def mark_published(self, row_ids: Sequence[int]) -> None:
        for row_id in row_ids:
            self._rows.pop(row_id, None)
            self._not_before.pop(row_id, None)

    def mark_failed(self, row_id: int, error: str, *, retry_at: datetime, park: bool) -> None:
        row = self._rows.get(row_id)
        if row is None:
            return
        self._rows[row_id] = attrs.evolve(row, attempts=row.attempts + 1, last_error=error, parked=park)
        self._not_before[row_id] = retry_at

    def pending_count(self) -> int:
        return sum(1 for r in self._rows.values() if not r.parked)

    def parked(self, limit: int) -> list[OutboxRow]:
        return [r for r in self._rows.values() if r.parked][:limit]

    def rows(self) -> list[OutboxRow]:
        """Every row not yet published, oldest first."""
        return list(self._rows.values())
