"""Starting aiokafka clients while the broker may still be coming up."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from pipeline_state._retry import Backoff, Retrying

from ._kafka import KafkaError

__all__ = ["start_with_retry"]

log = logging.getLogger("pipeline_state_kafka.startup")


async def start_with_retry(
    start: Callable[[], Awaitable[None]],
    what: str,
    within: float,
    stop: asyncio.Event | None = None,
    *,
    interval: float = 0.5,
) -> bool:
    """Call ``start`` until it succeeds (every ``interval`` seconds, see
    :mod:`pipeline_state._retry`); ``False`` when ``stop`` was set first.

    Raises the last connection error once ``within`` seconds have passed.
    """

    def retrying(exc: BaseException, _number: int) -> None:
        log.warning("%s not reachable yet, retrying: %s: %s", what, type(exc).__name__, exc)

    attempts = Retrying(
        on=(KafkaError, OSError), within=within, backoff=Backoff.fixed(interval), stop=stop, on_retry=retrying
    )
    async for attempt in attempts:
        with attempt:
            await start()
            return True
    return False
