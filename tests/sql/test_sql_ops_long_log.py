"""Operator commands on a batch whose transition log is long. Was a defect (found by a review
of the fix that made ``batch show`` print the newest log rows): a repeated action's answer
(who asked first, the run it moved) read the batch's oldest 10,000 log rows and, on a
longer log, named the wrong operator; ``batch show --log-limit 0`` said nothing was left
out of a log it did not show."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from pipeline_state_sql import SqlStore
from pipeline_state_sql.schema import TRANSITIONS

from pipeline_state import PipelineService
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes
from tests.cli_kit import Cli, Database, with_store

FILLER = 10_001  # more than SqlStore.transitions' default limit (10,000)


def _with_long_log(db: Database, batch_id: str, *, finished: bool = False) -> None:
    """``batch_id`` with an active ``nlp`` run (``finished``: run to its end) and more than
    10,000 older log rows (written straight into the table: a long-lived batch, without
    driving a thousand runs)."""

    async def seed(store: SqlStore) -> None:
        service, env = PipelineService(store), HuleEduEnvelopes()
        ids = env.item_ids(batch_id, 2)
        await service.handle_message(*env.register(batch_id, items=2))
        await service.handle_message(*env.provisioned(batch_id, ids))
        accepted = await service.handle_message(*env.request(batch_id, "nlp"))
        assert accepted.label == "applied"
        if finished:
            assert accepted.state is not None
            assert accepted.state.active_run is not None
            corr = accepted.state.active_run.correlation_id
            for phase in ("spellcheck", "nlp"):
                await service.handle_message(*env.outcome(batch_id, phase, corr, processed=ids))
            state = await store.load(batch_id)
            assert state is not None
            assert state.active_run is None
        at = datetime(2020, 1, 1, tzinfo=UTC)
        rows = [
            {
                "batch_id": batch_id,
                "entity": "batch",
                "name": batch_id,
                "trigger": "filler",
                "source": "a",
                "dest": "b",
                "run_id": None,
                "event_id": f"filler-{i}",
                "correlation_id": f"filler-{i}",
                "at": at,
                "note": None,
                "requested_by": None,
            }
            for i in range(FILLER)
        ]
        async with store.engine.begin() as conn:
            await conn.execute(TRANSITIONS.insert(), rows)

    asyncio.run(with_store(db, seed))


def test_a_repeated_cancel_names_who_asked_first_on_a_long_lived_batch(db: Database, cli: Cli) -> None:
    """tests/sql/test_sql_ops_cli.py holds that a run cancel repeated by another operator is
    the one action and "names who asked for it" (the first operator, from the transition log
    rows of its event). ops/results.py ``_logged`` reads those rows with
    ``transitions(batch_id)``, the *oldest* 10,000 rows of the batch, and filters them by
    event id; on a batch whose log is longer (the case the ``batch show`` fix was about) the
    rows of the action just taken are never among them, so the answer names the operator who
    repeated it. ``SqlStore.transitions`` takes ``event_id`` (the HTTP route's
    ``replay._log`` uses it for exactly this reason). Expected: ``requested_by`` alice."""
    _with_long_log(db, "b1")

    done = cli("run", "cancel", "b1", "--as", "alice", "--json")
    assert (done.code, done.json["result"], done.json["requested_by"]) == (0, "applied", "alice"), done.err
    by_bob = cli("run", "cancel", "b1", "--as", "bob", "--json")

    assert (by_bob.code, by_bob.json["result"]) == (0, "duplicate"), by_bob.err
    assert by_bob.json["requested_by"] == "alice", by_bob.json


def test_a_repeated_phase_retry_names_its_run_and_who_asked_on_a_long_lived_batch(
    db: Database, cli: Cli
) -> None:
    """The same for ``phase retry``: a repeat is answered as the one action (docs/operations.md
    "Idempotent": "the answer is ``duplicate`` with the first run's result"), its run taken
    from the log rows of the event (ops/results.py ``outcome_of``). On a log longer than
    10,000 rows those rows are not read, so the repeat answers with no run id and with the
    repeating operator as the one who asked. Expected: the retry's run id and alice."""
    _with_long_log(db, "b1", finished=True)

    done = cli("phase", "retry", "b1", "nlp", "--as", "alice", "--json")
    assert (done.code, done.json["result"]) == (0, "applied"), done.err
    assert done.json["run_id"], done.json
    by_bob = cli("phase", "retry", "b1", "nlp", "--as", "bob", "--json")

    assert (by_bob.code, by_bob.json["result"]) == (0, "duplicate"), by_bob.err
    assert (by_bob.json["run_id"], by_bob.json["requested_by"]) == (done.json["run_id"], "alice"), by_bob.json


def test_batch_show_with_log_limit_zero_says_the_log_was_cut(db: Database, cli: Cli) -> None:
    """``batch show`` now "says when older ones were left out (text, and ``transitions_cut`` in
    ``--json``)" (CHANGELOG, Unreleased). ``--log-limit 0`` is accepted (0 to 10,000) and
    leaves every row out, but ops/views.py ``show_batch`` reads nothing then and computes
    ``cut = len([]) > 0``: ``transitions_cut`` is false and the text says "transition log: 0
    row(s)" with no note, as for a batch that has no log. Expected: ``transitions_cut`` true
    on a batch whose log has rows."""
    _with_long_log(db, "b1")
    full = cli("batch", "show", "b1", "--json", "--log-limit", "5")
    assert full.code == 0, full.err
    assert full.json["transitions_cut"] is True  # the batch has more than 5 rows

    shown = cli("batch", "show", "b1", "--json", "--log-limit", "0")

    assert shown.code == 0, shown.err
    assert shown.json["transitions"] == []
    assert shown.json["transitions_cut"] is True, "rows were left out, and the output says none were"
