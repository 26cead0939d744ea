"""Operator commands (issue 15.3) against a real store: each goes through the service (inbox,
``decide``, transition log with who asked), is idempotent, and answers with its exit code,
``--json`` for scripts and one-line errors."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pipeline_state_service.ops.keys import cancel_key
from pipeline_state_sql import SqlStore

from pipeline_state import PipelineService
from pipeline_state.ports import OutboxRow
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes
from tests.cli_kit import Cli, Database, read, with_store


async def _ready(service: PipelineService, env: HuleEduEnvelopes, batch_id: str) -> None:
    await service.handle_message(*env.register(batch_id, items=2))
    await service.handle_message(*env.provisioned(batch_id, env.item_ids(batch_id, 2)))


def _seed(db: Database, *, active: Sequence[str] = (), ready: Sequence[str] = ()) -> None:
    """Drive batches through the real service: ``active`` get an ``nlp`` run, ``ready`` wait."""

    async def seed(store: SqlStore) -> None:
        service, env = PipelineService(store), HuleEduEnvelopes()
        for batch_id in (*active, *ready):
            await _ready(service, env, batch_id)
        for batch_id in active:
            assert (await service.handle_message(*env.request(batch_id, "nlp"))).label == "applied"

    asyncio.run(with_store(db, seed))


def test_batch_show_prints_state_active_run_history_and_transition_log(db: Database, cli: Cli) -> None:
    _seed(db, active=["b1"])

    shown = cli("batch", "show", "b1", "--json")

    assert shown.code == 0, shown.err
    doc = shown.json
    assert doc["status"] == "processing_pipelines"
    assert doc["active_run"]["pipeline_name"] == "nlp"
    assert doc["active_run"]["phases"] == {"spellcheck": "dispatch_initiated", "nlp": "pending_dependencies"}
    assert [p["inputs"] for p in doc["active_run"]["phase_details"]] == [2, 0]
    assert doc["history"] == []
    triggers = [(t["entity"], t["trigger"]) for t in doc["transitions"]]
    assert ("batch", "start_run") in triggers
    assert all(t["requested_by"] is None for t in doc["transitions"])  # nobody asked: messages
    text = cli("batch", "show", "b1")
    assert text.code == 0
    assert text.out.startswith("batch b1  processing_pipelines")
    assert "transition log:" in text.out

    missing = cli("batch", "show", "nope")
    assert missing.code == 3
    assert missing.out == ""
    assert missing.err.count("\n") == 1
    assert "nope" in missing.err


def test_run_cancel_is_decided_logged_with_who_asked_and_idempotent(db: Database, cli: Cli) -> None:
    _seed(db, active=["b1"], ready=["b2"])
    run_id = cli("batch", "show", "b1", "--json").json["active_run"]["run_id"]

    wrong = cli("run", "cancel", "b1", "--run", "not-this-one", "--as", "alice")
    assert wrong.code == 3
    assert "not the active run" in wrong.err

    done = cli("run", "cancel", "b1", "--as", "alice", "--reason", "stuck worker", "--json")
    assert done.code == 0, done.err
    assert done.json["result"] == "applied"
    assert done.json["run_id"] == run_id
    assert done.json["status"] == "ready_for_pipeline_execution"
    assert done.json["requested_by"] == "alice"

    doc = cli("batch", "show", "b1", "--json").json
    assert doc["history"][-1]["final_status"] == "cancelled"
    asked = [t for t in doc["transitions"] if t["event_id"] == done.json["event_id"]]
    assert asked
    assert {t["requested_by"] for t in asked} == {"alice"}
    assert ("batch", "cancel_run") in {(t["entity"], t["trigger"]) for t in asked}

    again = cli("run", "cancel", "b1", "--as", "alice", "--json")
    assert again.code == 0
    assert again.json["result"] == "duplicate"
    assert again.json["original"] == "applied"
    assert again.json["event_id"] == done.json["event_id"]
    assert len(cli("batch", "show", "b1", "--json").json["transitions"]) == len(doc["transitions"])
    # Repeated by someone else: still the one action, and it names who asked for it (found
    # by an attack: the answer named the operator who repeated it, the log the first).
    by_bob = cli("run", "cancel", "b1", "--as", "bob", "--json")
    assert (by_bob.code, by_bob.json["result"]) == (0, "duplicate")
    assert by_bob.json["requested_by"] == "alice"

    idle = cli("run", "cancel", "b2", "--as", "alice")
    assert idle.code == 1
    assert idle.err.startswith("error: ")
    assert idle.err.count("\n") == 1


def test_phase_retry_starts_a_run_as_the_operator_and_a_repeat_is_a_duplicate(
    db: Database, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    _seed(db, active=["b1"], ready=["b2"])
    assert cli("run", "cancel", "b1", "--as", "alice").code == 0
    monkeypatch.setenv("PIPELINE_STATE_PHASE_DEADLINES", "spellcheck=77")  # as serve is configured

    retried = cli("phase", "retry", "b1", "spellcheck", "--as", "bob", "--reason", "fixed", "--json")
    assert retried.code == 0, retried.err
    assert retried.json["result"] == "applied"
    doc = cli("batch", "show", "b1", "--json").json
    active = doc["active_run"]
    assert active["run_id"] == retried.json["run_id"]
    assert (active["requested_by"], active["is_retry"]) == ("bob", True)
    assert list(active["phases"]) == ["spellcheck"]
    (phase,) = active["phase_details"]
    dispatched, deadline = (datetime.fromisoformat(phase[k]) for k in ("dispatched_at", "deadline_at"))
    assert (deadline - dispatched).total_seconds() == 77  # serve's deadline, not the default
    logged = {t["requested_by"] for t in doc["transitions"] if t["event_id"] == retried.json["event_id"]}
    assert logged == {"bob"}

    again = cli("phase", "retry", "b1", "spellcheck", "--as", "bob", "--json")
    assert (again.code, again.json["result"], again.json["original"]) == (0, "duplicate", "applied")
    assert cli("batch", "show", "b1", "--json").json["active_run"]["run_id"] == active["run_id"]

    denied = cli("phase", "retry", "b2", "nlp", "--as", "bob", "--json")  # spellcheck never ran
    assert denied.code == 1
    assert denied.json["result"] == "denied:dependencies_not_completed"
    assert cli("phase", "retry", "b2", "nlp", "--as", "bob").code == 1  # the repeat answers the same

    unknown = cli("phase", "retry", "b2", "no_such_phase")
    assert unknown.code == 2
    assert "no_such_phase" in unknown.err
    monkeypatch.setenv("PIPELINE_STATE_PHASE_DEADLINES", "no_such_phase=5")
    misconfigured = cli("phase", "retry", "b2", "spellcheck")
    assert misconfigured.code == 2
    assert "PIPELINE_STATE_PHASE_DEADLINES" in misconfigured.err


def test_batch_archive_is_terminal_once_and_refused_while_processing(db: Database, cli: Cli) -> None:
    _seed(db, active=["b1"], ready=["b2"])

    busy = cli("batch", "archive", "b1", "--as", "carol")
    assert busy.code == 1
    assert "archive" in busy.err

    done = cli("batch", "archive", "b2", "--as", "carol", "--json")
    assert done.code == 0, done.err
    assert (done.json["result"], done.json["status"]) == ("applied", "archived")
    rows = [t for t in cli("batch", "show", "b2", "--json").json["transitions"] if t["trigger"] == "archive"]
    assert [(r["dest"], r["requested_by"]) for r in rows] == [("archived", "carol")]

    again = cli("batch", "archive", "b2", "--as", "carol", "--json")
    assert (again.code, again.json["result"]) == (0, "duplicate")
    assert cli("batch", "archive", "nope").code == 3


def test_who_asks_comes_from_the_environment_and_event_ids_can_be_given(
    db: Database, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    _seed(db, active=["b1"])
    monkeypatch.setenv("PIPELINE_STATE_OPERATOR", "on-call")

    done = cli("run", "cancel", "b1", "--event-id", "ticket-4711", "--json")
    # The given key is scoped to the action and the batch (tests/sql/test_cli_ops_hostile.py).
    scoped = cancel_key("ticket-4711", "b1", None, "any run")
    assert (done.code, done.json["event_id"], done.json["requested_by"]) == (0, scoped, "on-call")
    again = cli("run", "cancel", "b1", "--event-id", "ticket-4711", "--json")
    assert (again.code, again.json["result"], again.json["original"]) == (0, "duplicate", "applied")
    assert again.json["event_id"] == scoped
    rows = cli("batch", "show", "b1", "--json").json["transitions"]
    assert {t["requested_by"] for t in rows if t["event_id"] == scoped} == {"on-call"}

    assert cli("run", "cancel", "b1", "--as", "").code == 2
    unknown_profile = cli("batch", "show", "b1", "--profile", "no_such_module:PROFILE")
    assert unknown_profile.code == 2
    assert "no_such_module" in unknown_profile.err
    assert cli("run", "cancel", "b1", "--event-id", "x" * 300).code == 2


async def _park_commands(store: SqlStore) -> list[OutboxRow]:
    """Have a relay give up on every pending row: they are parked with their last error."""
    now = datetime.now(UTC)
    parked: list[OutboxRow] = []
    while rows := await store.claim(now, limit=100):  # one row per key at a time: order per key
        for row in rows:
            await store.mark_failed(
                row.id, "broker said no", now, retry_at=now + timedelta(hours=1), park=True
            )
        parked += rows
    return parked


def test_outbox_parked_rows_are_listed_and_republished_through_the_engine(db: Database, cli: Cli) -> None:
    _seed(db, active=["b1"])
    parked = read(db, _park_commands)
    spell = next(r for r in parked if "spellcheck" in r.message.topic)

    listed = cli("outbox", "parked", "--json")
    assert listed.code == 0, listed.err
    by_id = {r["event_id"]: r for r in listed.json}
    assert set(by_id) == {r.message.event_id for r in parked}
    assert by_id[spell.message.event_id]["batch_id"] == "b1"
    assert by_id[spell.message.event_id]["last_error"] == "broker said no"

    done = cli("outbox", "republish", spell.message.event_id, "--as", "dave", "--json")
    assert done.code == 0, done.err
    (outcome,) = done.json["republished"]
    assert (outcome["batch_id"], outcome["result"], outcome["requested_by"]) == ("b1", "applied", "dave")

    async def rows(store: SqlStore) -> list[OutboxRow]:
        return await store.outbox_rows([spell.message.event_id])

    (row,) = read(db, rows)
    assert (row.parked, row.attempts, row.published_at) == (False, 0, None)  # queued for the relay
    logged = [
        t for t in cli("batch", "show", "b1", "--json").json["transitions"] if t["requested_by"] == "dave"
    ]
    assert [(t["trigger"], t["source"], t["dest"]) for t in logged] == [
        ("republish_outbox", "processing_pipelines", "processing_pipelines")
    ]
    assert spell.message.event_id not in {r["event_id"] for r in cli("outbox", "parked", "--json").json}

    again = cli("outbox", "republish", spell.message.event_id, "--as", "dave", "--json")
    assert again.code == 0
    assert again.json == {"republished": [], "not_parked": [spell.message.event_id]}

    unknown = cli("outbox", "republish", "no-such-event")
    assert unknown.code == 3
    assert "no-such-event" in unknown.err


def test_runs_stalled_and_its_old_name(db: Database, cli: Cli) -> None:
    _seed(db, active=["b1"], ready=["b2"])

    for words in (("runs", "stalled"), ("stalled",)):
        ran = cli(*words, "--older-than", "0", "--json")
        assert ran.code == 0, ran.err
        assert [r["batch_id"] for r in ran.json] == ["b1"]
    assert "no run without progress" in cli("runs", "stalled").out
    assert cli("runs", "stalled", "--older-than", "-1").code == 2


def test_usage_errors_unreachable_stores_and_version(
    tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    cli = Cli(capsys, [])
    missing = cli("batch", "show", "b1", "--store", f"sqlite+aiosqlite:///{tmp_path / 'absent.db'}")
    assert missing.code == 4
    assert "no SQLite store" in missing.err
    assert not (tmp_path / "absent.db").exists()  # never creates an empty store
    down = cli("batch", "show", "b1", "--store", "postgresql+asyncpg://root@127.0.0.1:1/nowhere")
    assert down.code == 4
    assert down.err.count("\n") == 1
    assert cli("batch", "show", "b1", "--store", "not a url").code == 2
    no_store = cli("run", "cancel", "b1")
    assert (no_store.code, no_store.err.count("\n")) == (2, 1)
    bad_option = cli("run", "cancel", "b1", "--no-such-option")
    assert bad_option.code == 2
    assert bad_option.err.count("\n") == 1
    for words in ((), ("batch",), ("batch", "show"), ("outbox", "republish"), ("dlq", "reinject"), ("demo",)):
        version = cli(*words, "--version")
        assert (version.code, version.out.strip()) == (0, "pipeline-state 0.1.0.dev0"), words


def test_a_store_url_with_a_password_is_never_shown_with_it(
    tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    # Before: a URL that did not parse was echoed whole (password included) and one with a
    # port that is not a number escaped as a traceback; the password of a server that was
    # down did not show, which this keeps checking.
    cli = Cli(capsys, [])
    for url in (
        "postgres ql://admin:S3cretPw@127.0.0.1/db",  # a typo in the scheme
        "postgresql+asyncpg://admin:S3cretPw@127.0.0.1:notaport/db",
        "postgresql+asyncpg://admin:S3cretPw@127.0.0.1:1/nowhere",  # parses; nobody listens
    ):
        for json_out in ((), ("--json",)):
            ran = cli("batch", "show", "b1", "--store", url, *json_out)
            assert ran.code in (2, 4), ran.err
            assert ran.err.count("\n") == 1, ran.err
            assert "S3cretPw" not in ran.out + ran.err
    typo = cli("batch", "show", "b1", "--store", "postgres ql://admin:S3cretPw@127.0.0.1/db")
    assert typo.code == 2
    assert "--store: not a database URL: postgres ql://..." in typo.err


@pytest.mark.parametrize(
    "words",
    [
        ("runs", "stalled", "--older-than", "nan"),
        ("runs", "stalled", "--older-than", "inf"),
        ("runs", "stalled", "--older-than", "1e11"),
        ("runs", "stalled", "--limit", "99999999999999999999"),
        ("outbox", "parked", "--limit", "99999999999999999999"),
        ("batch", "show", "b1", "--log-limit", "99999999999999999999"),
    ],
)
def test_numbers_out_of_range_are_usage_errors(db: Database, cli: Cli, words: tuple[str, ...]) -> None:
    # Found by an attack: NaN escaped as a traceback; infinity, 1e11 seconds and limits past
    # 64 bits reached the driver, which refused them as data: exit 1 ("refused by the
    # engine") with the driver's words ("query argument $1", "SQLite INTEGER").
    _seed(db, active=["b1"])
    ran = cli(*words, "--json")
    assert ran.code == 2, ran.err
    assert ran.err.count("\n") == 1
    assert ran.err.startswith(f"error: {words[-2]} must be from ")
    assert ran.out == ""
