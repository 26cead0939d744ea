"""``pipeline-state stalled --store URL``: active runs without progress, oldest first (issue 11.4)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import attrs
import pytest
from pipeline_state_sql import open_store

from pipeline_state._cli import main
from pipeline_state.ports import Change
from pipeline_state.testing import T0, make_state, with_deadline


async def _seed(url: str) -> None:
    store = await open_store(url)
    try:
        old = datetime.now(UTC) - timedelta(hours=2)
        for batch_id, at in (("fresh", datetime.now(UTC)), ("stuck", old)):
            state = attrs.evolve(with_deadline(make_state(batch_id), None), updated_at=at)
            await store.commit(Change(batch_id, None, state, T0))
        await store.commit(Change("idle", None, make_state("idle"), T0))
    finally:
        await store.close()


def test_stalled_lists_runs_without_progress(sqlite_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    asyncio.run(_seed(sqlite_url))

    assert main(["stalled", "--store", sqlite_url, "--older-than", "3600", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["batch_id"] for r in rows] == ["stuck"]
    assert rows[0]["run_id"] == "stuck-run-1"
    assert rows[0]["active_phases"] == ["ingest", "transcode"]

    assert main(["stalled", "--store", sqlite_url, "--older-than", "0"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == ["stuck", "fresh"]

    assert main(["stalled", "--store", sqlite_url, "--older-than", "86400"]) == 0
    assert "no run without progress" in capsys.readouterr().out
