"""Hostile input to the operator CLI (``pipeline-state batch|run|phase|outbox|dlq ...``) over a
SQLite store in ``tmp_path``.

docs/operations.md promises: "errors are one line on standard error; the exit code says what
happened: 0 done or already done, 1 refused by the engine, 2 bad usage or input, 3 not found,
4 store, broker or HTTP API unreachable", and ``ExitCode.USAGE`` covers "malformed id".

Were defects (fixed): option values that escaped as tracebacks (``dlq reinject --timeout
nan|inf``, an undecodable ``--run``) and malformed ids answered as "not found" (3) instead of
bad input (2). Held: lifecycle refusals, idempotent repeats recorded once with who asked."""

from __future__ import annotations

import traceback
from pathlib import Path
from typing import Any

import attrs
import pytest

from pipeline_state import PipelineService
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes
from tests.cli_kit import Cli, Ran, read, store_args

OUTCOMES = "huleedu.els.batch.phase.outcome.v1"


@attrs.frozen
class Db:
    url: str
    schema: str | None = None


@pytest.fixture
def db(tmp_path: Path) -> Db:
    """A SQLite store with ``act`` (an nlp run active), ``rdy`` (ready) and ``reg`` (registered,
    not provisioned)."""
    db = Db(f"sqlite+aiosqlite:///{tmp_path / 'state.db'}")
    env = HuleEduEnvelopes()

    async def seed(store: Any) -> None:
        service = PipelineService(store)
        for batch_id in ("act", "rdy", "reg"):
            await service.handle_message(*env.register(batch_id, items=2))
        for batch_id in ("act", "rdy"):
            await service.handle_message(*env.provisioned(batch_id, env.item_ids(batch_id, 2)))
        assert (await service.handle_message(*env.request("act", "nlp"))).label == "applied"

    read(db, seed)
    return db


@pytest.fixture
def cli(db: Db, capsys: pytest.CaptureFixture[str]) -> Cli:
    return Cli(capsys, store_args(db))


def _run(cli: Cli, *argv: str) -> Ran | str:
    """What the command ended with, or the traceback it escaped with."""
    try:
        return cli(*argv)
    except Exception:
        return traceback.format_exc(limit=3)


def _one_line_usage_error(ran: Ran | str) -> None:
    assert isinstance(ran, Ran), f"escaped as a traceback:\n{ran}"
    assert ran.code == 2, (ran.code, ran.err)
    assert ran.err.startswith("error: "), ran.err
    assert ran.err.count("\n") == 1, ran.err


def _log(db: Db, batch_id: str) -> list[Any]:
    async def work(store: Any) -> list[Any]:
        return list(await store.transitions(batch_id))

    return read(db, work)  # type: ignore[no-any-return]


# -- were defects (fixed) ----------------------------------------------------------------------------------


@pytest.mark.parametrize("timeout", ["nan", "inf"])
def test_dlq_reinject_refuses_a_nan_or_infinite_timeout_in_one_line(cli: Cli, timeout: str) -> None:
    """Was a defect (fixed): ``--timeout`` was checked with ``<= 0`` only: NaN passed it and reached
    ``int(patience * 1000)`` in the DLQ reader (ValueError), infinity too (OverflowError);
    neither is an error the command reports, so the operator gets a traceback. Every other
    number option refuses NaN and infinities as a usage error (``exits.in_range``)."""
    argv = ("--kafka", "127.0.0.1:1", "--topic", OUTCOMES, "--timeout", timeout, "--as", "al")
    ran = _run(cli, "dlq", "reinject", *argv)
    _one_line_usage_error(ran)


def test_run_cancel_refuses_an_undecodable_run_in_one_line(cli: Cli, db: Db) -> None:
    """Was a defect (fixed). ``--run $'\\xff'`` reaches Python as ``'\\udcff'``
    (surrogateescape). Every other id of the CLI refused a lone surrogate with one line (BATCH,
    --as, --event-id, --reason); ``--run`` was never checked and the event id derivation
    raised UnicodeEncodeError."""
    before = _log(db, "act")
    ran = _run(cli, "run", "cancel", "act", "--run", "\udcff", "--as", "al")
    _one_line_usage_error(ran)
    assert _log(db, "act") == before


@pytest.mark.parametrize(
    "argv",
    [
        ("batch", "show", "a\x1bb"),
        ("batch", "show", "\u202eb"),
        ("batch", "show", ""),
        ("batch", "archive", "r\x1bdy", "--as", "al"),
        ("run", "cancel", "act", "--run", "x" * 5000, "--as", "al"),
        ("outbox", "republish", "e\x1b", "--as", "al"),
    ],
    ids=["esc", "bidi", "empty", "archive-esc", "run-5000-chars", "republish-esc"],
)
def test_malformed_ids_are_bad_input_not_not_found(cli: Cli, argv: tuple[str, ...]) -> None:
    """A malformed id is bad input, exit 2 (``MEANINGS[USAGE]``; the HTTP API answers the same
    ids 422). Was a defect (fixed): too long or NUL ids were 2 (the SQL store's check), but an
    id with an escape or bidi control, an empty id or a 5000-character ``--run`` was looked up
    and answered 3."""
    _one_line_usage_error(_run(cli, *argv))


# -- held -------------------------------------------------------------------------------------


def test_lifecycle_refusals_exit_1_and_change_nothing(cli: Cli, db: Db) -> None:
    before = {b: _log(db, b) for b in ("act", "rdy", "reg")}
    cases = [
        (("batch", "archive", "act", "--as", "al"), 1),  # an active run
        (("batch", "archive", "reg", "--as", "al"), 1),  # not ready yet
        (("run", "cancel", "rdy", "--as", "al"), 1),  # no run at all
        (("run", "cancel", "reg", "--as", "al"), 1),
        (("phase", "retry", "act", "spellcheck", "--as", "al"), 1),  # a run is active
        (("phase", "retry", "reg", "spellcheck", "--as", "al"), 1),  # not ready
        (("phase", "retry", "rdy", "nlp", "--as", "al"), 1),  # spellcheck never completed
        (("run", "cancel", "nope", "--as", "al"), 3),
        (("phase", "retry", "rdy", "no_phase", "--as", "al"), 2),
        (("batch", "show", "\udcff"), 2),
    ]
    for argv, code in cases:
        ran = _run(cli, *argv)
        assert isinstance(ran, Ran), ran
        assert ran.code == code, (argv, ran.code, ran.out, ran.err)
    # denials are recorded as the inbox's answer (no moves); refusals write nothing
    for batch_id, rows in before.items():
        added = [r for r in _log(db, batch_id) if r not in rows]
        assert not [r for r in added if r.trigger in ("archive", "cancel", "cancel_run", "start_run")], added


def test_actions_repeated_by_another_operator_are_duplicates_logged_once(cli: Cli, db: Db) -> None:
    first = cli("run", "cancel", "act", "--as", "alice", "--reason", "stuck", "--json")
    again = cli("run", "cancel", "act", "--as", "bob", "--reason", "other", "--json")
    assert (first.code, again.code) == (0, 0), (first.err, again.err)
    assert first.json["result"] == "applied"
    assert (again.json["result"], again.json["original"]) == ("duplicate", "applied")
    assert again.json["requested_by"] == "alice"
    assert again.json["run_id"] == first.json["run_id"]
    cancels = [r for r in _log(db, "act") if r.entity == "run" and r.trigger == "cancel"]
    assert [(r.requested_by, r.note) for r in cancels] == [("alice", "stuck")]

    archived = [cli("batch", "archive", "rdy", "--as", who, "--json") for who in ("alice", "bob")]
    assert [a.code for a in archived] == [0, 0]
    rows = [r for r in _log(db, "rdy") if r.trigger == "archive"]
    assert [(r.requested_by, r.dest) for r in rows] == [("alice", "archived")]
    # a fresh key cannot archive twice: the lifecycle refuses it
    fresh = cli("batch", "archive", "rdy", "--as", "bob", "--event-id", "ticket-9")
    assert fresh.code == 1
    assert fresh.err.count("\n") == 1
    assert len([r for r in _log(db, "rdy") if r.trigger == "archive"]) == 1
    # nor run anything on the archived batch
    retry = cli("phase", "retry", "rdy", "spellcheck", "--as", "bob", "--json")
    assert retry.code == 1
    assert retry.json["result"] == "denied:batch_not_ready"


def test_numbers_and_names_out_of_range_are_usage_errors(cli: Cli) -> None:
    for argv in (
        ("runs", "stalled", "--older-than", "nan"),
        ("runs", "stalled", "--older-than", "inf"),
        ("runs", "stalled", "--limit", "0"),
        ("batch", "show", "act", "--log-limit", "-1"),
        ("outbox", "parked", "--limit", "100000"),
        ("run", "cancel", "act", "--as", " "),
        ("run", "cancel", "act", "--as", "al", "--reason", "\udcff"),
        ("run", "cancel", "act", "--as", "al", "--event-id", "a\nb"),
        ("dlq", "reinject", "--kafka", "127.0.0.1:1", "--topic", OUTCOMES, "--timeout", "-1", "--as", "al"),
        ("dlq", "reinject", "--kafka", "127.0.0.1:1", "--topic", "no.such.topic", "--as", "al"),
    ):
        _one_line_usage_error(_run(cli, *argv))
