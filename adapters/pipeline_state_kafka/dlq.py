"""Dead-letter queue: where a message that can never be handled is parked.

The raw record goes unchanged (same key and value bytes, original headers kept) to
``<topic>.DLQ`` with these headers added:

============================  ===========================================================
``dlq_reason``                error class and message, e.g. ``InvalidMessageError: ...``
``dlq_error_type``            the error class name alone
``dlq_original_topic``        the topic the record was consumed from
``dlq_original_partition``    its partition (decimal text)
``dlq_original_offset``       its offset (decimal text)
``dlq_error_field``           the offending field (dotted path), when the error names one
``dlq_consumer_group``        the consumer group that gave up on it
============================  ===========================================================
"""

from __future__ import annotations

import attrs

from ._kafka import Headers, ProducerLike, RecordLike

__all__ = [
    "DLQ_SUFFIX",
    "DeadLetter",
    "DeadLetterWriter",
    "dead_letter",
    "dlq_topic",
    "reason_of",
]

DLQ_SUFFIX = ".DLQ"


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


def reason_of(error: BaseException) -> str:
    """``"<ErrorClass>: <message>"``."""
    return f"{type(error).__name__}: {error}"


def dead_letter(record: RecordLike, error: BaseException, *, group_id: str | None = None) -> DeadLetter:
    """The dead letter of ``record`` that failed with ``error``."""
    added: list[tuple[str, bytes]] = [
        ("dlq_reason", reason_of(error).encode()),
        ("dlq_error_type", type(error).__name__.encode()),
        ("dlq_original_topic", record.topic.encode()),
        ("dlq_original_partition", str(record.partition).encode()),
        ("dlq_original_offset", str(record.offset).encode()),
    ]
    field = getattr(error, "field", None)
    if isinstance(field, str) and field:
        added.append(("dlq_error_field", field.encode()))
    if group_id:
        added.append(("dlq_consumer_group", group_id.encode()))
    original: Headers = record.headers or ()
    return DeadLetter(
        topic=dlq_topic(record.topic),
        key=record.key,
        value=record.value,
        headers=(*((k, v) for k, v in original if not k.startswith("dlq_")), *added),
    )


class DeadLetterWriter:
    """Sends dead letters through ``producer`` and waits for the broker's acknowledgement.

    A failed send raises (aiokafka's error); the consumer treats that as transient, so the
    offset is not committed and the record is tried again.
    """

    def __init__(self, producer: ProducerLike, *, group_id: str | None = None) -> None:
        self.producer = producer
        self.group_id = group_id

    async def send(self, record: RecordLike, error: BaseException) -> DeadLetter:
        letter = dead_letter(record, error, group_id=self.group_id)
        await self.producer.send_and_wait(
            letter.topic, letter.value, letter.key, headers=list(letter.headers)
        )
        return letter
