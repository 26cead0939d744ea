"""Found by an attack on the SQL stores: what a long-running service accumulates and whether
``purge_published`` (the one documented purge of the pipeline's tables) deletes something
still needed. Every test here held (passes); the figures are in the report.

Held:
* ``test_held_purge_keeps_what_an_overdue_resend_needs``: many runs, their published rows
  purged, one batch's phase overdue: its re-send still reaches the bus (both backends, the
  PostgreSQL one-statement unit of work included), and the relay with hand-off keeps no
  per-row bookkeeping afterwards.
* ``test_held_growth_per_run_without_a_purge``: measured growth of the tables no purge
  touches (inbox, transition log, runs), per run, next to the outbox that purge empties.
"""

from __future__ import annotations

from pipeline_state_sql import SqlStore

from tests.sql.retention_kit import RUNS, finished_runs, table_counts


async def test_purge_keeps_what_an_overdue_resend_needs(sql_store: SqlStore) -> None:
    """Held: ``purge_published`` deletes the finished batches' published rows and keeps the
    overdue batch's command, whose re-send reaches the bus with its event id."""
    service, relay, bus, clock, command = await finished_runs(sql_store)
    clock.advance(1)
    purged = await sql_store.purge_published(clock.now())
    assert purged >= RUNS * 6  # the finished runs (6 rows each) and rows keyed by the teacher
    before = bus.count()
    clock.advance(3600)
    [result] = await service.expire_overdue()
    assert result.decision is not None
    assert result.decision.resend == (command,)
    await relay.drain()
    assert [m.event_id for m in bus.messages(since=before)] == [command]
    assert (len(relay._queues), relay.handed, len(relay._held), relay.unmarked) == (0, 0, 0, 0)


async def test_growth_per_run_without_a_purge(sql_store: SqlStore) -> None:
    """Held (a measurement): after ``RUNS`` whole runs and ``purge_published``, the outbox
    keeps only the waiting batch's rows, while the inbox (5 rows a run), the transition log
    and the runs table (1 row a run) keep everything. When this was found no purge,
    retention setting or command existed for them; the retention purge now does
    (``test_sql_retention.py``), and the runs table (the batches' history) stays."""
    _service, _relay, _bus, clock, _command = await finished_runs(sql_store)
    clock.advance(1)
    await sql_store.purge_published(clock.now())
    counts = await table_counts(sql_store)
    assert counts["outbox"] == 2  # the waiting batch's registration and command
    assert counts["inbox"] == 5 * RUNS + 3
    assert counts["runs"] == RUNS
    assert counts["transitions"] >= 8 * RUNS, counts
    print("rows after purge:", counts)
