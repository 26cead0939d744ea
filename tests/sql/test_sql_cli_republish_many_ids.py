"""``pipeline-state outbox republish EVENT_ID...`` with many ids at once (a script feeding it
the ids ``outbox parked --json`` listed, a runaway ``xargs``): more than ``--limit`` takes is a
usage error, before the store. Was a defect (found by an attack on the operator commands):
on PostgreSQL, exit 4 ("unreachable") from the driver's limit of 32,767 arguments."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from pipeline_state_sql import SqlStore

from pipeline_state import PipelineService
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes
from tests.cli_kit import Cli, read, store_args


def test_many_unknown_event_ids_are_not_reported_as_an_unreachable_store(
    pg: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """docs/operations.md: exit 4 means "store, broker or HTTP API unreachable", 3 "not found",
    2 "bad usage or input". On SQLite, 40,000 unknown ids exit 3 ("no outbox row with event
    id ..."); on PostgreSQL the same command exits 4 with "the database is unavailable:
    ... the number of query arguments cannot exceed 32767": the ids go to the driver as one
    ``IN (...)`` list, asyncpg refuses more than 32,767 arguments, and the refusal is
    classified as an outage. The database was up; the operator was told it was down."""

    async def seed(store: SqlStore) -> None:
        env = HuleEduEnvelopes()
        await PipelineService(store).handle_message(*env.register("b1", items=2))

    read(pg, seed)
    cli = Cli(capsys, store_args(pg))
    ids = [str(uuid.uuid4()) for _ in range(40_000)]
    ran = cli("outbox", "republish", *ids, "--as", "alice", "--json")
    assert ran.err.count("\n") == 1
    assert "unavailable" not in ran.err, ran.err[:300]
    assert ran.code in (2, 3), f"exit {ran.code}: {ran.err[:300]}"
