"""Attacks on the ``already_handled`` rule on the SQL stores (layout 3 run keys, layout 2
rows read through the history, the CLI's answer to a repeat)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
from pipeline_state_sql import SqlStore
from sqlalchemy import text

from pipeline_state import PipelineService
from pipeline_state._decide import ALREADY_HANDLED
from pipeline_state.errors import CorruptStateError
from pipeline_state.ports import Retention, purge_expired
from tests.cli_kit import Cli, read, store_args
from tests.core.test_core_request_redelivered_after_purge import first_run
from tests.sql.layouts import as_layout


async def _rewrite(store: SqlStore, backend: str, change: Callable[[dict], None]) -> dict:
    async with store.engine.begin() as conn:
        (raw,) = (await conn.execute(text("SELECT state FROM batches WHERE batch_id = 'b1'"))).one()
        document = json.loads(raw) if isinstance(raw, str) else dict(raw)
        change(document)
        cast = "CAST(:d AS jsonb)" if backend == "postgres" else ":d"
        await conn.execute(
            text(f"UPDATE batches SET state = {cast} WHERE batch_id = 'b1'"), {"d": json.dumps(document)}
        )
    return document


@pytest.mark.parametrize(
    "runs",
    [",", ",,", "abc,,def", "0123456789abcdef0", 5, ["k"], None],
    ids=["comma", "commas", "empty-key", "long-key", "int", "list", "null"],
)
async def test_a_malformed_past_runs_string_is_corrupt_state(
    make_store: Callable[[], Awaitable[SqlStore]], backend: str, runs: str
) -> None:
    """Was a defect (fixed): A layout-3 row (as the release before this one wrote it) whose
    ``past.runs`` holds empty keys (or a key too long, or is no string) is malformed (a key
    is never empty): loading it must raise CorruptStateError naming the batch, not hand the
    service empty keys."""
    store = await make_store()
    await first_run(store, fail_spellcheck=False, purge=False)  # one archived run

    archived = await store.history("b1")

    def tamper(document: dict) -> None:
        document.update(as_layout(document, 3, archived))  # as the release before wrote it
        document["past"]["runs"] = runs

    await _rewrite(store, backend, tamper)
    fresh = await make_store()
    with pytest.raises(CorruptStateError, match="b1"):
        await fresh.load("b1")


async def test_layout_2_row_redelivered_request_in_a_group_and_twice(
    make_store: Callable[[], Awaitable[SqlStore]], backend: str
) -> None:
    """A layout-2 row (keys deleted); the request redelivered twice in one handle_many group:
    the first is already_handled, the second a duplicate; nothing emitted, one run; a fresh
    request in the same group still starts a run."""
    store = await make_store()
    story = await first_run(store, fail_spellcheck=False)

    archived = await store.history("b1")

    def tamper(document: dict) -> None:
        document.update(as_layout(document, 2, archived))

    await _rewrite(store, backend, tamper)
    fresh = await make_store()
    service = PipelineService(fresh, clock=story.clock)
    results = await service.handle_many([story.request, story.request])
    assert all(not isinstance(r, Exception) for r in results), results
    assert results[0].duplicate
    assert results[0].decision is not None
    assert results[0].decision.ignored == ALREADY_HANDLED  # type: ignore[union-attr]
    assert results[1].duplicate  # type: ignore[union-attr]
    assert not results[0].messages
    assert not results[1].messages
    assert len((await service.get_batch("b1")).history) == 1
    # and once more, one by one, after another purge
    story.clock.advance(31 * 86_400)
    await purge_expired(fresh, Retention(), story.clock.now())
    again = await service.handle_message(*story.request)
    assert again.duplicate
    assert len((await service.get_batch("b1")).history) == 1


def test_the_cli_answers_every_repeat_of_a_retry_after_purge_as_done(
    sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Was a defect (fixed):
    ``phase retry --event-id k1`` applied; inbox purged; the repeat is answered as done
    (exit 0, original applied) and rewrites the inbox entry as ``ignored:already_handled``.
    A third repeat (inbox entry present now) must still be answered as done: exit 0,
    original ``applied``. Observed: original ``ignored:already_handled`` and exit 1."""
    db = SimpleNamespace(url=sqlite_url, schema=None)

    async def seed(store: SqlStore) -> None:
        await first_run(store, fail_spellcheck=True, purge=False)

    async def purge(store: SqlStore) -> None:
        later = datetime.now(UTC) + timedelta(days=31)
        assert (await purge_expired(store, Retention(), later)).inbox > 0

    read(db, seed)
    cli = Cli(capsys, store_args(db))
    first = cli("phase", "retry", "b1", "spellcheck", "--as", "ops", "--event-id", "k1", "--json")
    assert first.code == 0, first.err
    read(db, purge)
    second = cli("phase", "retry", "b1", "spellcheck", "--as", "ops", "--event-id", "k1", "--json")
    assert second.code == 0, second.err
    third = cli("phase", "retry", "b1", "spellcheck", "--as", "ops", "--event-id", "k1", "--json")
    assert third.json["result"] == "duplicate"
    assert third.json["original"] == "applied", third.json
    assert third.code == 0, third.out
    assert third.json["run_id"] == first.json["run_id"]


async def test_a_layout_2_group_keeps_the_key_of_a_run_archived_earlier_in_the_group(
    make_store: Callable[[], Awaitable[SqlStore]], backend: str
) -> None:
    """Was a defect (fixed): A layout-2 row (one run archived before, its key not stored) with a second run
    active (a profile without phase deadlines, so its published outbox rows are purged
    too), its request's inbox entry purged. One handle_many group: the outcomes that
    complete the second run (archived in the fold), then its request redelivered. The
    request must be a duplicate (already_handled): its run was just archived.
    ``PipelineService._knowing_runs`` replaces the summary's keys with the stored history's,
    which lacks the run archived earlier in the same group: the request is decided anew and
    starts another run under the archived run's id (history and active run share one id)."""
    import uuid

    from pipeline_state import InMemoryBus, OutboxRelay
    from pipeline_state.profiles.huleedu.profile import huleedu_profile
    from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes

    store = await make_store()
    story = await first_run(store, fail_spellcheck=True, purge=False)
    profile = huleedu_profile(default_deadline_seconds=None)
    service = PipelineService(store, profile=profile, clock=story.clock)
    relay = OutboxRelay(store, InMemoryBus(), story.clock)
    env, corr = HuleEduEnvelopes(), str(uuid.uuid4())
    items = env.item_ids("b1", 1)
    request = env.request("b1", "nlp", correlation_id=corr)
    story.clock.advance(1)
    started = await service.handle_message(*request)
    await relay.drain()
    assert started.decision is not None
    assert started.decision.run_id
    run_id = started.decision.run_id
    assert (await store.load("b1")).active_run is not None  # type: ignore[union-attr]

    archived = await store.history("b1")

    def tamper(document: dict) -> None:
        document.update(as_layout(document, 2, archived))

    await _rewrite(store, backend, tamper)
    story.clock.advance(31 * 86_400)
    await purge_expired(store, Retention(), story.clock.now())
    fresh = await make_store()
    service = PipelineService(fresh, profile=profile, clock=story.clock)
    results = await service.handle_many(
        [
            env.outcome("b1", "spellcheck", corr, processed=items),
            env.outcome("b1", "nlp", corr, processed=items),
            request,
        ]
    )
    assert not any(isinstance(r, Exception) for r in results), results
    shown = await service.get_batch("b1")
    assert [r.run_id for r in shown.history].count(run_id) == 1
    assert shown.active_run is None, f"the redelivered request started run {shown.active_run.run_id} again"
    assert results[2].duplicate  # type: ignore[union-attr]
    assert not results[2].messages  # type: ignore[union-attr]
