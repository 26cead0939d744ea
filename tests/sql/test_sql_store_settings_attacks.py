"""Hostile or careless operator configuration: store URLs, the outbox lease and
the operator commands' numeric flags.

Contract (docs/operations.md, "Migrations" and "Operator commands"; the service README):
an unusable store URL or setting stops ``serve`` with status 2 and one line, an unreachable
store with status 1 and one line; an operator command's bad usage is status 2 and one line
on stderr; a password in a URL never appears in an error line or a log line; never a
traceback; a value accepted at start must work.

The tests whose docstrings name a defect were failing before its fix (found by an attack on
operator configuration), with tracebacks, values that failed later, or silence.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from pipeline_state_service import ServeSettings, SettingsError
from pipeline_state_service.cli import add_commands
from pipeline_state_sql import SqlSettingsError
from pipeline_state_sql import open_store as open_sql_store
from pipeline_state_sql.engine import check_store_url
from pipeline_state_sql.errors import translate

from pipeline_state import OutboxRelay, PipelineService, SystemClock
from pipeline_state.ports import OutboxMessage
from pipeline_state.testing import Envelopes
from tests.serve_process import assert_clean_failure, run_serve, serve_env

SECRET = "s3cretpw"
BIG = "1" + "0" * 400


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(dest="command"))
    return parser.parse_args(["serve", *argv])


def _cli(cwd: Path, *argv: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipeline_state._cli", *argv],
        env=serve_env(**env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=30,
    )


# -- store URLs -------------------------------------------------------------------------------


def test_a_store_url_whose_port_is_not_a_number_is_refused(tmp_path: Path) -> None:
    """``--store postgresql+asyncpg://u:PW@h:notaport/db``: SQLAlchemy's ``make_url`` raises
    ``ValueError`` (not ``ArgumentError``) for the port, and ``check_store_url``
    (pipeline_state_sql/engine.py:82-85) only catches ``ArgumentError``, so ``serve`` ends in a
    traceback, status 1. Expected: status 2, "the store URL is not a database URL" (the
    operator commands already say so for the same URL, exit 2). Fix: catch ``ValueError``
    too."""
    url = f"postgresql+asyncpg://u:{SECRET}@h:notaport/db"
    with pytest.raises(SqlSettingsError):
        check_store_url(url)
    result = run_serve(tmp_path, "--store", url, timeout=30)
    assert_clean_failure(result, (2,))
    assert SECRET not in result.stderr


def test_a_store_url_with_a_port_out_of_range_is_refused(tmp_path: Path) -> None:
    """``--store postgresql+asyncpg://u:PW@127.0.0.1:99999/db`` is accepted by
    ``check_store_url`` (engine.py:76-103 never looks at the port); opening it raises
    ``OverflowError: connect(): port must be 0-65535`` from the socket, which is neither an
    ``OSError`` nor a SQLAlchemy error (pipeline_state_sql/errors.py:45, ``DRIVER_ERRORS``), so
    ``serve`` prints a 135-line traceback (status 1) and so does ``outbox parked --store`` (a
    131-line traceback, status 1, where exit 2 or 4 is documented). Expected: refused when the
    URL is checked: status 2, one line."""
    url = f"postgresql+asyncpg://u:{SECRET}@127.0.0.1:99999/db"
    with pytest.raises(SettingsError):
        ServeSettings.from_args(_parse("--store", url), {"PIPELINE_STATE_KAFKA": "127.0.0.1:9092"})
    ops = _cli(tmp_path, "outbox", "parked", "--store", url)
    assert_clean_failure(ops, (2,))
    assert len(ops.stderr.strip().splitlines()) == 1
    assert SECRET not in ops.stderr


def test_a_password_given_as_a_query_parameter_is_hidden(tmp_path: Path) -> None:
    """asyncpg takes the password from the URL's query too
    (``postgresql+asyncpg://u@host/db?password=PW``); ``shown_url``
    (pipeline_state_service/stores.py:57, ``render_as_string(hide_password=True)``) only
    hides the password of the URL's user part, so ``serve`` logs "cannot open the store
    postgresql+asyncpg://u@127.0.0.1:1/db?password=s3cretpw: ..." (and the "starting" line
    would show it too). Expected: the secret never appears (mask ``password``, ``passfile``
    and similar query keys, or refuse a password in the query)."""
    result = run_serve(
        tmp_path, "--store", f"postgresql+asyncpg://u@127.0.0.1:1/db?password={SECRET}", timeout=30
    )
    assert_clean_failure(result, (1, 2))
    assert SECRET not in result.stderr + result.stdout


def test_a_database_that_never_answers_is_reported_with_a_reason() -> None:
    """A store URL pointing at a port that accepts connections and never answers: ``serve``
    gives up after asyncpg's 60 s connect timeout (held: bounded, status 1), but its one line
    is "cannot open the store postgresql+asyncpg://u:***@127.0.0.1:PORT/db: the database cannot
    be reached: " with nothing after the colon: ``translate`` (pipeline_state_sql/errors.py:82)
    formats ``{error}``, and ``str(TimeoutError())`` is empty. Expected: a reason (the error's
    type when its text is empty, "timed out")."""
    message = str(translate(TimeoutError()))
    assert not message.rstrip().endswith(":"), repr(message)


# -- the outbox lease ---------------------------------------------------------------------------


async def _published_with_lease(tmp_path: Path, lease: float) -> int:
    store = await open_sql_store(f"sqlite+aiosqlite:///{tmp_path / 'lease.db'}", lease=lease)
    try:
        sent: list[OutboxMessage] = []

        class Recording:
            async def publish(self, messages: Sequence[OutboxMessage]) -> Sequence[BaseException | None]:
                sent.extend(messages)
                return [None] * len(messages)

        clock = SystemClock()
        service = PipelineService(store, clock=clock)
        relay = OutboxRelay(store, Recording(), clock, lease_seconds=lease)
        await service.handle_message(*Envelopes().register("b1", items=1))
        for _ in range(20):
            await relay.run_once()
        return len(sent)
    finally:
        await store.close()


def test_an_outbox_lease_shorter_than_a_second_is_refused(tmp_path: Path) -> None:
    """``PIPELINE_STATE_OUTBOX_LEASE_SECONDS=0.0001`` is accepted (pipeline_state_sql/settings.py:57,
    ``gt=0``) and passed to the relay (``ServeSettings.outbox_lease_seconds``), but every row's
    lease has ended before the pass that would publish it, and the relay does not publish a
    row whose lease ended (pipeline_state/_relay.py:378): with a 0.1 ms lease not one row is
    ever published (20 passes, 0 rows; it logs "1 outbox rows not published: their lease ended
    before this pass" every pass, for ever). A lease must outlast a publish, which may take up
    to ``PIPELINE_STATE_KAFKA_REQUEST_TIMEOUT_MS`` (10 s). Expected: refused at start (a lease
    below the producer's request timeout, or below a sane floor, naming the variable), or
    rows still published."""
    env = {"PIPELINE_STATE_KAFKA": "127.0.0.1:9092", "PIPELINE_STATE_OUTBOX_LEASE_SECONDS": "0.0001"}
    try:
        settings = ServeSettings.from_args(_parse("--store", f"sqlite+aiosqlite:///{tmp_path / 's.db'}"), env)
    except SettingsError as exc:
        refused = str(exc)
    else:
        refused = ""
    if not refused:  # accepted: then the rows must still go out
        assert settings.outbox_lease_seconds is not None
        assert asyncio.run(_published_with_lease(tmp_path, settings.outbox_lease_seconds)) == 1
    else:
        assert "PIPELINE_STATE_OUTBOX_LEASE_SECONDS" in refused


# -- operator commands ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ("outbox", "parked", "--limit", BIG),
        ("runs", "stalled", "--limit", BIG),
        ("batch", "show", "b1", "--log-limit", BIG),
    ],
    ids=["parked", "stalled", "show"],
)
def test_a_400_digit_limit_is_one_line(tmp_path: Path, argv: tuple[str, ...]) -> None:
    """``--limit`` / ``--log-limit`` with a 400-digit number: ``in_range``
    (pipeline_state_service/ops/exits.py:123) calls ``math.isfinite(value)`` first, which
    raises ``OverflowError: int too large to convert to float`` for such an int, so the
    command prints a traceback (status 1). Expected: exit 2, "--limit must be from 1 to
    10000". Fix: ``if not low <= value <= high`` (which is already false for NaN and the
    infinities), as ``pipeline_state_http.settings._positive`` does."""
    result = _cli(tmp_path, *argv, "--store", f"sqlite+aiosqlite:///{tmp_path / 'none.db'}")
    assert_clean_failure(result, (2,))
    assert "must be from" in result.stderr


def _make_store(path: Path) -> str:
    url = f"sqlite+aiosqlite:///{path}"

    async def make() -> None:
        store = await open_sql_store(url)
        await store.close()

    asyncio.run(make())
    return url


def _reinject(tmp_path: Path, *options: str) -> subprocess.CompletedProcess[str]:
    """``dlq reinject`` of the outcome topic on a new SQLite store, with ``options``."""
    url = _make_store(tmp_path / "s.db")
    topic = "huleedu.els.batch.phase.outcome.v1"
    return _cli(
        tmp_path,
        "dlq",
        "reinject",
        "--topic",
        topic,
        *options,
        "--store",
        url,
        PIPELINE_STATE_KAFKA_STARTUP_TIMEOUT_SECONDS="0.5",
    )


def test_dlq_reinject_with_a_bad_second_bootstrap_entry_is_refused(tmp_path: Path) -> None:
    """``dlq reinject --kafka 127.0.0.1:1,127.0.0.1:notaport``: the command checks only that
    ``--kafka`` is set (ops/dlq.py:104) and hands the text to aiokafka, whose host parsing
    raises ``ValueError`` (a 40-line traceback, status 1). Expected: exit 2, one line."""
    result = _reinject(tmp_path, "--kafka", "127.0.0.1:1,127.0.0.1:notaport")
    assert_clean_failure(result, (2,))


def test_dlq_reinject_refuses_a_topic_prefix_serve_refuses(tmp_path: Path) -> None:
    """``dlq reinject --topic-prefix 'bad prefix!'``: ``serve`` refuses this prefix
    (``PIPELINE_STATE_TOPIC_PREFIX`` must be Kafka topic characters), the command takes it
    and goes to the broker (exit 4 "Unable to bootstrap" here; against a broker, a topic no
    serve ever wrote). Expected: exit 2 naming ``--topic-prefix``."""
    result = _reinject(tmp_path, "--kafka", "127.0.0.1:1", "--topic-prefix", "bad prefix!")
    assert_clean_failure(result, (2,))
    assert "--topic-prefix" in result.stderr


# -- held ----------------------------------------------------------------------------------------


def test_a_store_on_an_unused_port_fails_at_once_without_the_password(tmp_path: Path) -> None:
    """Held: ``--store postgresql+asyncpg://u:PW@127.0.0.1:1/db`` (nothing listens): status 1
    within seconds, one line, the password shown as ``***``."""
    started = time.monotonic()
    result = run_serve(tmp_path, "--store", f"postgresql+asyncpg://u:{SECRET}@127.0.0.1:1/db", timeout=30)
    assert time.monotonic() - started < 20
    assert_clean_failure(result, (1,))
    assert SECRET not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "u:***@" in result.stderr


@pytest.mark.parametrize(
    "argv",
    [
        ("runs", "stalled", "--older-than", "nan"),
        ("runs", "stalled", "--older-than", "-1"),
        ("runs", "stalled", "--older-than", BIG),  # a float: inf
        ("runs", "stalled", "--limit", "0"),
        ("outbox", "parked", "--limit", "-5"),
        ("batch", "show", "b1", "--log-limit", "-1"),
    ],
)
def test_operator_numbers_out_of_range_are_one_line(tmp_path: Path, argv: tuple[str, ...]) -> None:
    """Held: exit 2 and one line naming the option."""
    result = _cli(tmp_path, *argv, "--store", f"sqlite+aiosqlite:///{tmp_path / 'none.db'}")
    assert_clean_failure(result, (2,))
    assert len(result.stderr.strip().splitlines()) == 1
