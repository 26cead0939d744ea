"""Hostile or careless operator configuration of ``pipeline-state serve``: the
Kafka adapter's numeric settings, the bootstrap list, the summary period, per-phase deadlines,
unknown ``PIPELINE_STATE_*`` variables and the ``OTEL_*`` variables.

The contract tested (adapters/pipeline_state_service/README.md, "pipeline-state serve";
docs/operations.md, "Turning it on in serve"): a value that does not parse or cannot work
stops ``serve`` with status 2 and one line naming the variable; never a traceback, never a
value accepted that fails later (at the first fetch, the first publish) or silently ignored.

The tests whose docstrings name a defect were failing before its fix (found by an attack on
operator configuration), with tracebacks, values that failed later, or silence.
No broker is needed: ``run_serve`` points at 127.0.0.1:1, where nothing listens.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import pytest
from pipeline_state_service import ServeSettings, SettingsError
from pipeline_state_service.cli import add_commands
from pipeline_state_service.otel import requested_exporters, tracer_provider

from tests.serve_process import assert_clean_failure, run_serve

BIG = "1" + "0" * 400
"""A 400-digit integer: parses as an ``int``, too large for a float or a Kafka Int32."""

INT32_PLUS = str(2**31)
"""One more than the largest value of a Kafka protocol Int32 field."""


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(dest="command"))
    return parser.parse_args(["serve", *argv])


def _from_env(**env: str) -> ServeSettings:
    return ServeSettings.from_args(_parse(), {"PIPELINE_STATE_KAFKA": "127.0.0.1:9092", **env})


# -- the bootstrap list ---------------------------------------------------------------------


def test_a_bootstrap_entry_after_the_first_with_a_bad_port_is_refused_in_one_line(tmp_path: Path) -> None:
    """``--kafka 127.0.0.1:1,127.0.0.1:notaport``: only the first entry is checked
    (pipeline_state_service/settings.py:450, ``parse_host_port(bootstrap.split(",")[0])``),
    so the second reaches aiokafka / ``tcp_probe`` (relay_runner.py:244, ``int(port)``).
    Observed: ``ValueError: invalid literal for int()`` as a traceback, status 1. Expected:
    status 2 and the one "expected HOST:PORT" line."""
    result = run_serve(tmp_path, "--store", "memory://", kafka="127.0.0.1:1,127.0.0.1:notaport", timeout=30)
    assert_clean_failure(result, (2,))
    assert "HOST:PORT" in result.stderr


@pytest.mark.parametrize(
    "bootstrap",
    [
        "127.0.0.1:9092,h2:99999",  # port out of range, second entry
        "127.0.0.1:9092,",  # an empty entry: tcp_probe then probes 127.0.0.1:9092
        "PLAINTEXT://127.0.0.1:9092",  # a listener URL, not HOST:PORT
        "user:s3cretpw@127.0.0.1:9092",  # credentials where a host goes
    ],
    ids=["port-99999", "empty-entry", "scheme", "credentials"],
)
def test_a_bootstrap_list_that_is_not_host_port_pairs_is_refused(bootstrap: str) -> None:
    """Each of these is accepted by ``ServeSettings.from_args`` and fails only when the
    broker is dialled (status 1, "Unable to bootstrap"), and the credentials one prints the
    password in that error line and in the "starting kafka=..." log line. Expected: refused
    at start (``SettingsError``, status 2), naming the setting and not repeating the secret.
    Fix: check every comma-separated entry with ``parse_host_port`` and refuse a host that
    holds ``/``, ``@`` or is empty."""
    with pytest.raises(SettingsError) as refused:
        _from_env(PIPELINE_STATE_KAFKA=bootstrap)
    assert "s3cretpw" not in str(refused.value)


# -- Kafka numbers ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("PIPELINE_STATE_KAFKA_POLL_TIMEOUT_MS", BIG),  # every fetch: OverflowError, nothing consumed
        ("PIPELINE_STATE_KAFKA_FETCH_MAX_WAIT_MS", INT32_PLUS),  # fetcher: struct error, nothing consumed
        ("PIPELINE_STATE_KAFKA_SESSION_TIMEOUT_MS", INT32_PLUS),  # join: traceback
        ("PIPELINE_STATE_KAFKA_MAX_POLL_INTERVAL_MS", BIG),  # traceback
        ("PIPELINE_STATE_KAFKA_METADATA_MAX_AGE_MS", BIG),  # traceback
        ("PIPELINE_STATE_KAFKA_REQUEST_TIMEOUT_MS", BIG),  # producer: traceback
        ("PIPELINE_STATE_KAFKA_LINGER_MS", BIG),  # producer: traceback
        ("PIPELINE_STATE_KAFKA_MAX_RECORDS", BIG),
        ("PIPELINE_STATE_KAFKA_PARTITION_CONCURRENCY", BIG),  # lanes(): [[] for _ in range(n)] per fetch
    ],
)
def test_kafka_numbers_beyond_what_the_client_can_use_are_refused(variable: str, value: str) -> None:
    """The Kafka adapter's integer settings have a lower bound and no upper one
    (pipeline_state_kafka/settings.py:84-137; ``topic_partitions`` and
    ``replication_factor`` have one). Against a real broker (tried by hand with the test
    broker): POLL_TIMEOUT_MS=10**400 logs "fetch failed: OverflowError" on every fetch and
    consumes nothing; FETCH_MAX_WAIT_MS=2**31 kills aiokafka's fetcher routine (struct
    error), nothing consumed; SESSION_TIMEOUT_MS=2**31, MAX_POLL_INTERVAL_MS and
    METADATA_MAX_AGE_MS=10**400 end in a traceback; without a broker LINGER_MS and
    REQUEST_TIMEOUT_MS=10**400 already end in an ``OverflowError`` traceback (see the next
    test); PARTITION_CONCURRENCY=10**400 makes ``consumer.lanes`` build that many lists at
    the first fetch (a hang). Fix: ``le=2**31 - 1`` on every ``*_ms`` field and on
    ``kafka_max_records``, and a small bound on ``kafka_partition_concurrency`` (or
    ``lanes()`` using ``min(count, len(records))``)."""
    with pytest.raises(SettingsError) as refused:
        _from_env(**{variable: value})
    assert variable in str(refused.value)


def test_a_huge_producer_linger_is_refused(tmp_path: Path) -> None:
    """``PIPELINE_STATE_KAFKA_LINGER_MS=10**400`` (a value with an accidental unit suffix of
    zeros): accepted by the settings, then ``AIOKafkaProducer`` computes ``linger_ms / 1000``
    and raises ``OverflowError``, which ``serve`` (serve.py:124 catches KafkaError, OSError,
    PipelineStateError only) lets out as a traceback, status 1. Expected: status 2, one line
    naming the variable."""
    result = run_serve(tmp_path, "--store", "memory://", timeout=30, PIPELINE_STATE_KAFKA_LINGER_MS=BIG)
    assert_clean_failure(result, (2,))
    assert "PIPELINE_STATE_KAFKA_LINGER_MS" in result.stderr


# -- service settings ---------------------------------------------------------------------


def test_a_zero_summary_period_is_refused(tmp_path: Path) -> None:
    """``PIPELINE_STATE_SUMMARY=plain PIPELINE_STATE_SUMMARY_SECONDS=0`` is accepted
    (settings.py:202, ``Seconds`` is ``ge=0``; for the sweeper and the purge ``0`` means
    "off", for the summary it is not documented) and ``Summary.run_plain``
    (summary.py:93-97, ``wait_for(..., timeout=0)``) then prints a summary line as fast as the
    store can be sampled: 12,576 lines in the one second a start-up against an unreachable
    broker lasted. Expected: refused at start (status 2 naming the variable), or ``0`` turns
    the lines off, as for the other periods."""
    result = run_serve(
        tmp_path,
        "--store",
        "memory://",
        timeout=30,
        PIPELINE_STATE_SUMMARY="plain",
        PIPELINE_STATE_SUMMARY_SECONDS="0",
    )
    assert "Traceback" not in result.stderr
    refused = result.returncode == 2 and "PIPELINE_STATE_SUMMARY_SECONDS" in result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("summary")]
    assert refused or len(lines) <= 3, f"{len(lines)} summary lines in one start-up"


def test_a_phase_named_twice_in_phase_deadlines_is_refused() -> None:
    """``PIPELINE_STATE_PHASE_DEADLINES=nlp=5,nlp=none`` says two contradictory things about
    one phase; ``_phase_deadlines`` (settings.py:112-122) keeps both pairs and
    ``dict(...)`` in ``ServeSettings.profile`` silently keeps the last: nlp gets no deadline.
    Expected: refused at start naming the variable and the phase."""
    with pytest.raises(SettingsError) as refused:
        _from_env(PIPELINE_STATE_PHASE_DEADLINES="nlp=5,nlp=none")
    assert "PIPELINE_STATE_PHASE_DEADLINES" in str(refused.value)


def test_a_misspelt_variable_is_named_in_a_warning(tmp_path: Path) -> None:
    """``PIPELINE_STATE_RELAY_MAX_ATTEMPT=3`` (``..._ATTEMPTS`` meant): every settings model
    is ``extra="ignore"`` (pipeline_state/_settings.py:64) and ``serve_main`` never looks at
    the variables no model reads, so the operator's setting is dropped without a word and
    the default (10) runs. Expected: ``serve`` names an unknown ``PIPELINE_STATE_*`` variable
    on start (a warning, or a refusal with status 2). Fix: in ``serve_main`` compare the
    ``PIPELINE_STATE_*`` names of ``os.environ`` with ``ENVIRONMENT``, the HTTP adapter's and
    the operator commands' variables, and log one warning line naming the strangers."""
    result = run_serve(tmp_path, "--store", "memory://", timeout=30, PIPELINE_STATE_RELAY_MAX_ATTEMPT="3")
    assert "Traceback" not in result.stderr
    assert "PIPELINE_STATE_RELAY_MAX_ATTEMPT" in result.stderr


# -- OTEL_* ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", "abc"),
        ("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", "-1"),
        ("OTEL_SPAN_EVENT_COUNT_LIMIT", "1e400"),
    ],
)
def test_a_span_limit_the_sdk_refuses_is_a_settings_error(
    variable: str, value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With traces on, an ``OTEL_*_LIMIT`` value the SDK refuses raises ``ValueError`` from
    ``TracerProvider(...)`` (otel.py:88 is outside the ``try`` that turns the
    ``BatchSpanProcessor``'s ``ValueError`` into a ``SettingsError``), so ``serve`` prints a
    traceback, status 1 (seen with ``run_serve``: "ValueError: OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT
    must be a non-negative integer but got abc"). Expected: ``SettingsError`` (status 2, one
    line naming the variable), as for ``OTEL_BSP_*``. (The SDK reads ``os.environ``, not the
    mapping given to ``tracer_provider``: hence ``setenv``.)"""
    monkeypatch.setenv(variable, value)
    provider = None
    try:
        with pytest.raises(SettingsError, match=variable):  # today: the SDK's ValueError escapes
            provider = tracer_provider({"OTEL_TRACES_EXPORTER": "console", variable: value})
    finally:
        if provider is not None:
            provider.shutdown()


@pytest.mark.parametrize("value", ["1", "yes", "on"])
def test_otel_sdk_disabled_with_a_flag_word_warns(value: str, caplog: pytest.LogCaptureFixture) -> None:
    """``OTEL_SDK_DISABLED=1`` (the project's own flags take ``1``/``yes``/``on``): only
    ``true`` counts (otel.py:45), so tracing is turned on, with nothing said. The
    OpenTelemetry specification has values other than ``true``/``false`` mean false *with a
    warning*; expected: either a warning naming ``OTEL_SDK_DISABLED`` or a refusal."""
    caplog.set_level(logging.WARNING)
    env = {"OTEL_SDK_DISABLED": value, "OTEL_TRACES_EXPORTER": "console"}
    refused = ""
    names: tuple[str, ...] = ("?",)
    try:
        names = requested_exporters(env)
    except SettingsError as exc:
        refused = str(exc)
    assert "OTEL_SDK_DISABLED" in refused or names == () or "OTEL_SDK_DISABLED" in caplog.text


def test_the_traces_protocol_error_names_the_variable_set() -> None:
    """``OTEL_EXPORTER_OTLP_TRACES_PROTOCOL=grpc`` is refused (good), but the one line says
    ``OTEL_EXPORTER_OTLP_PROTOCOL: only http/protobuf is supported`` (otel.py:62-65), a
    variable the operator did not set. Expected: the line names the variable that holds the
    refused value."""
    with pytest.raises(SettingsError) as refused:
        requested_exporters({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc"})
    assert str(refused.value).startswith("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")


# -- held -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("PIPELINE_STATE_SWEEP_SECONDS", BIG),
        ("PIPELINE_STATE_PHASE_DEADLINE_SECONDS", "5s"),
        ("PIPELINE_STATE_RETENTION_INBOX_HOURS", "7d"),
        ("PIPELINE_STATE_RETENTION_INBOX_HOURS", "never"),
        ("PIPELINE_STATE_KAFKA_ACKS", "-1"),
        ("PIPELINE_STATE_KAFKA_AUTO_OFFSET_RESET", "none"),
        ("PIPELINE_STATE_LOG_LEVEL", "warn"),
        ("PIPELINE_STATE_STORE", " memory:// "),
        ("PIPELINE_STATE_STORE", "MEMORY://"),
        ("PIPELINE_STATE_STORE", "memory"),
        ("PIPELINE_STATE_KAFKA_HEARTBEAT_MS", "20000"),  # not below the session timeout
    ],
)
def test_wrong_units_and_unknown_words_are_refused_naming_the_variable(variable: str, value: str) -> None:
    """Held: refused by ``ServeSettings.from_args`` with a ``SettingsError`` (status 2)."""
    with pytest.raises(SettingsError):
        _from_env(**{variable: value})


@pytest.mark.parametrize(
    "env",
    [
        {"OTEL_TRACES_EXPORTER": "jaeger"},
        {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"},
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
    ],
)
def test_an_exporter_or_protocol_serve_cannot_honour_is_refused(env: dict[str, str]) -> None:
    """Held: ``requested_exporters`` refuses these with a ``SettingsError``."""
    with pytest.raises(SettingsError):
        requested_exporters(env)


def test_otel_sdk_disabled_true_wins_over_everything() -> None:
    """Held: ``OTEL_SDK_DISABLED=TRUE`` (any case) keeps tracing off even with an exporter named."""
    assert requested_exporters({"OTEL_SDK_DISABLED": " TRUE ", "OTEL_TRACES_EXPORTER": "jaeger"}) == ()
