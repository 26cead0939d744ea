"""Group commit on the real stores: deterministic groups (two units of work held in flight
while the messages under test queue), compared with the same messages one by one."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from pipeline_state_sql import SqlStore
from sqlalchemy import text

from pipeline_state import (
    HandleResult,
    InboundMessage,
    InMemoryStore,
    ManualClock,
    PipelineService,
)
from pipeline_state.ports import Change
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes
from tests.group_kit import Outcome, comparable, outcome_of, story


async def in_groups(
    svc: PipelineService,
    store: SqlStore,
    leads_in: Sequence[InboundMessage],
    messages: Sequence[InboundMessage],
    *,
    grouped: bool = True,
) -> list[Outcome]:
    loop = asyncio.get_running_loop()
    gate: asyncio.Future[None] = loop.create_future()
    held = 0
    commit = store.commit

    async def gated(change: Change) -> None:
        nonlocal held
        held += 1
        await gate
        await commit(change)

    store.commit = gated  # type: ignore[method-assign]
    many = store.commit_many
    sizes: list[int] = []

    async def counted(changes: Sequence[Change]) -> None:
        sizes.append(len(changes))
        await many(changes)

    store.commit_many = counted  # type: ignore[method-assign]
    leads = [asyncio.ensure_future(svc.handle_message(*m)) for m in leads_in]
    for _ in range(200):
        if held >= 2:
            break
        await asyncio.sleep(0.001)
    assert held == 2
    store.commit = commit  # type: ignore[method-assign]
    queued = [asyncio.ensure_future(outcome_of(svc, m)) for m in messages]
    for _ in range(3):
        await asyncio.sleep(0)
    gate.set_result(None)
    await asyncio.gather(*leads)
    out = list(await asyncio.gather(*queued))
    store.commit_many = many  # type: ignore[method-assign]
    if grouped:
        assert sizes, sizes
        assert max(sizes) >= 2, sizes  # the messages did go together
    return out


async def outbox_ids(store: SqlStore) -> list[str]:
    async with store.engine.connect() as conn:
        rows = await conn.execute(text("SELECT event_id FROM outbox ORDER BY event_id"))
        return [e for (e,) in rows]


async def check_equivalent(
    store: SqlStore, messages: Sequence[InboundMessage], batches: Sequence[str]
) -> list[Outcome]:
    env = HuleEduEnvelopes()
    leads = [env.register(f"lead-{n}", items=1) for n in range(2)]
    svc = PipelineService(store, clock=ManualClock())
    got = await in_groups(svc, store, leads, messages)
    ref = PipelineService(InMemoryStore(), clock=ManualClock())
    for m in leads:
        await ref.handle_message(*m)
    expected = [await outcome_of(ref, m) for m in messages]
    assert [comparable(r, whole_messages=False) for r in got] == [
        comparable(r, whole_messages=False) for r in expected
    ]
    for b in batches:
        assert await store.load(b) == await ref.store.load(b)
        assert [f.event_id for f in await store.list_waiting(b)] == [
            f.event_id for f in await ref.store.list_waiting(b)
        ]
    theirs = sorted(m.event_id for m in ref.store.outbox_messages())  # type: ignore[attr-defined]
    assert await outbox_ids(store) == theirs
    return got


async def test_a_whole_story_of_one_batch_in_one_group(sql_store: SqlStore) -> None:
    env = HuleEduEnvelopes()
    got = await check_equivalent(sql_store, story(env, "s1"), ["s1"])
    assert all(isinstance(r, HandleResult) and not r.duplicate for r in got)


async def test_early_facts_then_creation_in_one_group(sql_store: SqlStore) -> None:
    env = HuleEduEnvelopes()
    m = story(env, "e1")
    await check_equivalent(sql_store, [m[1], m[2], m[3], m[1], m[0], m[4], m[5], m[6], m[3]], ["e1"])


async def test_interleaved_batches_and_duplicates_in_one_group(sql_store: SqlStore) -> None:
    env = HuleEduEnvelopes()
    a, b = story(env, "i1"), story(env, "i2")
    order = [a[0], b[0], a[1], b[1], a[0], a[2], b[2], b[3], a[3], b[3], a[4], b[4]]
    await check_equivalent(sql_store, order, ["i1", "i2"])


async def test_a_corrupt_batch_row_fails_only_its_own_message_in_a_group(sql_store: SqlStore) -> None:
    from pipeline_state.errors import CorruptStateError

    env = HuleEduEnvelopes()
    svc = PipelineService(sql_store, clock=ManualClock())
    stories = {b: story(env, b) for b in ("bad", "ok1", "ok2")}
    for _b, s in stories.items():
        for m in s[:2]:
            await svc.handle_message(*m)
    async with sql_store.engine.begin() as conn:
        await conn.execute(text("""UPDATE batches SET state = '{"bogus": 1}' WHERE batch_id = 'bad'"""))
    leads = [env.register(f"lead-{n}", items=1) for n in range(2)]
    queued = [stories["ok1"][2], stories["bad"][2], stories["ok2"][2]]
    got = await in_groups(svc, sql_store, leads, queued, grouped=False)
    assert isinstance(got[1], CorruptStateError), got
    assert all(isinstance(r, HandleResult) and not r.duplicate for r in (got[0], got[2])), got
    # The service goes on grouping afterwards.
    more = await asyncio.gather(*(outcome_of(svc, stories[b][3]) for b in ("ok1", "ok2")))
    assert all(isinstance(r, HandleResult) and not r.duplicate for r in more), more
