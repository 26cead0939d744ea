"""The Kafka adapter's pure parts: record encoding, dead-letter headers, error policy,
settings from flags and environment, log formats, summary lines and the public surface."""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Iterator

import attrs
import pipeline_state_kafka
import pipeline_state_service
import pytest
from pipeline_state_kafka import service_topics
from pipeline_state_kafka.codec import decode_value, encode_message, header
from pipeline_state_kafka.dlq import dead_letter
from pipeline_state_kafka.handlers import Handled
from pipeline_state_kafka.policy import ErrorPolicy, Verdict
from pipeline_state_service import (
    ENVIRONMENT,
    ConsumerPlugin,
    JsonFormatter,
    KeyValueFormatter,
    Sample,
    ServeSettings,
    SettingsError,
    UnknownConsumerError,
    register_consumer,
    resolve_consumer,
    serve_main,
)

from pipeline_state import Profile
from pipeline_state.errors import (
    BatchNotFoundError,
    ConcurrencyConflictError,
    CorruptStateError,
    IllegalTransitionError,
    InvalidMessageError,
    StoreUnavailableError,
    UnknownTopicError,
)
from pipeline_state.ports import OutboxMessage
from pipeline_state.profiles.huleedu.events import INBOUND_TOPICS, OUTBOUND_TOPICS


@attrs.frozen
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()


def _args(**overrides: object) -> argparse.Namespace:
    values: dict[str, object] = {
        "kafka": "127.0.0.1:9092",
        "store": "memory://",
        "http": None,
        "group_id": "g",
        "consumers": [],
    }
    values.update(overrides)
    return argparse.Namespace(**values)


def test_kafka_encoded_record_keeps_the_envelope_and_its_event_id() -> None:
    value = {"event_id": "e-1", "event_type": "t.v1", "correlation_id": "c-1", "data": {"batch_id": "b1"}}
    record = encode_message(OutboxMessage("e-1", "t.v1", "b1", value), topic_prefix="dev.")
    assert record.topic == "dev.t.v1"
    assert record.key == b"b1"
    assert decode_value(record.value) == value
    assert dict(record.headers) == {"event_id": b"e-1", "event_type": b"t.v1", "correlation_id": b"c-1"}
    assert header(record.headers, "correlation_id") == "c-1"
    assert encode_message(OutboxMessage("e-2", "t.v1", None, {"event_id": "e-2"})).key is None


def test_kafka_dead_letter_keeps_bytes_and_adds_reason_and_position() -> None:
    record = Record("dev.in.v1", 2, 41, b"b1", b"\x00raw", (("trace", b"x"), ("dlq_reason", b"old")))
    error = InvalidMessageError("in.v1", "field required", field="data.phase_status")
    letter = dead_letter(record, error, group_id="grp")
    assert (letter.topic, letter.key, letter.value) == ("dev.in.v1.DLQ", b"b1", b"\x00raw")
    headers = dict(letter.headers)
    assert headers["trace"] == b"x"
    assert headers["dlq_reason"].decode().startswith("InvalidMessageError: invalid message on 'in.v1'")
    assert headers["dlq_error_type"] == b"InvalidMessageError"
    assert headers["dlq_original_topic"] == b"dev.in.v1"
    assert (headers["dlq_original_partition"], headers["dlq_original_offset"]) == (b"2", b"41")
    assert headers["dlq_error_field"] == b"data.phase_status"
    assert headers["dlq_consumer_group"] == b"grp"
    assert [k for k, _ in letter.headers].count("dlq_reason") == 1
    plain = dict(dead_letter(record, BatchNotFoundError("b1")).headers)
    assert "dlq_error_field" not in plain
    assert "dlq_consumer_group" not in plain


@pytest.mark.parametrize(
    ("error", "verdict"),
    [
        (InvalidMessageError("t", "bad"), Verdict.DEAD_LETTER),
        (UnknownTopicError("t"), Verdict.DEAD_LETTER),
        (BatchNotFoundError("b"), Verdict.DEAD_LETTER),
        (CorruptStateError("b", "garbage"), Verdict.DEAD_LETTER),
        (StoreUnavailableError("down"), Verdict.RETRY),
        (ConcurrencyConflictError("b", 1, 2), Verdict.RETRY),
        (ConnectionResetError(), Verdict.RETRY),
        (IllegalTransitionError("batch", "a", "b"), Verdict.UNEXPECTED),
        (KeyError("bug"), Verdict.UNEXPECTED),
    ],
)
def test_kafka_error_policy_classifies(error: Exception, verdict: Verdict) -> None:
    assert ErrorPolicy().classify(error) is verdict


def test_kafka_settings_from_flags_and_environment() -> None:
    env = {
        "PIPELINE_STATE_TOPIC_PREFIX": "dev.",
        "PIPELINE_STATE_RELAY": "0",
        "PIPELINE_STATE_KAFKA_SESSION_TIMEOUT_MS": "3000",
        "PIPELINE_STATE_KAFKA_HEARTBEAT_MS": "1000",  # below the session timeout, as it must be
        "PIPELINE_STATE_KAFKA_IDEMPOTENCE": "true",
        "PIPELINE_STATE_KAFKA_ACKS": "1",
        "PIPELINE_STATE_KAFKA_CLIENT_ID": "orchestrator",
        "PIPELINE_STATE_SUMMARY": "plain",
    }
    settings = ServeSettings.from_args(_args(http="0.0.0.0:8080", consumers=["results"]), env)
    assert settings.http == ("0.0.0.0", 8080)
    assert settings.consumers == ("results",)
    assert (settings.topic_prefix, settings.relay_enabled, settings.summary) == ("dev.", False, "plain")
    consumer = settings.consumer_settings()
    assert (consumer.group_id, consumer.topic_prefix, consumer.session_timeout_ms) == ("g", "dev.", 3000)
    assert consumer.client_id == settings.producer_settings().client_id == "orchestrator"
    assert consumer.kafka_topics() == [f"dev.{t}" for t in INBOUND_TOPICS]
    assert consumer.options()["enable_auto_commit"] is False
    producer = settings.producer_settings()
    assert (producer.enable_idempotence, producer.acks) == (True, 1)
    defaults = ServeSettings.from_args(_args(store=None), {})
    assert defaults.store_url == "sqlite+aiosqlite:///pipeline_state.db"
    assert defaults.producer_settings().enable_idempotence is False
    assert defaults.producer_settings().acks == "all"
    assert defaults.relay_enabled
    assert defaults.http is None
    assert (defaults.max_message_bytes, defaults.max_json_depth) == (1024 * 1024, 32)
    assert (defaults.dlq_max_message_bytes, defaults.waiting_window_seconds) == (1024 * 1024, 900.0)
    limits = {
        "PIPELINE_STATE_MAX_MESSAGE_BYTES": "2048",
        "PIPELINE_STATE_MAX_JSON_DEPTH": "8",
        "PIPELINE_STATE_DLQ_MAX_MESSAGE_BYTES": "65536",
        "PIPELINE_STATE_WAITING_WINDOW_SECONDS": "60",
    }
    tuned = ServeSettings.from_args(_args(), limits)
    assert (tuned.intake_limits().max_message_bytes, tuned.intake_limits().max_json_depth) == (2048, 8)
    assert (tuned.dlq_max_message_bytes, tuned.waiting_window_seconds) == (65536, 60.0)


def test_kafka_serve_profile_takes_the_deployment_deadlines_resends_and_correlation_rule() -> None:
    def deadlines(profile: Profile) -> dict[str, float | None]:
        catalog = profile.catalog
        return {p: profile.deadline_for(catalog.step_definition(p)) for p in catalog.phases}

    default = ServeSettings.from_args(_args(), {}).profile()
    assert set(deadlines(default).values()) == {3600.0}
    assert (default.max_resends, default.strict_correlation) == (2, False)
    env = {
        "PIPELINE_STATE_PHASE_DEADLINE_SECONDS": "120",
        "PIPELINE_STATE_PHASE_DEADLINES": "cj_assessment=7200, nlp=none",
        "PIPELINE_STATE_PHASE_MAX_RESENDS": "0",
        "PIPELINE_STATE_STRICT_CORRELATION": "true",
    }
    tuned = ServeSettings.from_args(_args(), env).profile()
    assert deadlines(tuned) == {
        "spellcheck": 120.0,
        "cj_assessment": 7200.0,
        "nlp": None,
        "ai_feedback": 120.0,
    }
    assert (tuned.max_resends, tuned.strict_correlation) == (0, True)
    opted_out = ServeSettings.from_args(_args(), {"PIPELINE_STATE_PHASE_DEADLINE_SECONDS": "none"}).profile()
    assert set(deadlines(opted_out).values()) == {None}


@pytest.mark.parametrize(
    ("overrides", "env"),
    [
        ({}, {"PIPELINE_STATE_PHASE_DEADLINES": "translation=60"}),
        ({}, {"PIPELINE_STATE_PHASE_DEADLINES": "nlp"}),
        ({}, {"PIPELINE_STATE_PHASE_DEADLINE_SECONDS": "-5"}),
        ({}, {"PIPELINE_STATE_PHASE_MAX_RESENDS": "-1"}),
        ({}, {"PIPELINE_STATE_RELAY": "maybe"}),
        ({}, {"PIPELINE_STATE_KAFKA_MAX_RECORDS": "lots"}),
        ({}, {"PIPELINE_STATE_KAFKA_MAX_RECORDS": "0"}),
        ({}, {"PIPELINE_STATE_LOG_FORMAT": "xml"}),
        ({}, {"PIPELINE_STATE_MAX_JSON_DEPTH": "0"}),
        ({}, {"PIPELINE_STATE_MAX_MESSAGE_BYTES": "1"}),
        ({}, {"PIPELINE_STATE_DLQ_MAX_MESSAGE_BYTES": "100"}),
        ({}, {"PIPELINE_STATE_WAITING_WINDOW_SECONDS": "0"}),
        ({}, {"PIPELINE_STATE_METRICS": "maybe"}),
        ({}, {"PIPELINE_STATE_METRICS_STORE_SECONDS": "-1"}),
        ({"http": "no-port"}, {}),
        ({"kafka": "broker"}, {}),
    ],
)
def test_kafka_bad_settings_are_rejected(overrides: dict[str, object], env: dict[str, str]) -> None:
    with pytest.raises(SettingsError):
        ServeSettings.from_args(_args(**overrides), env)


def test_kafka_every_environment_variable_is_documented() -> None:
    readme = (pipeline_state_service.__file__.rsplit("/", 1)[0]) + "/README.md"
    with open(readme) as handle:
        text = handle.read()
    missing = [name for name in ENVIRONMENT if f"`{name}`" not in text]
    assert missing == []


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """serve_main configures the root logger; put it back afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


@pytest.mark.usefixtures("restore_logging")
def test_kafka_serve_main_rejects_bad_settings_with_status_2(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIPELINE_STATE_SUMMARY", "sometimes")
    assert serve_main(_args()) == 2


@pytest.mark.usefixtures("restore_logging")
def test_kafka_serve_main_fails_with_status_1_when_the_broker_never_answers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pipeline_state_kafka.testing import free_port

    monkeypatch.setenv("PIPELINE_STATE_KAFKA_STARTUP_TIMEOUT_SECONDS", "1")
    monkeypatch.setenv("PIPELINE_STATE_SUMMARY", "off")
    started = time.monotonic()
    assert serve_main(_args(kafka=f"127.0.0.1:{free_port()}")) == 1
    assert time.monotonic() - started < 20


def _record(**extra: object) -> logging.LogRecord:
    record = logging.LogRecord(
        "pipeline_state_kafka.consumer", logging.INFO, __file__, 1, "handled %s", ("t",), None
    )
    record.__dict__.update(extra)
    return record


def test_kafka_log_lines_carry_batch_and_correlation_ids() -> None:
    fields = {"batch_id": "b 1", "correlation_id": "c-1", "offset": 7, "result": None}
    line = KeyValueFormatter().format(_record(**fields))
    assert line.split(" ", 1)[0].startswith("ts=")
    assert 'msg="handled t"' in line
    assert 'batch_id="b 1"' in line
    assert "correlation_id=c-1" in line
    assert "offset=7" in line
    assert "result=" not in line
    parsed = json.loads(JsonFormatter().format(_record(**fields)))
    assert (parsed["batch_id"], parsed["correlation_id"], parsed["offset"], parsed["level"]) == (
        "b 1",
        "c-1",
        7,
        "INFO",
    )


def test_kafka_summary_line_names_rate_dlq_depth_and_active_runs() -> None:
    sample = Sample(
        consumed=120,
        rate=40.0,
        dead_lettered=2,
        retries=1,
        published=300,
        outbox_depth=5,
        active_runs=1000,
        uptime=3.2,
        active_runs_capped=True,  # a store that cannot count its runs listed as many as allowed
    )
    line = sample.line()
    for part in (
        "consumed=120",
        "consumed_per_s=40.0",
        "dlq=2",
        "outbox_depth=5",
        "active_runs=1000+",
        "published=300",
    ):
        assert part in line
    # A store that counts (memory, SQL) is shown exactly, past the listing's limit too.
    assert "active_runs=1000 " in attrs.evolve(sample, active_runs_capped=False).line()
    assert "active_runs=1005 " in attrs.evolve(sample, active_runs=1005, active_runs_capped=False).line()
    unknown = attrs.evolve(sample, outbox_depth=None, active_runs=None).line()
    assert "outbox_depth=?" in unknown
    assert "active_runs=?" in unknown


def test_kafka_service_topics_cover_inbound_dead_letters_and_outbound() -> None:
    topics = service_topics("p.")
    assert topics[: len(INBOUND_TOPICS)] == [f"p.{t}" for t in INBOUND_TOPICS]
    assert f"p.{INBOUND_TOPICS[0]}.DLQ" in topics
    assert all(f"p.{t}" in topics for t in OUTBOUND_TOPICS)
    assert len(topics) == len(set(topics)) == 2 * len(INBOUND_TOPICS) + len(OUTBOUND_TOPICS)


async def _plugin(context: object) -> ConsumerPlugin:
    async def handle(topic: str, raw: bytes) -> Handled:
        return Handled(result="applied")

    return ConsumerPlugin(topics=("x.v1",), handler=handle)


def test_kafka_extra_consumers_resolve_by_registry_or_entry_point_only() -> None:
    register_consumer("units-probe", _plugin)
    assert resolve_consumer("units-probe") is _plugin
    with pytest.raises(UnknownConsumerError, match="units-probe"):
        resolve_consumer("no-such-consumer")
    # Discovery is by entry points only: a module path is never imported.
    with pytest.raises(UnknownConsumerError, match="known consumers"):
        resolve_consumer("pipeline_state_service:serve_main")
    with pytest.raises(UnknownConsumerError):
        resolve_consumer("no_such_module:thing")


def test_kafka_public_api_is_curated() -> None:
    names = pipeline_state_kafka.__all__
    assert names == sorted(names, key=lambda n: (not n.isupper(), not n[0].isupper(), n))
    assert len(names) == len(set(names))
    for name in names:
        assert getattr(pipeline_state_kafka, name) is not None
    public = {n for n in vars(pipeline_state_kafka) if not n.startswith("_")}
    modules = {n for n in public if type(getattr(pipeline_state_kafka, n)).__name__ == "module"}
    assert public - modules - {"annotations"} == set(names)
