"""Dead-letter queue: where a message that can never be handled is parked.

The raw record goes unchanged (same key and value bytes, original headers kept) to
``<topic>.DLQ`` with these headers added:

================================  ===========================================================
``dlq_reason``                    error class and message, e.g. ``InvalidMessageError: ...``
``dlq_error_type``                the error class name alone
``dlq_original_topic``            the topic the record was consumed from
``dlq_original_partition``        its partition (decimal text; not for a fact that waited)
``dlq_original_offset``           its offset (decimal text; not for a fact that waited)
``dlq_waited_for``                a fact that waited too long: what it waited for
                                  (``batch_registration``, ``batch_state:<status>``,
                                  ``phase_dispatch:<phase>``)
``dlq_event_id``                  a fact that waited too long: its event id
``dlq_error_field``               the offending field (dotted path), when the error names one
``dlq_consumer_group``            the consumer group that gave up on it
``dlq_truncated``                 ``1`` when the copy is truncated (see below)
``dlq_original_size``             truncated copies: the original value's size in bytes
``dlq_original_sha256``           truncated copies: the hex SHA-256 of the original value
``dlq_original_key_size``         truncated copies: the original key's size in bytes
``dlq_original_headers_dropped``  truncated copies: how many original headers were left out
================================  ===========================================================

A dead letter always fits: when the record with its headers would exceed
``max_message_bytes`` (the dead-letter producer's ``max_request_size``), the copy keeps the
first bytes of the value (and of a very long key), drops the original headers and says so
in the headers above, so the original can be recognised by its digest. Added header values
are bounded (``dlq_reason`` to 1,000 bytes) and text is encoded so that no error message,
however odd (lone surrogates), stops a letter from being written.
"""

from __future__ import annotations

import hashlib

import attrs

from pipeline_state._wire import DEAD_LETTER_SUFFIX

from ._kafka import Headers, ProducerLike, RecordLike
from .errors import WaitedTooLongError

__all__ = [
    "DEFAULT_DLQ_MAX_MESSAGE_BYTES",
    "DLQ_SUFFIX",
    "DeadLetter",
    "DeadLetterWriter",
    "ParkedFact",
    "WaitedTooLongError",
    "dead_letter",
    "dlq_topic",
    "effective_limit",
    "reason_of",
]

DLQ_SUFFIX = DEAD_LETTER_SUFFIX
"""A consumed topic's dead-letter topic is the topic with this suffix (the core's rule: a
profile may not send commands or events there)."""

DEFAULT_DLQ_MAX_MESSAGE_BYTES = 1024 * 1024
"""Default size limit of a dead letter (key, value and headers), in bytes: Apache Kafka's
default ``message.max.bytes`` is 1,048,588."""

MINIMAL_BYTES = 16 * 1024
"""Size of the minimal dead letter sent when the broker refused the full one."""

RECORD_OVERHEAD = 512
"""Bytes kept free for the record batch and record framing around key, value and headers."""

REASON_BYTES = 1000
HEADER_BYTES = 256


@attrs.frozen
class ParkedFact:
    """A message that is not a consumed record (a waiting fact from the store), shaped like
    one for :func:`dead_letter`; ``partition`` and ``offset`` are ``-1`` (unknown)."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()
    partition: int = -1
    offset: int = -1


def effective_limit(configured: int, broker_limits: dict[str, int]) -> int:
    """The dead-letter size limit to use: ``configured``, or the smallest limit the broker
    reports (``message.max.bytes``, a DLQ topic's ``max.message.bytes``) when that is
    smaller. Non-positive reported values are ignored."""
    reported = [v for v in broker_limits.values() if v > 0]
    return min([configured, *reported])


def dlq_topic(topic: str) -> str:
    """The dead-letter topic of ``topic``."""
    return f"{topic}{DLQ_SUFFIX}"


@attrs.frozen
class DeadLetter:
    """A record to park and why."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]

    @property
    def size(self) -> int:
        """Key, value and header bytes (without the record framing)."""
        return _size(self.key, self.value, self.headers)


def reason_of(error: BaseException) -> str:
    """``"<ErrorClass>: <message>"``."""
    return f"{type(error).__name__}: {error}"


def _encode(text: str, limit: int) -> bytes:
    data = text.encode("utf-8", "backslashreplace")
    if len(data) <= limit:
        return data
    return data[: limit - 3].decode("utf-8", "ignore").encode() + b"..."


def _reason(error: BaseException) -> str:
    try:
        return reason_of(error)
    except Exception:
        return f"{type(error).__name__}: <unprintable>"


def _size(key: bytes | None, value: bytes | None, headers: Headers) -> int:
    return (
        len(key or b"")
        + len(value or b"")
        + sum(len(k.encode("utf-8", "surrogatepass")) + len(v or b"") + 8 for k, v in headers)
    )


def dead_letter(
    record: RecordLike,
    error: BaseException,
    *,
    group_id: str | None = None,
    max_message_bytes: int = DEFAULT_DLQ_MAX_MESSAGE_BYTES,
    minimal: bool = False,
) -> DeadLetter:
    """The dead letter of ``record`` that failed with ``error``, within ``max_message_bytes``
    (truncated when it would not fit, or when ``minimal``; see the module docstring)."""
    added: list[tuple[str, bytes]] = [
        ("dlq_reason", _encode(_reason(error), REASON_BYTES)),
        ("dlq_error_type", _encode(type(error).__name__, HEADER_BYTES)),
        ("dlq_original_topic", _encode(record.topic, HEADER_BYTES)),
    ]
    if record.partition >= 0:  # a record consumed from Kafka (not a fact that waited)
        added.append(("dlq_original_partition", str(record.partition).encode()))
        added.append(("dlq_original_offset", str(record.offset).encode()))
    waited = getattr(error, "waits_for", None)
    if isinstance(waited, str) and waited:
        added.append(("dlq_waited_for", _encode(waited, HEADER_BYTES)))
    event_id = getattr(error, "event_id", None)
    if isinstance(event_id, str) and event_id:
        added.append(("dlq_event_id", _encode(event_id, HEADER_BYTES)))
    field = getattr(error, "field", None)
    if isinstance(field, str) and field:
        added.append(("dlq_error_field", _encode(field, HEADER_BYTES)))
    if group_id:
        added.append(("dlq_consumer_group", _encode(group_id, HEADER_BYTES)))
    original: Headers = record.headers or ()
    kept = tuple((k, v) for k, v in original if not k.startswith("dlq_"))
    key, value = record.key, record.value
    topic = dlq_topic(record.topic)
    limit = min(max_message_bytes, MINIMAL_BYTES) if minimal else max_message_bytes
    budget = max(limit - RECORD_OVERHEAD, 1024)
    if not minimal and _size(key, value, (*kept, *added)) <= budget:
        return DeadLetter(topic=topic, key=key, value=value, headers=(*kept, *added))
    full = value or b""
    added += [
        ("dlq_truncated", b"1"),
        ("dlq_original_size", str(len(full)).encode()),
        ("dlq_original_sha256", hashlib.sha256(full).hexdigest().encode()),
        ("dlq_original_key_size", str(len(key or b"")).encode()),
        ("dlq_original_headers_dropped", str(len(kept)).encode()),
    ]
    room = budget - _size(None, None, added)
    if key is not None and len(key) > room // 4:
        key = key[: room // 4]
    room -= len(key or b"")
    return DeadLetter(
        topic=topic,
        key=key,
        value=None if value is None else value[: max(room, 0)],
        headers=tuple(added),
    )


class DeadLetterWriter:
    """Sends dead letters through ``producer`` and waits for the broker's acknowledgement.

    ``max_message_bytes`` is the size a letter is truncated to; keep it at or below the
    producer's ``max_request_size`` and the broker's limit (``serve`` checks the broker's at
    start-up). A failed send raises (aiokafka's error); the consumer retries it when the
    broker may take it later, and sends the ``minimal`` letter when it refused this one.
    """

    def __init__(
        self,
        producer: ProducerLike,
        *,
        group_id: str | None = None,
        max_message_bytes: int = DEFAULT_DLQ_MAX_MESSAGE_BYTES,
    ) -> None:
        self.producer = producer
        self.group_id = group_id
        self.max_message_bytes = max_message_bytes

    async def send(self, record: RecordLike, error: BaseException, *, minimal: bool = False) -> DeadLetter:
        letter = dead_letter(
            record, error, group_id=self.group_id, max_message_bytes=self.max_message_bytes, minimal=minimal
        )
        await self.producer.send_and_wait(
            letter.topic, letter.value, letter.key, headers=list(letter.headers)
        )
        return letter
