"""How long a store keeps what it no longer needs to decide: the retention of its bookkeeping.

A store keeps three kinds of rows beside the batch states, and each grows with every event:

* **published outbox rows**: once the relay published a message its row is only there for
  inspection and for a phase re-send (which puts a command's row back in the queue, so the
  rows of a batch with a phase deadline pending are never purged);
* **inbox entries**: the event ids already processed. They make a redelivery a no-op.
  Purged, an event delivered again is decided again: most are then ignored by the state (an
  outcome of an archived run, a second registration), but a client's pipeline request would
  start a new run. So the inbox must remember an event for longer than anything can deliver
  it again: the topics' retention, a consumer group reset to the earliest offset, a
  re-injection from a dead-letter topic, a client retrying an HTTP request. Entries of facts
  still waiting are never purged;
* **transition log rows**: the audit trail (who moved what, when) and the answer to a
  replayed HTTP request, which reads the run id its first delivery logged. Kept for ever by
  default; when limited, for at least as long as the inbox (a replay the inbox still
  recognises must find its log row).

The archived runs (batch history) and the batch states are domain data, never purged here.
:class:`Retention` is the policy, :func:`purge_expired` applies it to a store that
implements :class:`~pipeline_state.ports.PurgingStore`, in bounded rounds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import attrs

from ._catalog import MAX_DEADLINE_SECONDS
from ._limits import check_limit

if TYPE_CHECKING:
    from .ports import PurgingStore

__all__ = ["DEFAULT_RETENTION", "PURGE_BATCH_ROWS", "PurgeCutoffs", "Purged", "Retention", "purge_expired"]

PURGE_BATCH_ROWS = 5_000
"""Rows of each kind deleted per round (one transaction): a purge never holds the store for long."""

_DAY = 86_400.0


def _seconds(name: str) -> Callable[[Any, Any, Any], None]:
    def check(_: object, __: object, value: object) -> None:
        if value is None:
            return
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"retention {name} must be a number of seconds or None, got {value!r}")
        if not 0 < value <= MAX_DEADLINE_SECONDS:  # false for NaN and the infinities; no overflow
            raise ValueError(
                f"retention {name} must be more than 0 and at most {MAX_DEADLINE_SECONDS} seconds"
                f" (ten years), or None to keep for ever; got {value!r}"
            )

    return check


@attrs.frozen
class PurgeCutoffs:
    """The instants before which a store may forget its bookkeeping rows, per kind (``None``:
    keep that kind). See :class:`Retention`."""

    published_before: datetime | None = None
    """Outbox rows published before this instant (not those of a batch with a phase deadline
    pending: a re-send queues its command's row again)."""
    processed_before: datetime | None = None
    """Inbox entries processed before this instant (not those of facts still waiting)."""
    logged_before: datetime | None = None
    """Transition log rows of moves before this instant."""


@attrs.frozen
class Purged:
    """How many rows of each kind a purge deleted."""

    outbox: int = 0
    inbox: int = 0
    transitions: int = 0

    @property
    def total(self) -> int:
        return self.outbox + self.inbox + self.transitions

    def __add__(self, other: Purged) -> Purged:
        return Purged(
            self.outbox + other.outbox, self.inbox + other.inbox, self.transitions + other.transitions
        )


def _before(now: datetime, seconds: float | None) -> datetime | None:
    return None if seconds is None else now - timedelta(seconds=seconds)


@attrs.frozen
class Retention:
    """How long each kind of bookkeeping row is kept, in seconds; ``None`` keeps it for ever.

    Raises:
        ValueError: a period is not positive, longer than ten years, or the transition log
            would be kept for less time than the inbox.
        TypeError: a period is not a number.
    """

    published: float | None = attrs.field(default=7 * _DAY, validator=_seconds("published"))
    """Published outbox rows, counted from their publication (default seven days)."""
    inbox: float | None = attrs.field(default=30 * _DAY, validator=_seconds("inbox"))
    """Inbox entries, counted from their processing (default thirty days): set it above the
    longest time an event can be delivered again (topic retention, dead-letter re-injection)."""
    transitions: float | None = attrs.field(default=None, validator=_seconds("transitions"))
    """Transition log rows, counted from their move (default: kept for ever)."""

    def __attrs_post_init__(self) -> None:
        if self.transitions is not None and (self.inbox is None or self.transitions < self.inbox):
            raise ValueError(
                "retention transitions must be at least the inbox's: a replay the inbox still"
                f" recognises reads its transition log row (transitions {self.transitions!r},"
                f" inbox {self.inbox!r})"
            )

    @property
    def keeps_everything(self) -> bool:
        return self.published is None and self.inbox is None and self.transitions is None

    def cutoffs(self, now: datetime) -> PurgeCutoffs:
        """The instants before which each kind of row has expired at ``now``."""
        return PurgeCutoffs(
            published_before=_before(now, self.published),
            processed_before=_before(now, self.inbox),
            logged_before=_before(now, self.transitions),
        )


DEFAULT_RETENTION = Retention()
"""Published outbox rows seven days, inbox entries thirty days, the transition log for ever."""


async def purge_expired(
    store: PurgingStore,
    retention: Retention,
    now: datetime,
    *,
    rows_per_round: int = PURGE_BATCH_ROWS,
    max_rounds: int = 100,
) -> Purged:
    """Delete what ``retention`` lets go at ``now``, ``rows_per_round`` rows of each kind per
    round (one transaction each), until a round finds less than that or ``max_rounds`` ran
    (the rest waits for the next call); returns what went in all.

    Raises:
        ValueError: ``rows_per_round`` or ``max_rounds`` not a whole number of at least 1,
            or ``now`` naive (no time zone).
        StoreUnavailableError: the store is down (what earlier rounds deleted stays deleted).
    """
    check_limit(rows_per_round, "rows_per_round")
    check_limit(max_rounds, "max_rounds")
    if now.tzinfo is None:
        raise ValueError("purge_expired needs an aware now (a datetime with its time zone), got a naive one")
    total = Purged()
    if retention.keeps_everything:
        return total
    cutoffs = retention.cutoffs(now)
    for _ in range(max_rounds):
        purged = await store.purge(cutoffs, limit=rows_per_round)
        total += purged
        if max(purged.outbox, purged.inbox, purged.transitions) < rows_per_round:
            break
        await asyncio.sleep(0)  # a round is one transaction: let the service work between them
    return total
