"""The AsyncAPI document against what the Kafka consumer really reads of a record."""

from __future__ import annotations

import json

from pipeline_state_kafka.tracing import TRACE_HEADERS, trace_headers

from pipeline_state._asyncapi import asyncapi_document
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes
from pipeline_state.testing import WireChecker

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_the_asyncapi_document_declares_the_trace_headers_the_consumer_reads() -> None:
    """Was a defect (found by an attack on the wire contract).

    The AsyncAPI document (pipeline_state/_asyncapi.py module doc and ``_message``: "inbound
    headers are not read, so inbound messages declare none"; docs/reference/asyncapi.md: "the
    engine reads no header of the records it consumes") gives every ``receive`` message no
    ``headers``, which :class:`~pipeline_state.testing.WireChecker` reads as "a message that
    declares none allows none". Yet the Kafka consumer reads the W3C ``traceparent`` and
    ``tracestate`` headers of every inbound record and continues that trace
    (adapters/pipeline_state_kafka/tracing.py ``trace_headers``/``attached``, used by
    consumer.py). A producer that reads the document cannot learn that it may propagate its
    trace, and a record that carries one is, by the document, invalid.

    Expected: inbound messages declare the optional trace headers (as outbound ones do with
    :data:`~pipeline_state._asyncapi_kafka.TRACE_HEADERS`), so a record with a
    ``traceparent`` conforms. Actual: the checker refuses it."""
    # What the consumer really does with the header: it is read and continued.
    assert trace_headers([("traceparent", TRACEPARENT.encode())]) == (("traceparent", TRACEPARENT),)
    assert "traceparent" in TRACE_HEADERS

    document = asyncapi_document()
    checker = WireChecker(document)
    topic, envelope = HuleEduEnvelopes().register("b1", items=2)
    value = json.loads(json.dumps(envelope, default=str))
    checker.check(topic, action="receive", key="b1", value=value)  # the value conforms
    message = checker.message(topic, "receive")
    declared = message.get("headers", {}).get("properties", {})
    assert {"traceparent", "tracestate"} <= set(declared), (
        f"the receive message of {topic} declares headers {sorted(declared)}, not the trace "
        "headers the consumer reads"
    )
    checker.check(topic, action="receive", key="b1", value=value, headers={"traceparent": TRACEPARENT})
    # Any other header of an inbound record is allowed, and not read.
    checker.check(topic, action="receive", key="b1", value=value, headers={"x-producer": "upstream"})
