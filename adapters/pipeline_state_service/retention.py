"""``serve``'s retention purge: every ``purge_seconds``, the store forgets the bookkeeping rows
past their retention (:class:`~pipeline_state.ports.Retention`, :func:`~pipeline_state.ports.purge_expired`).

A failed purge is logged and tried again next period: what a purge leaves is only disk, and
nothing that decides depends on it running.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from pipeline_state.ports import Clock, Purged, PurgingStore, Retention, purge_expired

from .periodic import every

__all__ = ["purge_store_periodically"]

log = logging.getLogger("pipeline_state_kafka.retention")


async def purge_store_periodically(
    store: PurgingStore,
    retention: Retention,
    clock: Clock,
    period: float,
    stop: asyncio.Event,
    *,
    on_purged: Callable[[Purged], None] | None = None,
) -> None:
    """Every ``period`` seconds until ``stop``, purge ``store`` by ``retention`` at ``clock``'s
    time (the first purge one period after the start)."""

    async def purge() -> None:
        purged = await purge_expired(store, retention, clock.now())
        if on_purged is not None:
            on_purged(purged)
        if purged.total:
            log.info(
                "retention purge deleted %s published outbox row(s), %s inbox entry(ies), %s log row(s)",
                purged.outbox,
                purged.inbox,
                purged.transitions,
                extra={"outbox": purged.outbox, "inbox": purged.inbox, "transitions": purged.transitions},
            )

    await every(period, stop, purge, what="retention purge", log=log)
