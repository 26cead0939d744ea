"""``active_runs()``: how many batches run a pipeline and when the oldest run was accepted,
read by the metrics' store gauges with one aggregate query (SQLite and PostgreSQL).

Measured before: each reading of the gauges loaded and decoded up to 1,000 processing
batches' states on the event loop, 77-194 ms with 1,000 active runs on this machine (every
10 s under ``serve --metrics``, a stall of every message in flight), and counted no further
than 1,000. Now one query answers, exactly, without reading a state into Python.
"""

from __future__ import annotations

from datetime import timedelta

import attrs
from pipeline_state_kafka.gauges import ACTIVE_RUNS_LIMIT, read_store
from pipeline_state_sql import SqlStore

from pipeline_state._lifecycle import BatchStatus
from pipeline_state.ports import BatchState, Change
from pipeline_state.testing import T0, make_state, with_deadline


def _running(batch_id: str, accepted_after: timedelta) -> BatchState:
    state = with_deadline(make_state(batch_id), None)
    assert state.active_run is not None
    return attrs.evolve(state, active_run=attrs.evolve(state.active_run, accepted_at=T0 + accepted_after))


async def test_active_runs_counts_the_running_batches_and_finds_the_oldest(sql_store: SqlStore) -> None:
    assert await sql_store.active_runs() == (0, None)
    offsets = [timedelta(hours=h, microseconds=123_456) for h in (5, 2, 9)]
    changes = [Change(f"run-{i}", None, _running(f"run-{i}", o), T0) for i, o in enumerate(offsets)]
    changes.append(Change("idle", None, make_state("idle"), T0))  # ready: no run
    changes.append(Change("done", None, make_state("done", status=BatchStatus.CANCELLED), T0))
    await sql_store.commit_many(changes)

    count, oldest = await sql_store.active_runs()
    assert count == 3
    assert oldest is not None
    assert oldest.utcoffset() == timedelta(0)
    assert abs(oldest - (T0 + timedelta(hours=2, microseconds=123_456))) < timedelta(milliseconds=1)
    decoded = await sql_store.list_batches(BatchStatus.PROCESSING_PIPELINES)
    accepted = [s.active_run.accepted_at for s in decoded if s.active_run is not None]
    assert count == len(decoded)
    assert abs(oldest - min(accepted)) < timedelta(milliseconds=1)


async def test_the_gauges_count_every_active_run_past_the_old_limit(sql_store: SqlStore) -> None:
    count = ACTIVE_RUNS_LIMIT + 5
    changes = [
        Change(f"many-{i:05d}", None, _running(f"many-{i:05d}", timedelta(seconds=i)), T0)
        for i in range(count)
    ]
    for start in range(0, count, 250):
        await sql_store.commit_many(changes[start : start + 250])
    now = T0 + timedelta(hours=1)
    reading = await read_store(sql_store, sql_store, now)
    assert reading.active_runs == count  # before: 1,000, the most it loaded
    assert reading.oldest_active_run_age_seconds is not None
    assert abs(reading.oldest_active_run_age_seconds - 3600.0) < 0.001
