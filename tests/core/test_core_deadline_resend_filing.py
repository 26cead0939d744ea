"""A command re-sent by the deadline sweep is filed under its real deadline, and batches filed
before their deadline never take the sweep's slots. Was a defect (found by an attack on
multi-step pipelines and deadlines): a re-send is no progress (``updated_at`` stays), so at
the second re-send the deadline index capped the deadline at ``updated_at`` + one span + the
horizon and filed the batch an hour early; every sweep listed it first, found nothing
overdue, and with a full page other batches waited past their deadlines.

The scenarios take any store: tests/sql/test_sql_deadline_resend_filing.py runs them on
SQLite and PostgreSQL.
"""

from __future__ import annotations

from pipeline_state import InMemoryStore, ManualClock, PipelineService
from pipeline_state.ports import Store
from pipeline_state.profiles.huleedu.profile import huleedu_profile
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes

SPAN = 3600  # the shipped profile: every phase 3,600 s, two re-sends


async def _start_nlp(service: PipelineService, env: HuleEduEnvelopes, batch_id: str) -> None:
    ids = env.item_ids(batch_id, 1)
    await service.handle_message(*env.register(batch_id, items=1))
    await service.handle_message(*env.provisioned(batch_id, ids))
    request = env.request(batch_id, "nlp", prompt_payload={"assignment_id": "a-1"})
    accepted = await service.handle_message(*request)
    assert accepted.state is not None
    assert accepted.state.active_run is not None


async def _resends(store: Store, batch_id: str) -> int:
    state = await store.load(batch_id)
    assert state is not None
    assert state.active_run is not None
    return state.active_run.phases[0].resends


async def second_resend_keeps_its_place(store: Store) -> None:
    """One true clock, a sweep every minute, ``limit=1``. b1's worker is silent: its
    spellcheck is re-sent at t=3600 and t=7200 (due again at 10800), and is filed under that
    deadline. b2's spellcheck is due at t=9600 and must be re-sent by the first sweep after
    that."""
    clock = ManualClock()
    service = PipelineService(store, profile=huleedu_profile(), clock=clock)
    env = HuleEduEnvelopes()
    await _start_nlp(service, env, "b1")  # t=0
    for t in range(60, 9661, 60):
        clock.advance(60)
        if t == 6000:
            await _start_nlp(service, env, "b2")  # due at t=9600
        await service.expire_overdue(limit=1)
    assert await _resends(store, "b1") == 2
    assert await _resends(store, "b2") == 1, "b2, overdue since t=9600, was not swept at t=9660"
    # b1 is filed under its deadline (10800), not an hour before it: nothing is due at 9660.
    assert await store.overdue_batches(clock.now(), 10) == []


async def early_filed_batch_takes_no_slot(store: Store) -> None:
    """The sweeps stop for two hours (an outage): b1's first re-send comes at t=10800,
    later than a span and the horizon after its last progress, so it is filed before its
    deadline (14400) and every sweep finds it with nothing overdue. b2, due at t=12600,
    must not wait behind it: with ``limit=1`` it is swept within two sweeps."""
    clock = ManualClock()
    service = PipelineService(store, profile=huleedu_profile(), clock=clock)
    env = HuleEduEnvelopes()
    await _start_nlp(service, env, "b1")  # t=0, due at 3600
    clock.advance(9000)
    await _start_nlp(service, env, "b2")  # t=9000, due at 12600
    clock.advance(1800)
    await service.expire_overdue(limit=1)  # t=10800: b1 re-sent, due at 14400
    assert await _resends(store, "b1") == 1
    for _ in range(31):  # t=10860 .. 12660
        clock.advance(60)
        await service.expire_overdue(limit=1)
    assert await _resends(store, "b1") == 1
    assert await _resends(store, "b2") == 1, "b2, overdue since t=12600, waited behind b1"


async def test_a_second_re_send_keeps_its_place_in_the_sweep() -> None:
    await second_resend_keeps_its_place(InMemoryStore())


async def test_a_batch_filed_before_its_deadline_takes_no_slot_of_the_sweep() -> None:
    await early_filed_batch_takes_no_slot(InMemoryStore())
