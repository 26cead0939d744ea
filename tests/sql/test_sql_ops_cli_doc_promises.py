"""Promises of docs/operations.md and docs/reference/cli.md that the operator commands did
not keep, on a real SQLite store. Each was a defect (found by an attack on the docs' claims):
an operator command migrated a SQLite store although ``PIPELINE_STATE_STORE_UPGRADE=0``;
``batch show`` printed the oldest rows of a long log (the operator's latest action left
out, the cut not said); a phase retry's reason was shown nowhere; an empty
``$PIPELINE_STATE_OPERATOR`` was taken as a name."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from pipeline_state_sql import create_engine, create_or_upgrade, current_revision, open_store

from pipeline_state import PipelineService
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes
from tests.cli_kit import Cli


async def _at_revision(url: str, revision: str | None) -> str | None:
    engine = create_engine(url)
    try:
        if revision is not None:
            await create_or_upgrade(engine, revision)
        return await current_revision(engine)
    finally:
        await engine.dispose()


def test_operator_command_with_upgrade_off_refuses_a_sqlite_store_behind_this_release(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/operations.md, Migrations: where migrations are a separate deployment step, open the
    store with ``upgrade=False`` (``PIPELINE_STATE_STORE_UPGRADE=0``); "``serve`` and the
    operator commands then check that the schema is at this version's revision and refuse
    otherwise with one line (``serve`` exits 1, an operator command 4)", and the operator
    commands "read ``serve``'s settings from the same environment". ``serve`` honours the
    setting on SQLite (tests/kafka/test_kafka_serve_startup_attacks.py); an operator command
    ignores it: a SQLite store one revision behind is migrated to head by a read-only
    ``batch show`` (under a running older ``serve``, where the deployment had said not to).
    Expected: exit 4, one line, the store left at its revision."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'state.db'}"
    assert asyncio.run(_at_revision(url, "0006")) == "0006"
    monkeypatch.setenv("PIPELINE_STATE_STORE_UPGRADE", "0")

    shown = Cli(capsys, ["--store", url])("batch", "show", "b1")

    assert asyncio.run(_at_revision(url, None)) == "0006", "the operator command migrated the store"
    assert shown.code == 4, (shown.code, shown.err)
    assert shown.err.count("\n") == 1


async def _long_lived_batch(url: str, batch_id: str, rows: int) -> int:
    """Drive ``batch_id`` through ``nlp`` runs (the first dispatched, later ones pruned) until
    its transition log holds more than ``rows`` rows; how many it holds."""
    store = await open_store(url)
    try:
        service, env = PipelineService(store), HuleEduEnvelopes()
        ids = env.item_ids(batch_id, 1)
        await service.handle_message(*env.register(batch_id, items=1))
        await service.handle_message(*env.provisioned(batch_id, ids))
        while True:
            for _ in range(20):
                assert (await service.handle_message(*env.request(batch_id, "nlp"))).label == "applied"
                state = await store.load(batch_id)
                assert state is not None
                if state.active_run is not None:
                    corr = state.active_run.correlation_id
                    for phase in ("spellcheck", "nlp"):
                        await service.handle_message(*env.outcome(batch_id, phase, corr, processed=ids))
            held = len(await store.transitions(batch_id, limit=10_000))
            if held > rows:
                return held
    finally:
        await store.close()


def test_batch_show_prints_the_operator_action_just_taken_on_a_long_lived_batch(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """docs/operations.md, "Recorded with who asked": each transition log row an action makes
    carries ``requested_by`` and "``batch show`` prints the log with it". On a batch whose
    log has grown past ``--log-limit``'s default (1000 rows: some ninety runs of a pipeline
    of two phases), ``batch show`` prints the *oldest* 1000 rows (``SqlStore.transitions``
    returns "the oldest ``limit`` rows", ops/views.py ``show_batch``): the archive the
    operator just made, with who asked, is not shown, and nothing says the log was cut
    ("transition log: 1000 row(s)"). Expected: the latest rows (or the cut said)."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'state.db'}"
    held = asyncio.run(_long_lived_batch(url, "b1", 1000))
    cli = Cli(capsys, ["--store", url])

    archived = cli("batch", "archive", "b1", "--as", "alice")
    assert archived.code == 0, archived.err
    shown = cli("batch", "show", "b1", "--json")

    assert shown.code == 0, shown.err
    by_alice = [(t["trigger"], t["requested_by"]) for t in shown.json["transitions"] if t["requested_by"]]
    assert by_alice == [("archive", "alice")], (held, shown.json["transitions"][-1])


async def _one_finished_run(url: str, batch_id: str) -> None:
    """``batch_id`` with finished ``nlp`` runs (a few: the smallest log :func:`_long_lived_batch` makes)."""
    await _long_lived_batch(url, batch_id, 0)


def test_the_reason_of_a_phase_retry_is_shown_by_batch_show(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """docs/reference/cli.md: ``phase retry --reason TEXT``, "why, at most 2000 characters
    (recorded on the new run)", and ``batch show`` shows "a batch: state, active run, history
    and transition log". The reason is stored (``Run.retry_reason``) but no operator view
    prints it: ``batch show`` (text or ``--json``) leaves it out of the run
    (ops/views.py ``_with_details`` adds ``requested_by`` and ``is_retry`` only) and, unlike
    a cancel's reason, it is not noted on any transition log row. Expected: the run's
    ``retry_reason`` in ``batch show --json`` (and its text)."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'state.db'}"
    asyncio.run(_one_finished_run(url, "b1"))
    cli = Cli(capsys, ["--store", url])

    retried = cli("phase", "retry", "b1", "nlp", "--as", "alice", "--reason", "model fixed")
    assert retried.code == 0, retried.err
    shown = cli("batch", "show", "b1", "--json")
    text = cli("batch", "show", "b1")

    assert shown.code == 0, shown.err
    assert shown.json["active_run"]["is_retry"] is True
    assert "model fixed" in shown.out, shown.json["active_run"]
    assert "model fixed" in text.out


def test_an_empty_operator_variable_falls_back_to_the_login_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/operations.md: ``requested_by`` is "``--as NAME``, else ``$PIPELINE_STATE_OPERATOR``,
    else the login name". With the variable set but empty (an env file's
    ``PIPELINE_STATE_OPERATOR=``) every action exits 2 blaming an option the operator never
    gave: "--as must be 1 to 200 characters" (ops/session.py ``operator_name`` takes ``""``
    as a name; ``$PIPELINE_STATE_STORE`` and ``$PIPELINE_STATE_KAFKA`` empty are treated as
    unset). Expected: the login name, as when the variable is unset."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'state.db'}"
    asyncio.run(_one_finished_run(url, "b1"))
    monkeypatch.setenv("PIPELINE_STATE_OPERATOR", "")
    monkeypatch.setenv("USER", "carol")
    monkeypatch.setenv("LOGNAME", "carol")

    archived = Cli(capsys, ["--store", url])("batch", "archive", "b1", "--json")

    assert archived.code == 0, archived.err
    assert archived.json["requested_by"] == "carol"
