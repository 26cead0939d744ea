"""hostile ids reaching the service's structured log lines.

A record refused by the consumer (schema violation) is logged with the ``event_id``,
``correlation_id`` and ``batch_id`` read back from its raw envelope
(``pipeline_state_kafka.consumer._context``). Those values never went through the wire's
id rule (they are what was refused), so they can hold exactly what the rule calls
"unshowable" (``pipeline_state._wire._UNSHOWABLE``: C0/C1 controls, DEL, line and paragraph
separators, bidi overrides). The log formatters must not write them raw.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re

from intake_kit import LogConsumer, drain, new_consumer
from pipeline_state_service import JsonFormatter, KeyValueFormatter

from pipeline_state._wire import _UNSHOWABLE
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes

ENV = HuleEduEnvelopes()
EVIL = "X\x1b[2J\x1b[31mRED\rFORGED level=ERROR msg=pwned\x9b31m\u2028Y\u202eZ\x07"
RAW = re.compile(f"[{_UNSHOWABLE}]")


def _run_refused_records(formatter: logging.Formatter) -> str:
    """Feed three refused records carrying EVIL in their ids; the formatted log text."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    logger = logging.getLogger("pipeline_state_kafka")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        stop = asyncio.Event()
        source = LogConsumer(stop)
        topic, envelope = ENV.register("b1", items=1)
        for field in ("event_id", "correlation_id", "batch_id"):
            bad = json.loads(json.dumps(envelope))
            if field == "batch_id":
                bad["data"]["batch_id"] = EVIL
                bad["data"]["expected_essay_count"] = "not a number"  # refused for another reason
            else:
                bad[field] = EVIL
            source.append(topic, json.dumps(bad).encode(), key=b"b1")
        consumer, _, producer = new_consumer(source, batched=True)
        asyncio.run(drain(consumer, source))
        assert len(producer.sent) == 3  # each was dead-lettered
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    return stream.getvalue()


def test_kv_log_line_escapes_terminal_controls_from_a_refused_record() -> None:
    """Was a defect (fixed): Observed: the ``key=value`` line (the format ``serve`` picks for a
    terminal) holds the envelope's ESC sequences, a carriage return and a C1 CSI as they came,
    so a hostile producer can clear the operator's screen, recolour or overwrite log lines.
    Expected: each line carries no unshowable character (escaped, e.g. ``\\x1b``)."""
    text = _run_refused_records(KeyValueFormatter())
    lines = [line for line in text.split("\n") if "dead-lettered" in line]
    assert len(lines) == 3, text
    for line in lines:
        assert RAW.findall(line) == [], repr(line)


def test_json_log_line_escapes_line_separators_and_bidi_overrides() -> None:
    """Was a defect (fixed): Observed: the JSON line (``ensure_ascii=False``) escapes C0
    controls but writes the C1 CSI, U+2028 (a line break for ``str.splitlines`` and many
    viewers) and U+202E (turns the rest of the line around when shown) raw. Expected: none of
    the characters the library's own id rule calls unshowable appears raw in a log line."""
    text = _run_refused_records(JsonFormatter())
    lines = [line for line in text.split("\n") if "dead-lettered" in line]
    assert len(lines) == 3, text
    for line in lines:
        json.loads(line)
        assert RAW.findall(line) == [], repr(line)


def _serve_logs(fmt: str, headers: tuple[tuple[str, bytes], ...], batched: bool) -> str:
    """Handle one valid registration carrying ``headers`` with the logging ``serve`` sets up
    (:func:`configure_logging`); everything written to stderr."""
    import sys

    from pipeline_state_service.logs import _CurrentStderr, configure_logging

    root = logging.getLogger()
    saved_level, saved_stderr = root.level, sys.stderr
    buffer = io.StringIO()
    sys.stderr = buffer
    try:
        handler = configure_logging("INFO", fmt)  # type: ignore[arg-type]
        try:
            stop = asyncio.Event()
            source = LogConsumer(stop)
            topic, envelope = ENV.register("b1", items=1)
            source.append(topic, json.dumps(envelope).encode(), key=b"b1", headers=headers)
            consumer, _, producer = new_consumer(source, batched=batched)
            asyncio.run(drain(consumer, source))
            assert producer.sent == []  # handled, not dead-lettered
        finally:
            root.removeHandler(handler)
            assert not any(isinstance(h, _CurrentStderr) for h in root.handlers)
    finally:
        sys.stderr = saved_stderr
        root.setLevel(saved_level)
    return buffer.getvalue()


PARENT = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
HOSTILE_STATE = "a=1,\x1b[2J\x1b[31mpwned\rts=2020 level=ERROR msg=forged\u2028\u202e".encode()


def test_hostile_tracestate_header_never_reaches_the_log_raw() -> None:
    """Was a defect (fixed): Observed: a record's ``tracestate`` header is handed to
    OpenTelemetry's W3C propagator, which logs a warning quoting the malformed member verbatim;
    the ``key=value`` formatter ``serve`` installs writes it with its ESC sequences and carriage
    return, so any producer can paint the operator's terminal (no SDK needed: the header is read
    whenever present). Expected: no unshowable character from a header reaches a log line raw
    (escape them in the formatter, or drop a header value outside the W3C character set before
    parsing)."""
    for batched in (True, False):
        text = _serve_logs("kv", (("traceparent", PARENT), ("tracestate", HOSTILE_STATE)), batched)
        assert "pwned" in text  # the propagator's warning was written
        lines = [line for line in text.split("\n") if "pwned" in line]
        for line in lines:
            assert RAW.findall(line) == [], repr(line)


def test_a_record_another_handler_formatted_is_logged_with_its_message_once() -> None:
    """Was a defect (fixed): Observed: once any other handler (pytest's, a file handler an
    application adds) has formatted a record, it carries ``record.message``; ``structlog``'s
    ``ExtraAdder`` takes it for an ``extra=`` field, so the structured line repeats the whole
    message as ``message=`` next to ``msg=`` (twice the bytes, and a hostile text twice).
    Expected: ``message`` (and ``asctime``) are left out like the other standard record
    attributes."""
    record = logging.LogRecord("pipeline_state_kafka.consumer", logging.WARNING, __file__, 1,
                               "dead-lettered: %s", ("boom",), None)  # fmt: skip
    logging.Formatter("%(asctime)s %(message)s").format(record)  # another handler went first
    kv = KeyValueFormatter().format(record)
    parsed = json.loads(JsonFormatter().format(record))
    assert parsed["msg"] == "dead-lettered: boom"
    assert "message" not in parsed, parsed
    assert "asctime" not in parsed, parsed
    assert kv.count("dead-lettered: boom") == 1, kv
