"""Found by an attack (serve start-up, settings and shutdown): hostile flags and ``PIPELINE_STATE_*`` /
``OTEL_*`` variables given to ``pipeline-state serve``, a taken HTTP port, signals during
start-up.

``serve``'s documented contract (adapters/pipeline_state_service/README.md, "pipeline-state
serve"; docs/operations.md "Turning it on in serve"): a value that does not parse stops
``serve`` with status 2 and a message naming it; an unsupported exporter or protocol stops it
with status 2 and a one-line error; status 1 when the broker or store cannot be reached at start
or a part failed; the first SIGINT/SIGTERM shuts down cleanly with status 0; never a traceback.

Tests whose docstring starts "Held" are attacks the code withstood; the others failed before
the fix that came with them.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from kafka_harness import FAST_ENV, ServeProcess
from pipeline_state_kafka import ProducerLike
from pipeline_state_kafka.testing import LocalBroker, send_envelopes
from pipeline_state_service import ServeSettings, SettingsError
from pipeline_state_service.cli import add_commands
from pipeline_state_service.otel import requested_exporters

from pipeline_state import InMemoryRuntime, InMemoryStore, PipelineService
from pipeline_state.profiles.huleedu.events import Topic
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes
from tests.serve_process import StderrLines, assert_clean_failure, run_serve, serve_env


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(dest="command"))
    return parser.parse_args(["serve", *argv])


# -- were defects: usage errors that end in a traceback ----------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ("--store", "memory://", "--kafka", "127.0.0.1:\u00b2"),  # superscript two
        ("--store", "memory://", "--http", "127.0.0.1:\u00b2", "--insecure-no-auth"),
    ],
    ids=["kafka", "http"],
)
def test_a_non_ascii_digit_port_is_a_usage_error(tmp_path: Path, args: tuple[str, ...]) -> None:
    """Was a defect: ``HOST:PORT`` whose port is a Unicode digit ``int()`` cannot read (``²``):
    must stop ``serve`` with status 2 and "expected HOST:PORT". Observed: ``ValueError:
    invalid literal for int() with base 10: '²'`` as a traceback, status 1.
    ``parse_host_port`` (pipeline_state_service/settings.py:56) checks ``port.isdigit()``,
    which is true for ``²``, and then calls ``int(port)``; fix: ``port.isascii() and
    port.isdigit()`` (or try/except ValueError -> SettingsError)."""
    result = run_serve(tmp_path, *args)
    assert_clean_failure(result, (2,))
    assert "HOST:PORT" in result.stderr


@pytest.mark.parametrize("kind", ["raises_on_import", "needs_arguments"])
def test_a_profile_that_cannot_be_loaded_is_a_usage_error(tmp_path: Path, kind: str) -> None:
    """Was a defect: ``PIPELINE_STATE_PROFILE`` naming a profile that cannot be loaded must stop
    ``serve`` with status 2 and one line naming the variable (``ServeSettings.profile``'s
    docstring: "Raises SettingsError naming the problem (an unknown phase, a profile that
    cannot be loaded)"). Observed: a profile file whose module raises while it is imported
    (a typo, a missing setting) or a ``MODULE:NAME`` naming a function that needs arguments
    ends in a traceback (``RuntimeError`` / ``TypeError``), status 1. ``load_profile``
    (pipeline_state/profiles/__init__.py:74-94) only turns ``ImportError`` into a
    ``DefinitionError``; ``exec_module`` and ``found()`` may raise anything."""
    if kind == "raises_on_import":
        (tmp_path / "myprofile.py").write_text("raise RuntimeError('PROFILE_DB_URL is not set')\n")
        spec = f"{tmp_path / 'myprofile.py'}:PROFILE"
    else:
        (tmp_path / "myprofile2.py").write_text("def make(tenant):\n    raise AssertionError\n")
        spec = f"{tmp_path / 'myprofile2.py'}:make"
    result = run_serve(tmp_path, "--store", "memory://", PIPELINE_STATE_PROFILE=spec)
    assert_clean_failure(result, (2,))
    assert "PIPELINE_STATE_PROFILE" in result.stderr


@pytest.mark.parametrize(
    ("variable", "value"), [("OTEL_BSP_MAX_QUEUE_SIZE", "0"), ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "-5")]
)
def test_a_span_processor_setting_the_sdk_refuses_is_one_line(
    tmp_path: Path, variable: str, value: str
) -> None:
    """Was a defect: With traces on (``OTEL_TRACES_EXPORTER=console``), an ``OTEL_BSP_*`` value the
    SDK refuses must stop ``serve`` with one line (status 2, as for the other OTEL_* problems
    in docs/operations.md). Observed: ``ValueError: max_queue_size must be a positive
    integer.`` as a traceback, status 1: ``tracer_provider`` (pipeline_state_service/otel.py,
    ``BatchSpanProcessor(...)``) is called from ``serve_main``'s ``with tracing_from()``, which
    only catches ``SettingsError``."""
    result = run_serve(tmp_path, "--store", "memory://", OTEL_TRACES_EXPORTER="console", **{variable: value})
    assert_clean_failure(result, (2,))


def test_grpc_protocol_is_refused_when_only_the_endpoint_turns_otlp_on() -> None:
    """Was a defect: docs/operations.md: ``OTEL_EXPORTER_OTLP_PROTOCOL`` "``http/protobuf`` (the
    default; ``grpc`` is refused with an error)", and "an unsupported ... protocol ... stops
    ``serve`` with exit status 2". That holds with ``OTEL_TRACES_EXPORTER=otlp``, but when
    OTLP is turned on by ``OTEL_EXPORTER_OTLP_ENDPOINT`` alone (the documented other way),
    ``requested_exporters`` returns ``("otlp",)`` before the protocol check
    (pipeline_state_service/otel.py:48-50), so ``grpc`` is accepted and spans go over
    HTTP/protobuf to a gRPC endpoint: lost, silently."""
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}
    with pytest.raises(SettingsError):
        requested_exporters({**env, "OTEL_TRACES_EXPORTER": "otlp"})  # the same, said explicitly
    with pytest.raises(SettingsError, match="OTEL_EXPORTER_OTLP_PROTOCOL"):
        requested_exporters(env)


def test_an_unknown_consumer_is_a_usage_error_before_the_broker_is_tried(tmp_path: Path) -> None:
    """Was a defect: ``--consumers nosuch`` names a consumer nobody provides
    (``UnknownConsumerError``): a bad flag, so status 2 ("2: bad flags or variables"), found
    without a broker. Observed: ``serve`` first connects to Kafka and only then resolves the
    names (``ServiceRunner._run_started``, pipeline_state_service/runner.py: ``resolve_consumer``
    after the producer started), ending with status 1 "service failed: UnknownConsumerError"
    (or, as here, with an unrelated broker error when the broker is down). Fix: resolve the
    names in ``ServeSettings.from_args`` / before ``open_kafka`` and return status 2."""
    result = run_serve(tmp_path, "--store", "memory://", "--consumers", "nosuch")
    assert_clean_failure(result, (2,))
    assert "nosuch" in result.stderr


@pytest.mark.parametrize(
    ("variable", "value"),
    [("PIPELINE_STATE_TOPIC_PARTITIONS", "99999999999"), ("PIPELINE_STATE_REPLICATION_FACTOR", "99999")],
)
def test_an_out_of_range_topic_setting_is_a_usage_error(
    tmp_path: Path, broker: LocalBroker, prefix: str, variable: str, value: str
) -> None:
    """Was a defect: ``PIPELINE_STATE_TOPIC_PARTITIONS`` (Kafka: int32) and
    ``PIPELINE_STATE_REPLICATION_FACTOR`` (int16) have only ``ge=1``
    (pipeline_state_kafka/settings.py). A value out of the protocol's range must stop
    ``serve`` with status 2 naming the variable. Observed: after connecting, topic creation
    raises aiokafka's ``ValueError: ... 'i' format requires -2147483648 <= number <=
    2147483647`` and ``serve`` ends with a traceback, status 1: ``_create_topics``
    (pipeline_state_service/runner.py) catches only ``KafkaError``/``OSError`` and ``serve``
    only ``KafkaError``/``OSError``/``PipelineStateError``."""
    result = run_serve(
        tmp_path,
        "--store",
        "memory://",
        "--group-id",
        f"{prefix}group",
        kafka=broker.bootstrap,
        **{**FAST_ENV, "PIPELINE_STATE_SUMMARY": "off", "PIPELINE_STATE_LOG_FORMAT": "kv"},
        PIPELINE_STATE_TOPIC_PREFIX=prefix,
        **{variable: value},
    )
    assert_clean_failure(result, (2,))
    assert variable in result.stderr


# -- were defects: accepted settings that break the service at run time --------------------------


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("PIPELINE_STATE_PHASE_DEADLINE_SECONDS", "1e12"),
        ("PIPELINE_STATE_PHASE_DEADLINES", "spellcheck=1e12"),
    ],
)
async def test_an_accepted_phase_deadline_lets_runs_start(variable: str, value: str) -> None:
    """Was a defect: A phase deadline of 1e12 s (~31,700 years) is accepted by ``serve`` (finite and
    positive: ``_seconds_or_none``, pipeline_state_service/settings.py:71, and the profile's
    ``_check_seconds``, pipeline_state/_profile.py:203), but then every accepted pipeline
    request raises ``OverflowError: date value out of range`` while dispatching its first
    phase (``now + timedelta(seconds=...)``, pipeline_state/_decide/run.py:155): in ``serve``
    each valid request is retried as "unexpected" and then dead-lettered, never accepted nor
    denied. Either the value must be refused at start (SettingsError naming the variable,
    as ``PIPELINE_STATE_RESULTS_COMPLETION_RETENTION_HOURS`` is bounded by
    ``MAX_RETENTION_HOURS``) or the run must start."""
    try:
        settings = ServeSettings.from_args(_parse(), {"PIPELINE_STATE_KAFKA": "h:9092", variable: value})
    except SettingsError:
        return  # refused at start, naming the variable: correct
    rt = InMemoryRuntime(settings.profile())
    env = HuleEduEnvelopes()
    await rt.deliver(*env.register("b1", items=2))
    await rt.deliver(*env.provisioned("b1", env.item_ids("b1", 2)))
    out = await rt.deliver(*env.request("b1", "nlp"))
    topics = [m["topic"] for m in out]
    assert Topic.PIPELINE_DENIED.value not in topics
    assert "huleedu.els.spellcheck.initiate.command.v1" in topics  # the run started


async def test_an_accepted_waiting_window_lets_the_sweeper_run() -> None:
    """Was a defect: ``PIPELINE_STATE_WAITING_WINDOW_SECONDS=1e12`` is accepted (``gt=0``, finite,
    no upper bound: pipeline_state_service/settings.py), but every sweep then fails:
    ``expired_waiting`` computes ``now - timedelta(seconds=window)`` before year 1
    (pipeline_state/_service.py:599, ``OverflowError``). ``serve``'s sweeper logs "waiting sweep
    failed (retried next period)" every period for ever, and no early fact is ever re-attempted
    by the sweeper or dead-lettered (an early pipeline request is never denied). The value
    must be refused at start or the sweep must work."""
    try:
        settings = ServeSettings.from_args(
            _parse(), {"PIPELINE_STATE_KAFKA": "h:9092", "PIPELINE_STATE_WAITING_WINDOW_SECONDS": "1e12"}
        )
    except SettingsError:
        return
    service = PipelineService(
        InMemoryStore(), profile=settings.profile(), waiting_window_seconds=settings.waiting_window_seconds
    )

    async def dead_letter(_: object) -> None:
        raise AssertionError("nothing waits")

    await service.sweep_waiting(dead_letter)


# -- held -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("PIPELINE_STATE_MAX_MESSAGE_BYTES", "0"),
        ("PIPELINE_STATE_MAX_MESSAGE_BYTES", "1e400"),
        ("PIPELINE_STATE_MAX_JSON_DEPTH", "0"),
        ("PIPELINE_STATE_SWEEP_SECONDS", "nan"),
        ("PIPELINE_STATE_SWEEP_SECONDS", "-1"),
        ("PIPELINE_STATE_PHASE_DEADLINE_SECONDS", "inf"),
        ("PIPELINE_STATE_PHASE_DEADLINE_SECONDS", "-1"),
        ("PIPELINE_STATE_PHASE_DEADLINES", "nlp"),
        ("PIPELINE_STATE_PHASE_DEADLINES", "ｎｌｐ=5"),  # fullwidth: not a phase
        ("PIPELINE_STATE_PHASE_DEADLINES", "nlp=1e400"),
        ("PIPELINE_STATE_RELAY", "０"),
        ("PIPELINE_STATE_LOG_LEVEL", " info"),
        ("PIPELINE_STATE_KAFKA", "   "),
        ("PIPELINE_STATE_KAFKA", ","),
        ("PIPELINE_STATE_STORE_UPGRADE", "yes please"),
        ("PIPELINE_STATE_PROFILE", "  "),
        ("PIPELINE_STATE_PROFILE", "/no/such/file.py:X"),
    ],
)
def test_hostile_values_are_refused_naming_the_problem(variable: str, value: str) -> None:
    """Held: Each of these stops ``serve`` with a ``SettingsError`` (status 2)."""
    env = {"PIPELINE_STATE_KAFKA": "127.0.0.1:9092", variable: value}
    with pytest.raises(SettingsError):
        ServeSettings.from_args(_parse(), env)


def test_sigterm_while_the_broker_is_unreachable_stops_at_once(tmp_path: Path) -> None:
    """Held: While ``serve`` keeps trying an unreachable broker at start
    (``PIPELINE_STATE_KAFKA_STARTUP_TIMEOUT_SECONDS=30``), SIGTERM stops it within a second,
    status 0, no traceback."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pipeline_state._cli",
            "serve",
            "--kafka",
            "127.0.0.1:1",
            "--store",
            "memory://",
        ],
        env=serve_env(PIPELINE_STATE_KAFKA_STARTUP_TIMEOUT_SECONDS="30"),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines = StderrLines(process)
    try:
        # Retrying the broker: past the start-up, its signal handlers in place (a SIGTERM
        # sent after a fixed sleep came before them on a loaded machine: killed, -15).
        assert lines.wait_for("not reachable yet, retrying"), lines.text(0)
        assert process.poll() is None
        process.send_signal(signal.SIGTERM)
        started = time.monotonic()
        process.wait(timeout=10)
        assert time.monotonic() - started < 3.0
        stderr = lines.text()
        assert process.returncode == 0, stderr[-2000:]
        assert "Traceback" not in stderr
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


async def test_a_taken_http_port_is_one_line_and_status_1(
    tmp_path: Path, broker: LocalBroker, prefix: str
) -> None:
    """Held: ``--http`` on a port another process holds: "service failed: OSError: the HTTP
    server could not start on ...", status 1, no traceback."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = await asyncio.to_thread(
            run_serve,
            tmp_path,
            "--store",
            "memory://",
            "--group-id",
            f"{prefix}group",
            "--http",
            f"127.0.0.1:{port}",
            "--insecure-no-auth",
            kafka=broker.bootstrap,
            **{**FAST_ENV, "PIPELINE_STATE_SUMMARY": "off", "PIPELINE_STATE_LOG_FORMAT": "kv"},
            PIPELINE_STATE_TOPIC_PREFIX=prefix,
        )
    assert_clean_failure(result, (1,))
    assert "HTTP server could not start" in result.stderr


async def test_serve_with_upgrade_off_refuses_a_store_that_is_not_migrated(
    tmp_path: Path, broker: LocalBroker, prefix: str, producer: ProducerLike
) -> None:
    """Was a defect: ``PIPELINE_STATE_STORE_UPGRADE=0`` ("where migrations are a separate deployment
    step") on a store whose schema is not at this version's revision (here: never migrated;
    the deployment step has not run yet, or was rolled back) must stop ``serve`` at start with
    one line naming the revision found and the one needed (status 1), before it consumes
    anything. Observed: ``serve`` logs "ready", its relay logs "no such table: outbox" every
    second, and a valid inbound record fails with ``StoreError`` ("no such table"), which the
    consumer's policy classifies as *unexpected* (not transient): after 5 attempts the valid
    record is dead-lettered and its offset committed, so the orchestrator never applies it.
    Cause: ``open_on_new_engine`` (pipeline_state_sql/lane_store.py:151-158) skips
    ``create_or_upgrade`` and checks nothing when ``upgrade`` is false; fix: compare
    ``current_revision`` with ``head_revision`` there and raise a ``StoreError`` naming both."""
    store_url = f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}"
    serve = ServeProcess(
        broker.bootstrap,
        store_url,
        prefix,
        env={"PIPELINE_STATE_STORE_UPGRADE": "0"},
        log_file=tmp_path / "serve.log",
    ).start()
    try:
        started = time.monotonic()
        while serve.process is not None and serve.process.poll() is None:
            if serve.find(lambda r: r.get("msg") == "ready"):
                break
            if time.monotonic() - started > 40:
                break
            await asyncio.sleep(0.05)
        if serve.process is not None and serve.process.poll() is not None:
            # refused at start: the correct outcome, checked for one clear line
            assert serve.process.returncode == 1
            assert not serve.find(lambda r: "Traceback" in str(r.get("msg", "")))
            return
        envelopes = HuleEduEnvelopes()
        registration = envelopes.register("u1", items=2)
        await send_envelopes(producer, [registration], topic_prefix=prefix)
        await asyncio.sleep(8.0)
        dead = serve.find(lambda r: str(r.get("msg", "")).startswith("dead-lettered"))
        assert not dead, f"a valid record was dead-lettered: {dead[:1]}"
        raise AssertionError("serve came up ready on a store with no schema (STORE_UPGRADE=0)")
    finally:
        serve.close()
