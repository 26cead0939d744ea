"""What the Kafka adapter puts around a message, as AsyncAPI fragments.

The engine does not import the Kafka adapter, so the wire facts that the adapter owns are
written here as data for :mod:`pipeline_state._asyncapi`: the record key (a Kafka message
binding), the headers of every published command and event (:data:`ENVELOPE_HEADERS`), and
the dead letters parked on ``<topic>.DLQ`` with the :data:`DEAD_LETTER_HEADERS`. The Kafka
tests check them against what the adapter really writes to a broker, so they cannot drift
apart unnoticed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ._announced import KeyKind
from ._wire import DEAD_LETTER_SUFFIX, EventEnvelope

__all__ = [
    "DEAD_LETTER",
    "DEAD_LETTER_HEADERS",
    "DEAD_LETTER_SUFFIX",
    "ENVELOPE_HEADERS",
    "KAFKA_BINDING_VERSION",
    "TRACE_HEADERS",
    "dead_letter_message",
    "envelope_headers",
    "inbound_headers",
    "key_binding",
]

KAFKA_BINDING_VERSION = "0.5.0"
"""The version of the AsyncAPI Kafka bindings used for keys."""

ENVELOPE_HEADERS: tuple[str, ...] = ("event_id", "event_type", "correlation_id")
"""The headers of every command and event the service publishes: each repeats the envelope field of the
same name as UTF-8 text, so a consumer can route or deduplicate without parsing the value."""

TRACE_HEADERS: Mapping[str, str] = {
    "traceparent": (
        "W3C trace context of the span that published the record (set when OpenTelemetry "
        "tracing is on), so a consumer continues the trace of the decision that emitted it."
    ),
    "tracestate": "W3C vendor trace state, when the trace carries one.",
}
"""Optional headers: the W3C trace context the adapter adds when tracing is on."""

_COUNT = {"type": "string", "pattern": "^[0-9]+$"}
DEAD_LETTER_HEADERS: Mapping[str, tuple[bool, Mapping[str, Any], str]] = {
    "dlq_reason": (True, {"type": "string"}, "Why it was parked: the error's class and message."),
    "dlq_error_type": (True, {"type": "string"}, "The error's class name."),
    "dlq_original_topic": (True, {"type": "string"}, "The topic it was consumed from (prefix included)."),
    "dlq_original_partition": (False, _COUNT, "Its partition (not for a fact that waited)."),
    "dlq_original_offset": (False, _COUNT, "Its offset (not for a fact that waited)."),
    "dlq_waited_for": (
        False,
        {"type": "string"},
        "A fact that waited too long: what it waited for (`batch_registration`, "
        "`batch_state:<status>`, `phase_dispatch:<phase>`); one that waited, then could never "
        "apply: `never_applies:<error class>: <message>`.",
    ),
    "dlq_event_id": (False, {"type": "string"}, "A fact that waited: its event id."),
    "dlq_error_field": (
        False,
        {"type": "string"},
        "The offending field (a dotted path), when the error names one.",
    ),
    "dlq_consumer_group": (False, {"type": "string"}, "The consumer group that parked it."),
    "dlq_truncated": (False, {"const": "1"}, "Set when the copy is cut short to fit the size limit."),
    "dlq_original_size": (False, _COUNT, "A truncated copy: the original value's size in bytes."),
    "dlq_original_sha256": (
        False,
        {"type": "string", "pattern": "^[0-9a-f]{64}$"},
        "A truncated copy: the hex SHA-256 of the original value.",
    ),
    "dlq_original_key_size": (False, _COUNT, "A truncated copy: the original key's size in bytes."),
    "dlq_original_headers_dropped": (
        False,
        _COUNT,
        "A truncated copy: how many of the original headers were left out.",
    ),
}
"""The headers the Kafka adapter adds to a dead letter: name -> (always set, schema, meaning).
The original record's own headers are kept beside them (except in a truncated copy)."""

DEAD_LETTER = "DeadLetter"
"""The name of the message of every dead-letter channel."""

_KEY_WORDS: Mapping[KeyKind, str] = {
    "batch": "the batch id",
    "owner": "the id of the batch's owner",
    "other": "a value chosen by the profile",
    "none": "no key",
}


def _envelope_field(name: str) -> dict[str, Any]:
    schema: dict[str, Any] = EventEnvelope.model_json_schema()["properties"][name]
    return dict(schema)


def envelope_headers(topic: str) -> dict[str, Any]:
    """The headers of a command or event published on ``topic`` (:data:`ENVELOPE_HEADERS`,
    and the optional :data:`TRACE_HEADERS`)."""
    properties = {
        name: {**_envelope_field(name), "description": f"The envelope's `{name}`, as UTF-8 text."}
        for name in ENVELOPE_HEADERS
    }
    properties["event_type"]["const"] = topic
    for name, meaning in TRACE_HEADERS.items():
        properties[name] = {"type": "string", "description": meaning}
    return {
        "type": "object",
        "properties": properties,
        "required": list(ENVELOPE_HEADERS),
        "additionalProperties": False,
    }


def inbound_headers() -> dict[str, Any]:
    """The headers of a record the service consumes: the optional :data:`TRACE_HEADERS`,
    whose trace the consumer continues; any other header is allowed and not read (the
    decision reads the value only)."""
    return {
        "type": "object",
        "properties": {
            name: {"type": "string", "description": meaning} for name, meaning in TRACE_HEADERS.items()
        },
        "additionalProperties": True,
    }


def dead_letter_message() -> dict[str, Any]:
    """The message of every dead-letter channel: the parked record, with the headers that say why."""
    properties = {
        name: {**schema, "description": meaning} for name, (_, schema, meaning) in DEAD_LETTER_HEADERS.items()
    }
    return {
        "name": DEAD_LETTER,
        "title": "A record the consumer could not handle",
        "summary": "The consumed record, parked with headers that say why.",
        "contentType": "application/octet-stream",
        "payload": {
            "description": (
                "The original value, byte for byte: normally the EventEnvelope of the original "
                "channel, but perhaps not JSON at all (which may be why it is here), or only its "
                "first bytes when `dlq_truncated` is set."
            )
        },
        "headers": {
            "type": "object",
            "properties": properties,
            "required": [name for name, (always, _, _) in DEAD_LETTER_HEADERS.items() if always],
            "additionalProperties": {"type": "string", "description": "A header of the original record."},
        },
        "bindings": {
            "kafka": {
                "key": {"type": ["string", "null"], "description": "The original record's key, unchanged."},
                "bindingVersion": KAFKA_BINDING_VERSION,
            }
        },
    }


def key_binding(key: KeyKind, field: str | None) -> dict[str, Any]:
    """The Kafka binding of a message keyed by ``key``, found in the payload's ``data.<field>``."""
    words = _KEY_WORDS[key]
    if field is not None:
        words += f" (the payload's `data.{field}`)"
    binding: dict[str, Any] = {
        "key": {"type": "string", "description": f"The record key: {words}, as UTF-8."},
        "bindingVersion": KAFKA_BINDING_VERSION,
    }
    if key == "none":
        binding["key"] = {"type": "null", "description": "The record has no key."}
    elif field is not None:
        binding["x-key-location"] = f"$message.payload#/data/{field}"
    return binding
