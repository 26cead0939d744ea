"""How outbox messages become Kafka records, and how consumers read them back.

A record's value is the JSON envelope exactly as the service wrote it (``event_id`` kept),
its key is the contract key (``batch_id``, or ``teacher_id`` for notifications) as UTF-8, and
three headers repeat the envelope's ``event_id``, ``event_type`` and ``correlation_id`` so a
consumer can route or deduplicate without parsing the value. The message's W3C trace context
(``traceparent``, maybe ``tracestate``) follows, so the consumer continues its trace.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import attrs

from pipeline_state._envelope_text import known_text
from pipeline_state.ports import OutboxMessage

from ._kafka import Headers

__all__ = [
    "HEADER_CORRELATION_ID",
    "HEADER_EVENT_ID",
    "HEADER_EVENT_TYPE",
    "KafkaRecord",
    "decode_value",
    "encode_message",
    "header",
]

HEADER_EVENT_ID = "event_id"
HEADER_EVENT_TYPE = "event_type"
HEADER_CORRELATION_ID = "correlation_id"


@attrs.frozen
class KafkaRecord:
    """A record ready to send: topic, key and value bytes, headers."""

    topic: str
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...]


def encode_message(message: OutboxMessage, *, topic_prefix: str = "") -> KafkaRecord:
    """The Kafka record of an outbox message; ``topic_prefix`` is put before its topic."""
    value = dict(message.value)
    headers = [(HEADER_EVENT_ID, message.event_id.encode())]
    for name in (HEADER_EVENT_TYPE, HEADER_CORRELATION_ID):
        field = value.get(name)
        if field is not None:
            headers.append((name, str(field).encode()))
    headers.extend((name, text.encode()) for name, text in message.trace_context)
    # The text a durable store wrote for this very message, when it still has it
    # (encoded once); else encoded here, a value JSON cannot hold written as its str.
    encoded = known_text(message.value)
    if encoded is None:
        encoded = json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)
    return KafkaRecord(
        topic=f"{topic_prefix}{message.topic}",
        key=None if message.key is None else message.key.encode(),
        value=encoded.encode(),
        headers=tuple(headers),
    )


def decode_value(value: bytes | None) -> dict[str, Any]:
    """The envelope dict of a record value; raises ``ValueError`` when it is not a JSON object
    (or nested too deeply to decode: the error is never a ``RecursionError``)."""
    if value is None:
        raise ValueError("the record has no value")
    try:
        decoded = json.loads(value)
    except RecursionError as exc:
        raise ValueError("the record value is nested too deeply") from exc
    if not isinstance(decoded, Mapping):
        raise ValueError("the record value is not a JSON object")
    return dict(decoded)


def header(headers: Headers | None, name: str) -> str | None:
    """The last value of header ``name`` as text, or ``None``."""
    found: str | None = None
    for key, raw in headers or ():
        if key == name:
            found = raw.decode("utf-8", errors="replace") if raw is not None else None
    return found
