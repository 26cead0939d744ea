"""a purger on a second store object (another process) deleting everything it
may (cutoffs ten years ahead, a few rows per round) while the first store runs groups of
units of work (``handle_many``: each group holding a delivery, its redelivery and a worker's
retry under a fresh event id) and operator commands (``CancelRun``), with the relay
publishing. No commit may fail, no run complete twice, no event id be published twice, and
every batch must end ready with the runs it was given. SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from datetime import timedelta

import pytest

from pipeline_state import InMemoryBus, ManualClock, OutboxRelay, PipelineService
from pipeline_state._commands import CancelRun
from pipeline_state.ports import PurgeCutoffs, Purged
from pipeline_state.profiles.huleedu.events import Topic
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes
from tests.sql.conftest import StoreMaker

BATCHES = 12


@pytest.mark.timeout(120)
async def test_purger_races_handle_many_and_operator_commands(make_store: StoreMaker) -> None:
    store, purger = await make_store(), await make_store()
    clock = ManualClock()
    service = PipelineService(store, clock=clock)
    bus = InMemoryBus()
    relay = OutboxRelay(store, bus, clock)
    env = HuleEduEnvelopes()
    ahead = clock.now() + timedelta(days=3650)
    everything = PurgeCutoffs(published_before=ahead, processed_before=ahead, logged_before=ahead)
    stop = asyncio.Event()
    purged = Purged()
    purge_errors: list[BaseException] = []

    async def purge_loop() -> None:
        nonlocal purged
        while not stop.is_set():
            try:
                purged += await purger.purge(everything, limit=3)
            except Exception as exc:
                purge_errors.append(exc)
            await asyncio.sleep(0)

    async def relay_loop() -> None:
        while not stop.is_set():
            await relay.drain()
            await asyncio.sleep(0)

    errors: list[BaseException] = []

    async def flow(n: int) -> None:
        b = f"m{n}"
        items = env.item_ids(b, 1)
        first, second = str(uuid.uuid4()), str(uuid.uuid4())

        def fresh(delivery: tuple[str, dict]) -> tuple[str, dict]:
            return delivery[0], {**delivery[1], "event_id": str(uuid.uuid4())}

        try:
            for group in (
                [env.register(b, items=1)],
                [env.provisioned(b, items)],
            ):
                await service.handle_many([*group, *group])
            request = env.request(b, "nlp", correlation_id=first)
            await service.handle_many([request, request])
            spell = env.outcome(b, "spellcheck", first, processed=items)
            await service.handle_many([spell, fresh(spell), spell])
            # The operator cancels the run while nlp is out; the nlp outcome comes late.
            state = await service.get_batch(b)
            assert state.active_run is not None
            await service.execute(CancelRun(b, "ops", "stop", run_id=state.active_run.run_id))
            late = env.outcome(b, "nlp", first, processed=items)
            await service.handle_many([late, fresh(late), request])
            # A second run, completed, with every message twice.
            again = env.request(b, "nlp", correlation_id=second)
            await service.handle_many([again, again])
            nlp = env.outcome(b, "nlp", second, processed=items)
            await service.handle_many([nlp, fresh(nlp), nlp, again])
        except Exception as exc:
            errors.append(exc)

    tasks = [asyncio.create_task(purge_loop()), asyncio.create_task(relay_loop())]
    await asyncio.gather(*(flow(n) for n in range(BATCHES)))
    stop.set()
    await asyncio.gather(*tasks)
    await relay.drain()

    assert errors == [], errors
    assert purge_errors == [], purge_errors
    assert purged.inbox > 0
    completions = bus.messages(Topic.PIPELINE_COMPLETED.value)
    assert Counter(m.key for m in completions) == Counter({f"m{n}": 2 for n in range(BATCHES)})
    assert [e for e, c in Counter(m.event_id for m in bus.messages()).items() if c > 1] == []
    for n in range(BATCHES):
        state = await service.get_batch(f"m{n}")
        assert state.active_run is None
        assert [r.status.value for r in state.history] == ["cancelled", "completed_successfully"]
