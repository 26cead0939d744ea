"""Reading a dead-letter topic, from its beginning to where it ends when the read starts.

:func:`read_dead_letters` is what ``pipeline-state dlq reinject`` reads: every record of
``<topic>.DLQ`` with its headers (see :mod:`pipeline_state_kafka.dlq`), partition by
partition in offset order. It joins no consumer group and commits nothing: what was
re-injected already is known by the store's inbox, not by an offset.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Any

import attrs

from ._kafka import assign_from_start, new_consumer, stop_consumer

__all__ = ["StoredLetter", "read_dead_letters"]


@attrs.frozen
class StoredLetter:
    """One record of a dead-letter topic; ``headers`` decoded as UTF-8 (last value wins)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, str]

    @property
    def reason(self) -> str | None:
        return self.headers.get("dlq_reason")


def _letter(record: Any) -> StoredLetter:
    headers = {k: (v or b"").decode("utf-8", "replace") for k, v in (record.headers or ())}
    return StoredLetter(record.topic, record.partition, record.offset, record.key, record.value, headers)


async def read_dead_letters(
    bootstrap_servers: str, topic: str, *, patience: float = 10.0
) -> AsyncGenerator[StoredLetter, None]:
    """The records of ``topic`` (a missing topic has none) up to its end offsets as read at
    the start. Raises aiokafka's connection error when the broker cannot be reached, and
    :class:`TimeoutError` when no record comes for ``patience`` seconds before the end."""
    request_ms = max(int(patience * 1000), 1000)
    consumer = new_consumer(
        bootstrap_servers,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        request_timeout_ms=request_ms,
        client_id="pipeline-state-dlq-reinject",
    )
    try:
        await consumer.start()
    except BaseException:
        await stop_consumer(consumer)  # a consumer that failed to start still holds its client
        raise
    try:
        untyped: Any = consumer
        parts = await assign_from_start(consumer, [topic])
        if not parts:
            return
        starts = await untyped.beginning_offsets(parts)
        ends = await untyped.end_offsets(parts)
        remaining = {tp: ends[tp] for tp in parts if ends[tp] > starts[tp]}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + patience
        while remaining:
            fetched = await consumer.getmany(*remaining, timeout_ms=200)
            for tp, records in fetched.items():
                end = remaining.get(tp)
                if end is None:
                    continue
                for record in records:
                    if record.offset < end:
                        yield _letter(record)
                if records and records[-1].offset + 1 >= end:
                    del remaining[tp]
            if fetched:
                deadline = loop.time() + patience
            elif loop.time() > deadline:
                raise TimeoutError(f"no record of {topic} could be fetched within {patience:g}s")
    finally:
        await stop_consumer(consumer)
