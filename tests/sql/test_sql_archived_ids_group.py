"""One group commit (``handle_many``) in which a run is archived mid-group, then a
stale outcome of it, a stale outcome of an older run and a repeated run-starting request
follow; and a retry / recorded completion repeated after the purge via ``execute``. SQL
(layout 4, ids from the runs table) and memory must decide alike."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from pipeline_state_sql import SqlStore

from pipeline_state import HandleResult, InMemoryStore, RetryPhase
from pipeline_state._commands import RecordPhaseCompletion
from pipeline_state.ports import Retention, Store, purge_expired
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes
from tests.core.test_core_request_redelivered_after_purge import first_run

RC = str(uuid.UUID(int=104))
StoreMaker = Callable[[], Awaitable[SqlStore]]


def _brief(result: Any) -> Any:
    if isinstance(result, BaseException):
        return type(result).__name__
    assert isinstance(result, HandleResult)
    return (result.label, result.ignored, result.duplicate, tuple(m.topic for m in result.all_messages))


async def _story(store: Store) -> list[Any]:
    story = await first_run(store, fail_spellcheck=False, purge=True)  # run 1 archived, inbox purged
    env = HuleEduEnvelopes()
    [first] = await store.history("b1")
    corr2 = str(uuid.UUID(int=102))
    req2 = env.request("b1", "cj_assessment", correlation_id=corr2, event_id=str(uuid.UUID(int=2)))
    out: list[Any] = [_brief(await story.deliver(req2))]
    items = env.item_ids("b1", 1)
    group = [
        env.outcome("b1", "cj_assessment", corr2, processed=items, event_id=str(uuid.UUID(int=3))),
        env.outcome("b1", "cj_assessment", corr2, processed=items, event_id=str(uuid.UUID(int=4))),
        env.outcome("b1", "nlp", first.correlation_id, processed=items, event_id=str(uuid.UUID(int=5))),
        story.request,  # run 1's request, its inbox entry purged
        env.request(
            "b1", "ai_feedback", correlation_id=str(uuid.UUID(int=103)), event_id=str(uuid.UUID(int=6))
        ),
        env.outcome("b1", "ai_feedback", corr2, processed=items, event_id=str(uuid.UUID(int=9))),
        env.outcome(
            "b1", "ai_feedback", first.correlation_id, processed=items, event_id=str(uuid.UUID(int=10))
        ),
        env.outcome("b1", "spellcheck", corr2, processed=items, event_id=str(uuid.UUID(int=7))),
        env.outcome(
            "b1", "spellcheck", first.correlation_id, processed=items, event_id=str(uuid.UUID(int=8))
        ),
        req2,  # in the inbox: a plain duplicate
    ]
    out += [_brief(r) for r in await story.service.handle_many(group)]
    await story.relay.drain()
    # operator retry and recorded completion, repeated after the purge
    retry = RetryPhase("b1", "spellcheck", "ops", retry_reason="x")
    out.append(_brief(await story.service.execute(retry, event_id="retry-k", correlation_id=RC)))
    env2 = HuleEduEnvelopes()
    out.append(
        _brief(
            await story.deliver(
                env2.outcome("b1", "spellcheck", RC, processed=items, event_id=str(uuid.UUID(int=106)))
            )
        )
    )
    shown = await story.service.get_batch("b1")
    if shown.active_run is not None:
        for phase in shown.active_run.phases:
            if phase.is_active:
                out.append(_brief(await story.deliver(env2.outcome("b1", phase.name, RC, processed=items))))
    rec = RecordPhaseCompletion("b1", "nlp", True)
    out.append(
        _brief(await story.service.execute(rec, event_id="rec-k", correlation_id=str(uuid.UUID(int=105))))
    )
    story.clock.advance(31 * 86_400)
    await purge_expired(store, Retention(), story.clock.now())
    out.append(_brief(await story.service.execute(retry, event_id="retry-k", correlation_id=RC)))
    out.append(
        _brief(await story.service.execute(rec, event_id="rec-k", correlation_id=str(uuid.UUID(int=105))))
    )
    out.append(_brief(await story.deliver(story.request)))
    out.append(_brief(await story.deliver(req2)))
    out.append(
        _brief(
            await story.deliver(env2.outcome("b1", "nlp", RC, processed=items, event_id=str(uuid.uuid4())))
        )
    )
    shown = await story.service.get_batch("b1")
    ids = [r.run_id if r.run_id != first.run_id else "first" for r in shown.history]
    out.append(("runs", ids, [r.status for r in shown.history], shown.past.count))
    return out


async def test_group_and_operator_repeats_decide_as_in_memory(make_store: StoreMaker) -> None:
    sql = await _story(await make_store())
    memory = await _story(InMemoryStore())
    assert sql == memory
    # ... and both decide as they should, not merely alike:
    labels = [entry[0] for entry in sql[:-1]]
    assert labels[4] == "duplicate"  # run 1's request, purged from the inbox: already handled
    # outcomes of run 2 (archived earlier in the same group) and of run 1, while run 3 is active
    assert labels[6:8] == ["ignored:stale_run", "ignored:stale_run"]
    # after the purge: the recorded completion, run 1's and run 2's requests are known
    assert labels[-4:-1] == ["duplicate", "duplicate", "duplicate"]
    assert sql[-1][3] == 4  # four runs archived, none twice
    assert len(set(sql[-1][1])) == 4
