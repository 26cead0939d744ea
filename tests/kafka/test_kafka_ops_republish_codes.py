"""Found by an attack: ``outbox republish`` and ``batch archive`` answers while ``serve`` runs,
on SQLite and PostgreSQL.

Was a defect (fixed; the test failed before): an id over 200 characters given to ``outbox
republish`` or ``batch archive`` exited 1 (refused) where the docs give 2 for a malformed id;
the store's ``RejectedDataError`` now maps to exit 2.

Held: unknown, mixed and published ids give the documented exit codes and JSON, and serve's
relay publishes a re-queued row once.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
from ops_kit import COMPLETED, Db, cli, copies, row_of, seed_completed_and_parked, serving, store_of
from pipeline_state_kafka.testing import Collector, LocalBroker

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(120)]


# ---------------------------------------------------------------------------------------------


async def test_unknown_mixed_and_published_ids_exit_codes_and_json(
    broker: LocalBroker, prefix: str, tmp_path: Path, db: Db
) -> None:
    """Exit codes of docs/reference/cli.md while serve runs: an unknown id is 3 (one line on
    stderr, nothing on stdout) and a mix of a parked and an unknown id does nothing at all
    (the parked row stays parked, no log row); a published row is ``not_parked`` (exit 0);
    the same id given twice is one row, applied as the operator who asked (``--json``, the
    transition log), and the relay publishes it once."""
    completions = await seed_completed_and_parked(db, ["u1"])
    cid = completions["u1"]
    async with (
        serving(broker, db, prefix, tmp_path),
        Collector(broker.bootstrap, [COMPLETED], topic_prefix=prefix) as out,
    ):
        unknown = str(uuid.uuid4())
        missing = await cli(db, "outbox", "republish", unknown, "--json")
        assert (missing.code, missing.out) == (3, ""), missing
        assert missing.err.count("\n") == 1
        assert unknown in missing.err
        mixed = await cli(db, "outbox", "republish", cid, unknown, "--json")
        assert mixed.code == 3, mixed
        row = await row_of(db, cid)
        assert row.parked
        async with store_of(db) as store:
            log = await store.transitions("u1")
        assert not [t for t in log if t.trigger == "republish_outbox"]
        await asyncio.sleep(0.5)
        assert copies(out, cid) == 0  # parked: the relay leaves it alone
        twice = await cli(db, "outbox", "republish", cid, cid, "--json", actor="alice")
        assert twice.code == 0, twice
        (outcome,) = twice.json["republished"]
        assert (outcome["batch_id"], outcome["result"], outcome["requested_by"]) == ("u1", "applied", "alice")
        assert twice.json["not_parked"] == []
        async with store_of(db) as store:
            log = await store.transitions("u1")
        assert [(t.trigger, t.requested_by) for t in log if t.trigger == "republish_outbox"] == [
            ("republish_outbox", "alice")
        ]
        await out.wait_for(lambda c: copies(c, cid) >= 1, within=20, what="the completion")
        for _ in range(100):
            if (await row_of(db, cid)).published_at is not None:
                break
            await asyncio.sleep(0.1)
        published = await cli(db, "outbox", "republish", cid, "--json")
        assert (published.code, published.json) == (0, {"republished": [], "not_parked": [cid]})
        await asyncio.sleep(1.5)
        assert copies(out, cid) == 1


async def test_an_oversized_id_exits_2(db: Db) -> None:
    """Was a defect, fixed.

    docs/reference/cli.md: exit 2 = "usage or bad input: unknown option, malformed id";
    ``--event-id`` of 300 characters is exit 2 (tests/sql/test_sql_ops_cli.py).

    Expected: ``outbox republish <301 characters>`` (and ``batch archive <301 characters>``)
    exit 2.
    Before the fix: exit 1 ("denied or refused by the engine"), "error: the store rejected the data:
    event id is 301 characters long, over 200": the store's ``RejectedDataError`` (a
    ``BadCommandError``) maps to REFUSED in adapters/pipeline_state_service/ops/exits.py
    ``exit_code_of``."""
    ran = await cli(db, "outbox", "republish", "e" * 301)
    archive = await cli(db, "batch", "archive", "b" * 301)  # the same for a batch id
    assert "Traceback" not in ran.err + archive.err
    assert (ran.code, archive.code) == (2, 2), (ran.code, ran.err, archive.code, archive.err)
