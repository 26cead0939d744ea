"""The operator CLI (``pipeline-state batch show|run cancel|phase retry|batch archive|outbox
...``) against hostile input, run against a real store: SQLite files and PostgreSQL schemas.

Who asked and idempotency keys follow the wire's id rule, reasons the HTTP API's bound,
given keys are scoped to their action and batch, a retry's derived key follows the batch
into readiness, and every failure exits with its documented code and one line."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import attrs
import pytest
from pipeline_state_sql import SqlStore

from pipeline_state import PipelineService
from pipeline_state._commands import CancelRun, Command
from pipeline_state.ports import OutboxRow
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes
from tests.cli_kit import Cli, read, run_main, store_args, with_store

COMPLETED = "huleedu.batch.pipeline.completed.v1"


@attrs.frozen
class Db:
    url: str
    schema: str | None = None


def _seed(
    db: Any, *, active: Sequence[str] = (), ready: Sequence[str] = (), registered: Sequence[str] = ()
) -> None:
    """``active``: an nlp run; ``ready``: ready for pipelines; ``registered``: not provisioned."""

    async def seed(store: SqlStore) -> None:
        service, env = PipelineService(store), HuleEduEnvelopes()
        for batch_id in (*active, *ready, *registered):
            await service.handle_message(*env.register(batch_id, items=2))
        for batch_id in (*active, *ready):
            await service.handle_message(*env.provisioned(batch_id, env.item_ids(batch_id, 2)))
        for batch_id in active:
            assert (await service.handle_message(*env.request(batch_id, "nlp"))).label == "applied"

    read(db, seed)


def _provision(db: Any, batch_id: str) -> None:
    async def work(store: SqlStore) -> None:
        env = HuleEduEnvelopes()
        await PipelineService(store).handle_message(*env.provisioned(batch_id, env.item_ids(batch_id, 2)))

    read(db, work)


# -- who asked ------------------------------------------------------------------------------------

HOSTILE_NAMES = [
    "alice\n  2099-01-01T00:00:00+00:00  batch b1: archived -archive-> archived  by root",
    "alice\x1b[2K\rroot",  # ANSI: erase the line, print another name over it
    "alice\u202eeliforp",  # a bidi override turns the text after it around
]
HOSTILE_IDS = ["newline", "ansi", "bidi"]


def _forged(out: str) -> bool:
    return any(ch in out for ch in ("\x1b", "\u202e", "\r")) or any(
        line.startswith("  2099-") for line in out.splitlines()
    )


@pytest.mark.parametrize("actor", HOSTILE_NAMES, ids=HOSTILE_IDS)
def test_who_asked_with_control_characters_is_refused(db: Any, cli: Cli, actor: str) -> None:
    """Was a defect (fixed): ``--as`` refused only NUL, so a name holding a line break, an
    ANSI escape or a bidi override was recorded and ``batch show`` printed it raw: one
    operator could write a transition log line that looks like another's. Now ``--as``
    follows the wire's id rule (the HTTP API's ``user_id`` too): exit 2 with one line,
    nothing done."""
    _seed(db, active=["b1"])
    done = cli("run", "cancel", "b1", "--as", actor)
    assert done.code == 2, (done.code, done.err)
    assert done.out == ""
    assert done.err.count("\n") == 1
    assert done.err.startswith("error: --as ")
    shown = cli("batch", "show", "b1")
    assert shown.code == 0, shown.err
    bad = [line for line in shown.out.splitlines() if line.startswith("  2099-") or "alice" in line]
    assert not _forged(shown.out), (
        f"--as {actor!r} was accepted (exit {done.code}); batch show prints: {bad[:3]!r}"
    )
    assert cli("batch", "show", "b1", "--json").json["active_run"] is not None


@pytest.mark.parametrize("key", HOSTILE_NAMES, ids=HOSTILE_IDS)
def test_an_event_id_with_control_characters_is_refused(db: Any, cli: Cli, key: str) -> None:
    """Was a defect (fixed): ``--event-id`` refused only NUL, and the key became the event
    id printed on the transition log. Now it follows the wire's id rule: exit 2, one line,
    nothing done."""
    _seed(db, active=["b1"], ready=["b2"])
    for argv in (
        ("run", "cancel", "b1"),
        ("phase", "retry", "b2", "spellcheck"),
        ("batch", "archive", "b2"),
    ):
        ran = cli(*argv, "--as", "alice", "--event-id", key, "--json")
        assert ran.code == 2, (argv, ran.code, ran.err)
        assert ran.out == ""
        assert ran.err.count("\n") == 1
        assert ran.err.startswith("error: --event-id ")
    assert cli("batch", "show", "b1", "--json").json["active_run"] is not None
    b2 = cli("batch", "show", "b2", "--json").json
    assert (b2["status"], b2["active_run"]) == ("ready_for_pipeline_execution", None)


@pytest.mark.parametrize("actor", HOSTILE_NAMES, ids=HOSTILE_IDS)
def test_a_stored_name_with_control_characters_is_escaped_by_batch_show(
    db: Any, cli: Cli, actor: str
) -> None:
    """Was a defect (fixed): ``batch show`` printed the stored names raw, so a name a store
    already holds (written by an older release or another client) forged lines. Now every
    text line is printed with its control and bidi characters escaped (``\\x1b``)."""
    _seed(db, active=["b1"])

    async def cancel_as(store: SqlStore) -> None:
        command = Command(CancelRun("b1", user_id="x"), "evt-hostile", "corr-hostile", requested_by=actor)
        assert (await PipelineService(store).handle(command, topic="operator.CancelRun")).label == "applied"

    read(db, cancel_as)
    shown = cli("batch", "show", "b1")
    assert shown.code == 0, shown.err
    assert not _forged(shown.out), shown.out
    logged = [line for line in shown.out.splitlines() if "alice" in line]
    assert logged
    assert all(line.startswith("  ") and " -cancel" in line for line in logged), logged
    escaped = "".join(f"\\x{ord(c):02x}" if c in "\n\r\x1b" else c for c in actor).replace(
        "\u202e", "\\u202e"
    )
    assert f"by {escaped}" in shown.out, shown.out


# -- what is recorded ------------------------------------------------------------------------------


def test_a_retry_reason_longer_than_the_http_apis_bound_is_refused(db: Any, cli: Cli) -> None:
    """Was a defect (fixed): the HTTP API bounds a retry's reason to 2000 characters
    (``RetryPhaseBody``); the store route stored any size in the run, which stays in the
    batch's history for good (a 120,000-character reason was stored, exit 0). Now
    ``--reason`` over 2000 characters (or holding NUL) exits 2 with one line and nothing is
    stored; 2000 characters are taken."""
    _seed(db, active=["b1"])
    assert cli("run", "cancel", "b1", "--as", "alice").code == 0
    reason = "R" * 120_000  # fits in one argv string (Linux: 128 KiB)
    ran = cli("phase", "retry", "b1", "spellcheck", "--as", "alice", "--reason", reason, "--json")

    async def stored_reason(store: SqlStore) -> int:
        state = await store.load("b1")
        assert state is not None
        runs = [r for r in (state.active_run, *await store.history("b1")) if r is not None]
        return max(len(r.retry_reason or "") for r in runs)

    size = read(db, stored_reason)
    refused_or_bounded = ran.code == 2 or size <= 2000
    assert refused_or_bounded, f"a {size}-character retry reason was stored (exit {ran.code})"
    assert (ran.code, ran.out, size) == (2, "", 0), (ran.code, ran.err, size)
    assert ran.err.count("\n") == 1
    assert ran.err.startswith("error: --reason ")
    for bad in ("R" * 2001, "why\x00not"):
        again = cli("phase", "retry", "b1", "spellcheck", "--as", "alice", "--reason", bad)
        cancel = cli("run", "cancel", "b1", "--as", "alice", "--reason", bad)  # the same bound
        assert (again.code, cancel.code) == (2, 2), (again.err, cancel.err)
    taken = cli("phase", "retry", "b1", "spellcheck", "--as", "alice", "--reason", "R" * 2000, "--json")
    assert (taken.code, taken.json["result"]) == (0, "applied"), taken.err
    assert read(db, stored_reason) == 2000


# -- idempotency keys ------------------------------------------------------------------------------


def test_an_event_id_given_for_one_batch_is_scoped_to_its_batch_and_action(db: Any, cli: Cli) -> None:
    """Was a defect (fixed): ``--event-id`` was the event id itself, so a key reused for
    another batch or action (a ticket number covering two batches) found the first action in
    the inbox and the CLI answered "duplicate (already done: applied)", exit 0, while
    nothing was done to that batch. Now a given key is scoped: the event id derives from
    the action, what its command line names (batch, phase, run) and the key; a repeat of the
    same command with the same key is still a duplicate."""
    _seed(db, active=["b1", "b2"], ready=["b3"])
    first = cli("run", "cancel", "b1", "--event-id", "ticket-4711", "--as", "alice", "--json")
    assert (first.code, first.json["result"]) == (0, "applied")

    second = cli("run", "cancel", "b2", "--event-id", "ticket-4711", "--as", "alice", "--json")
    archive = cli("batch", "archive", "b3", "--event-id", "ticket-4711", "--as", "alice", "--json")

    b2 = cli("batch", "show", "b2", "--json").json
    b3 = cli("batch", "show", "b3", "--json").json
    b2_cancelled = b2["active_run"] is None
    b3_archived = b3["status"] == "archived"
    why = (
        f"b2: exit {second.code} {second.json['result']}/{second.json['original']}, active run still "
        f"{b2['active_run'] and b2['active_run']['run_id']}; b3: exit {archive.code} "
        f"{archive.json['result']}, status {b3['status']}"
    )
    assert second.code != 0 or b2_cancelled, why
    assert archive.code != 0 or b3_archived, why
    assert (second.code, second.json["result"], b2_cancelled) == (0, "applied", True)
    assert (archive.code, archive.json["result"], b3_archived) == (0, "applied", True)
    assert len({first.json["event_id"], second.json["event_id"], archive.json["event_id"]}) == 3
    again = cli("run", "cancel", "b1", "--event-id", "ticket-4711", "--as", "alice", "--json")
    assert (again.code, again.json["result"], again.json["original"]) == (0, "duplicate", "applied")
    assert again.json["event_id"] == first.json["event_id"]


def test_a_retry_denied_before_the_batch_was_ready_runs_once_it_is(db: Any, cli: Cli) -> None:
    """Was a defect (fixed): the derived key of ``phase retry`` was (batch, phase, last
    finished run). A denial was recorded in the inbox under it; when the batch became ready
    without a run finishing, the same command was a "duplicate" of the denial (exit 1)
    although the state now allowed it. Now the key also holds the batch's status while it
    is not ready: asked again once the batch is ready, the retry runs; a repeat in the same
    state is still a duplicate (of the denial before, of the retry after)."""
    _seed(db, registered=["b1"])
    early = cli("phase", "retry", "b1", "spellcheck", "--as", "alice", "--json")
    assert (early.code, early.json["result"]) == (1, "denied:batch_not_ready")
    repeat = cli("phase", "retry", "b1", "spellcheck", "--as", "alice", "--json")
    assert (repeat.code, repeat.json["result"], repeat.json["original"]) == (
        1,
        "duplicate",
        "denied:batch_not_ready",
    )
    _provision(db, "b1")
    assert cli("batch", "show", "b1", "--json").json["status"] == "ready_for_pipeline_execution"

    later = cli("phase", "retry", "b1", "spellcheck", "--as", "alice", "--json")
    assert later.code == 0, (
        f"exit {later.code}: {later.json['result']} of {later.json['original']} on a batch now "
        f"{later.json['status']}"
    )
    active = cli("batch", "show", "b1", "--json").json["active_run"]
    assert active is not None
    assert (later.json["result"], active["run_id"]) == ("applied", later.json["run_id"])
    again = cli("phase", "retry", "b1", "spellcheck", "--as", "alice", "--json")
    assert (again.code, again.json["result"], again.json["original"]) == (0, "duplicate", "applied")
    assert cli("batch", "show", "b1", "--json").json["active_run"]["run_id"] == active["run_id"]


# -- exit codes and one-line errors ----------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "foo://host/db",
        "memory://",
        "sqlite:///{tmp}/state.db",  # the sync driver
        "mysql+aiomysql://u@127.0.0.1/db",
    ],
)
def test_a_store_url_of_the_wrong_kind_exits_2(
    url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Was a defect (fixed): a URL naming an unsupported database or driver exited 1 ("refused
    by the engine": ``SqlSettingsError`` is a ``PipelineStateError``, which mapped to
    REFUSED). Now it is bad input: exit 2 with the adapter's one line."""
    (tmp_path / "state.db").write_bytes(b"")
    ran = Cli(capsys, [])("batch", "show", "b1", "--store", url.format(tmp=tmp_path), "--json")
    assert ran.err.count("\n") == 1, ran.err
    assert ran.err.startswith("error: "), ran.err
    assert ran.code == 2, f"exit {ran.code}: {ran.err.strip()}"
    assert ran.out == ""


def test_a_schema_option_on_sqlite_exits_2(sqlite_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Was a defect (fixed): ``--schema`` on a SQLite store exited 1 (refused by the engine).
    Now it is bad input: exit 2, one line."""
    _seed(Db(sqlite_url), ready=["b1"])
    ran = Cli(capsys, [])("batch", "show", "b1", "--store", sqlite_url, "--schema", "s1")
    assert ran.err.count("\n") == 1
    assert ran.code == 2, f"exit {ran.code}: {ran.err.strip()}"
    assert "schema" in ran.err
    assert ran.out == ""


def test_a_file_that_is_not_a_database_exits_4(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Was a defect (fixed): a SQLite URL naming a file that is not a database exited 1 (a
    refusal by the engine) with SQLAlchemy's text. Now the store cannot be used: exit 4,
    one line naming the store and the database's own words."""
    path = tmp_path / "notes.db"
    path.write_text("hello, not a database\n")
    ran = Cli(capsys, [])("batch", "show", "b1", "--store", f"sqlite+aiosqlite:///{path}", "--json")
    assert ran.err.count("\n") == 1, ran.err
    assert ran.out == ""
    assert ran.code in (2, 4), f"exit {ran.code}: {ran.err.strip()}"
    assert ran.code == 4, ran.err
    assert ran.err.startswith("error: cannot use the store "), ran.err
    assert "not a database" in ran.err
    assert "sqlalchemy" not in ran.err
    assert path.read_text() == "hello, not a database\n"


@pytest.mark.postgres
@pytest.mark.parametrize("what", ["database", "role"])
def test_a_missing_postgres_database_or_role_exits_4(
    postgres_url: str, what: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Was a defect (fixed): a PostgreSQL URL naming no database or role exited 1 with
    SQLAlchemy's text. Now exit 4 with one line naming the store (password hidden) and
    PostgreSQL's message."""
    from sqlalchemy.engine import make_url

    url = make_url(postgres_url)
    url = url.set(database="no_such_db_zz") if what == "database" else url.set(username="no_such_role_zz")
    ran = Cli(capsys, [])(
        "batch", "show", "b1", "--store", url.render_as_string(hide_password=False), "--json"
    )
    assert ran.err.count("\n") == 1, ran.err
    assert ran.code in (2, 4), f"exit {ran.code}: {ran.err.strip()}"
    assert ran.code == 4, ran.err
    assert ran.err.startswith("error: cannot use the store "), ran.err
    assert "does not exist" in ran.err
    assert "sqlalchemy" not in ran.err


def _bump_revision(db: Any, revision: str | None) -> None:
    from sqlalchemy.engine import make_url

    async def work() -> None:
        dsn = make_url(db.url).set(drivername="postgresql").render_as_string(hide_password=False)
        conn = await asyncpg.connect(dsn, timeout=10)
        try:
            table = f'"{db.schema}".pipeline_state_alembic_version'
            if revision is None:
                await conn.execute(f"DROP TABLE {table}")
            else:
                await conn.execute(f"UPDATE {table} SET version_num = $1", revision)
        finally:
            await conn.close()

    asyncio.run(work())


@pytest.mark.postgres
def test_a_postgres_store_of_a_newer_schema_revision_is_refused_unwritten(
    pg: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """Was a defect (fixed): serve refuses a PostgreSQL store that is not at this release's
    revision (``pipeline_state_service.stores``: ``check_revision``); the operator commands
    opened it with ``upgrade=False`` and no check, so an old CLI wrote into a newer release's
    schema (the cancel applied, exit 0). Now they check the revision too: exit 4, one line,
    nothing written."""
    _seed(pg, active=["b1"])
    _bump_revision(pg, "ffff_written_by_a_newer_release")
    cli = Cli(capsys, store_args(pg))

    done = cli("run", "cancel", "b1", "--as", "alice", "--json")

    async def active(store: SqlStore) -> bool:
        state = await store.load("b1")
        return state is not None and state.active_run is not None

    still_active = asyncio.run(with_store(pg, active, upgrade=False))
    answer = done.json["result"] if done.code == 0 else done.err.strip()
    why = f"exit {done.code} ({answer}); run still active: {still_active}"
    assert done.code != 0, why
    assert still_active, why
    assert done.err.count("\n") == 1
    assert done.code == 4, done.err
    assert "ffff_written_by_a_newer_release" in done.err, done.err
    assert cli("batch", "show", "b1").code == 4  # reads are refused too


@pytest.mark.postgres
def test_an_unmigrated_postgres_schema_exits_4(pg: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """Was a defect (fixed): an empty schema (never migrated) exited 1 ("refused by the
    engine") with SQLAlchemy's "(ProgrammingError) relation "batches" does not exist". Now
    the revision is checked on open: exit 4, one line saying the schema needs migrating."""
    cli = Cli(capsys, store_args(pg))
    ran = cli("batch", "show", "b1", "--json")
    assert ran.err.count("\n") == 1, ran.err
    assert ran.code in (2, 4), f"exit {ran.code}: {ran.err.strip()}"
    assert ran.code == 4, ran.err
    assert "revision None" in ran.err, ran.err
    assert "migrate" in ran.err, ran.err


@pytest.mark.postgres
def test_a_postgres_store_without_its_revision_is_refused_unwritten(
    pg: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """Was a defect (fixed), as a newer revision: a schema whose revision table is gone was
    written without a check. Now exit 4, one line, the run stays active."""
    _seed(pg, active=["b1"])
    _bump_revision(pg, None)
    done = Cli(capsys, store_args(pg))("run", "cancel", "b1", "--as", "alice", "--json")
    assert (done.code, done.out, done.err.count("\n")) == (4, "", 1), done.err

    async def active(store: SqlStore) -> bool:
        state = await store.load("b1")
        return state is not None and state.active_run is not None

    assert asyncio.run(with_store(pg, active, upgrade=False))


def test_a_closed_stdout_after_an_applied_action_stops_quietly(sqlite_url: str, tmp_path: Path) -> None:
    """Was a defect (fixed): ``pipeline-state run cancel ... | head -0`` applied the cancel,
    then printing its answer raised ``BrokenPipeError`` (an ``OSError``), which the operator
    wrapper reported as "error: [Errno 32] Broken pipe", exit 4 = "the store cannot be
    reached". Now it reaches the core CLI's handler, which stops quietly with 141 (as
    ``demo`` and ``diagram`` do)."""
    db = Db(sqlite_url)
    _seed(db, active=["b1"])
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "pipeline_state._cli",
                "run",
                "cancel",
                "b1",
                "--store",
                sqlite_url,
                "--as",
                "a",
            ],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
            env=os.environ | {"PYTHONPATH": os.pathsep.join(sys.path)},
        )
    finally:
        os.close(write_end)

    async def active(store: SqlStore) -> bool:
        state = await store.load("b1")
        return state is not None and state.active_run is not None

    assert not read(db, active)  # the cancel was applied
    why = (
        f"exit {proc.returncode}, stderr {proc.stderr!r}: an applied action reported as an unreachable store"
    )
    assert proc.returncode != 4, why
    assert "Broken pipe" not in proc.stderr, why
    assert (proc.returncode, proc.stderr) == (141, "")


# -- held by the CLI ------------------------------------------------------------------------------------


def test_malformed_and_missing_ids_exit_with_one_line(db: Any, cli: Cli) -> None:
    """Held: malformed ids (too long, NUL), unknown batches and phases and bad names exit
    2 or 3 with one line and nothing on standard output; nothing is done."""
    _seed(db, active=["b1"])
    cases = [
        (("batch", "show", "x" * 300), 2),
        (("batch", "show", "b\x00x"), 2),
        (("run", "cancel", "b\x00x", "--as", "a"), 2),
        (("outbox", "republish", "e\x00"), 2),
        (("batch", "show", "nope"), 3),
        (("batch", "archive", "nope", "--as", "a"), 3),
        (("phase", "retry", "nope", "spellcheck", "--as", "a"), 3),
        (("phase", "retry", "b1", "no_phase", "--as", "a"), 2),
        (("run", "cancel", "b1", "--as", "x" * 201), 2),
        (("run", "cancel", "b1", "--as", "a\x00b"), 2),
    ]
    for argv, code in cases:
        ran = cli(*argv, "--json")
        assert ran.code == code, (argv, ran.code, ran.err)
        assert ran.out == "", argv
        assert ran.err.count("\n") == 1, (argv, ran.err)
        assert ran.err.startswith("error: "), (argv, ran.err)
    assert cli("batch", "show", "b1", "--json").json["active_run"] is not None


def test_json_output_is_valid_and_stable(db: Any, cli: Cli) -> None:
    """Held: ``--json`` prints one valid document, the same for the same state."""
    _seed(db, active=["b1"], ready=["b2"])
    first = cli("batch", "show", "b1", "--json")
    second = cli("batch", "show", "b1", "--json")
    assert first.out == second.out
    json.loads(first.out)
    for argv in (
        ("runs", "stalled", "--older-than", "0"),
        ("outbox", "parked"),
        ("batch", "archive", "b2", "--as", "a"),
        ("batch", "archive", "b2", "--as", "a"),
        ("phase", "retry", "b1", "nlp", "--as", "a"),
    ):
        ran = cli(*argv, "--json")
        assert isinstance(ran.json, dict | list), argv


def test_concurrent_cancels_of_one_run_complete_it_once(db: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """Held: four operators' identical cancels at once (separate threads, separate engines):
    one cancels, the others are duplicates (or refused), and the run completes exactly once."""
    _seed(db, active=["b1"])
    args = store_args(db)
    codes: list[int] = []
    gate = threading.Barrier(4)

    def one(name: str) -> None:
        gate.wait(timeout=30)
        codes.append(run_main(["run", "cancel", "b1", "--as", name, *args]))

    threads = [threading.Thread(target=one, args=(f"op{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    capsys.readouterr()
    assert len(codes) == 4, codes
    assert all(c in (0, 1) for c in codes), codes

    async def completions(store: SqlStore) -> tuple[int, int]:
        rows = await _all_rows(store)
        state = await store.load("b1")
        assert state is not None
        return sum(1 for r in rows if r.message.topic == COMPLETED), len(await store.history("b1"))

    assert read(db, completions) == (1, 1)


async def _all_rows(store: SqlStore) -> list[OutboxRow]:
    now = datetime.now(UTC) + timedelta(days=1)
    rows: list[OutboxRow] = []
    while claimed := await store.claim(now, limit=100):
        await store.mark_published([row.id for row in claimed], now)
        rows += claimed
    return rows


def test_cancel_racing_the_last_outcome_completes_the_run_once(
    db: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """Held: the CLI's cancel and the service's final outcomes race on several batches: each
    run completes exactly once (cancelled or finished), and no batch is left processing."""
    batches = [f"r{i}" for i in range(4)]
    _seed(db, active=batches)

    async def corr(store: SqlStore) -> dict[str, str]:
        out = {}
        for b in batches:
            state = await store.load(b)
            assert state is not None
            assert state.active_run is not None
            out[b] = state.active_run.correlation_id
        return out

    correlations = read(db, corr)
    args = store_args(db)
    env = HuleEduEnvelopes()

    def outcomes() -> None:
        async def work(store: SqlStore) -> None:
            service = PipelineService(store)
            for b in batches:
                ids = env.item_ids(b, 2)
                await service.handle_message(*env.outcome(b, "spellcheck", correlations[b], processed=ids))
                await service.handle_message(*env.outcome(b, "nlp", correlations[b], processed=ids))

        read(db, work)

    def cancels() -> None:
        for b in batches:
            run_main(["run", "cancel", b, "--as", "ops", *args])

    threads = [threading.Thread(target=outcomes), threading.Thread(target=cancels)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=180)
    capsys.readouterr()

    async def check(store: SqlStore) -> None:
        rows = await _all_rows(store)
        for b in batches:
            state = await store.load(b)
            assert state is not None
            assert state.status.value == "ready_for_pipeline_execution", (b, state.status)
            assert len(await store.history(b)) == 1, b
            done = [
                r for r in rows if r.message.topic == COMPLETED and r.message.value["data"]["batch_id"] == b
            ]
            assert len(done) == 1, (b, len(done))

    read(db, check)


async def _park_all(store: SqlStore) -> list[OutboxRow]:
    now = datetime.now(UTC)
    parked: list[OutboxRow] = []
    while rows := await store.claim(now, limit=100):
        for row in rows:
            await store.mark_failed(
                row.id, "broker said no", now, retry_at=now + timedelta(hours=1), park=True
            )
        parked += rows
    return parked


def test_republishing_a_parked_row_twice_delivers_it_once(
    db: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """Held: three operators republish one parked row at once: each exits 0, the row is
    delivered once, and a later republish finds nothing parked."""
    _seed(db, active=["b1"])
    parked = read(db, _park_all)
    spell = next(r for r in parked if "spellcheck" in r.message.topic).message.event_id
    args = store_args(db)
    codes: list[int] = []
    gate = threading.Barrier(3)

    def one(name: str) -> None:
        gate.wait(timeout=30)
        codes.append(run_main(["outbox", "republish", spell, "--as", name, *args]))

    threads = [threading.Thread(target=one, args=(f"op{i}",)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    capsys.readouterr()
    assert codes == [0, 0, 0], codes

    async def relay_and_again(store: SqlStore) -> list[str]:
        return [r.message.event_id for r in await _all_rows(store)]

    assert read(db, relay_and_again) == [spell]  # delivered once
    again = Cli(capsys, args)("outbox", "republish", spell, "--as", "late", "--json")
    assert (again.code, again.json["republished"]) == (0, [])
    assert read(db, relay_and_again) == []


def test_a_cancel_reason_is_recorded(db: Any, cli: Cli) -> None:
    """Was a defect (fixed): ``run cancel --reason TEXT`` ("why, recorded on the run") was
    dropped by the engine: it was in no state, run, transition log row or outbox row. It is
    now the note of the run's ``cancel`` row in the transition log, which ``batch show``
    prints."""
    _seed(db, active=["b1"])
    marker = "worker-7-stuck-since-monday"
    done = cli("run", "cancel", "b1", "--as", "alice", "--reason", marker, "--json")
    assert (done.code, done.json["result"]) == (0, "applied"), done.err
    shown = cli("batch", "show", "b1", "--json")
    assert shown.code == 0
    cancels = [t for t in shown.json["transitions"] if t["entity"] == "run" and t["trigger"] == "cancel"]
    assert [(t["note"], t["requested_by"]) for t in cancels] == [(marker, "alice")]
    text = cli("batch", "show", "b1")
    assert marker in text.out
