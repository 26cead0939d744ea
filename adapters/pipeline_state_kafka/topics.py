"""Creating the service's topics up front.

A consumer only learns about a topic created after it subscribed at its next metadata
refresh, and clusters often disable automatic topic creation, so ``serve`` creates the
inbound topics, their dead-letter topics and the outbound topics at start (an existing
topic is left as it is).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from pipeline_state.profiles.huleedu.events import INBOUND_TOPICS, OUTBOUND_TOPICS

from ._kafka import TOPIC_ALREADY_EXISTS, new_admin
from .dlq import dlq_topic

__all__ = ["ensure_topics", "service_topics"]

log = logging.getLogger("pipeline_state_kafka.topics")


def service_topics(
    prefix: str = "",
    *,
    inbound: Iterable[str] = INBOUND_TOPICS,
    outbound: Iterable[str] = OUTBOUND_TOPICS,
) -> list[str]:
    """Kafka topic names the service reads, dead-letters to and writes, prefixed."""
    inbound = [f"{prefix}{t}" for t in inbound]
    return [*inbound, *(dlq_topic(t) for t in inbound), *(f"{prefix}{t}" for t in outbound)]


async def ensure_topics(
    bootstrap_servers: str,
    topics: Iterable[str],
    *,
    partitions: int = 4,
    replication_factor: int = 1,
    request_timeout_ms: int = 10_000,
) -> dict[str, str]:
    """Create the missing ``topics``; returns ``{topic: "created" | "exists" | "error <code>"}``."""
    names = list(dict.fromkeys(topics))
    admin = new_admin(bootstrap_servers, request_timeout_ms=request_timeout_ms)
    await admin.start()
    try:
        codes = await admin.create_topics([(name, partitions, replication_factor) for name in names])
    finally:
        await admin.close()
    outcome: dict[str, str] = {}
    for name in names:
        code = codes.get(name, 0)
        outcome[name] = (
            "created" if code == 0 else "exists" if code == TOPIC_ALREADY_EXISTS else f"error {code}"
        )
    failed = {t: o for t, o in outcome.items() if o.startswith("error")}
    if failed:
        log.warning("could not create some topics: %s", failed)
    return outcome
