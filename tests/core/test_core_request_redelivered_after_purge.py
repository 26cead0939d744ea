"""A client's pipeline request redelivered after the retention purge forgot its
inbox entry (documented: it is decided again and starts a new run). The new run must still be
a *new* run: its run id and the event ids of what it emits must not be those of the first
handling's run and messages.

Known defect, not fixed yet: both tests are expected to fail (strict) until it is. The run id
and the emitted event ids derive from the inbound event id alone
(``pipeline_state/_decide/admission.py`` ``accept_run``, ``pipeline_state/_decide/ids.py``);
the fix planned is to remember the archived runs' ids in the batch's summary (``Past``, a
stored layout 3) and answer a request whose derived run id is among them as handled
already.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from datetime import UTC, datetime

import pytest

from pipeline_state import InMemoryBus, InMemoryStore, ManualClock, OutboxRelay, PipelineService
from pipeline_state.ports import Retention, purge_expired
from pipeline_state.profiles.huleedu.events import Topic
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes

DAY = 86_400.0

KNOWN_DEFECT = pytest.mark.xfail(
    strict=True, reason="known defect: a request redelivered after the inbox purge reuses the first run's ids"
)


async def _first_run(
    *, fail_spellcheck: bool
) -> tuple[PipelineService, InMemoryStore, InMemoryBus, OutboxRelay, ManualClock, tuple]:
    clock = ManualClock(datetime(2025, 3, 1, tzinfo=UTC))
    store = InMemoryStore()
    service, bus = PipelineService(store, clock=clock), InMemoryBus()
    relay = OutboxRelay(store, bus, clock)
    env, corr = HuleEduEnvelopes(), str(uuid.uuid4())
    items = env.item_ids("b1", 1)
    request = env.request("b1", "nlp", correlation_id=corr)
    if fail_spellcheck:
        outcomes = [env.outcome("b1", "spellcheck", corr, status="failed_critically", failed=items)]
    else:
        outcomes = [
            env.outcome("b1", "spellcheck", corr, processed=items),
            env.outcome("b1", "nlp", corr, processed=items),
        ]
    for delivery in (env.register("b1", items=1), env.provisioned("b1", items), request, *outcomes):
        clock.advance(1)
        await service.handle_message(*delivery)
        await relay.drain()
    assert len(bus.messages(Topic.PIPELINE_COMPLETED.value)) == 1
    clock.advance(31 * DAY)
    assert (await purge_expired(store, Retention(), clock.now())).inbox >= 3
    return service, store, bus, relay, clock, request


def _reused_ids(bus: InMemoryBus) -> dict[str, list[str]]:
    """Event ids carried by more than one distinct message (topic differs or payload differs)."""
    seen: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for m in bus.messages():
        seen[m.event_id].add((m.topic, repr(m.value.get("data"))))
    return {k: sorted(t for t, _ in v) for k, v in seen.items() if len(v) > 1}


@pytest.mark.xfail(
    strict=True, reason="known defect: a request redelivered after the inbox purge reuses the first run's ids"
)
async def test_request_redelivered_after_purge_gets_its_own_run_id_and_event_ids() -> None:
    """The first run completed; 31 days later the inbox forgot the request and it is
    delivered again. It starts a second run (every phase pruned, it completes at once, as
    docs/operations.md "Retention" says) - but that run gets the very run id of the archived
    first one (run_id = derive_id(request event id, "run")), and its PhaseSkipped events reuse
    the event ids of the first handling's notification and spellcheck command (outbox ids
    derive_id(request event id, "out", index)). Observed: history holds two runs with one run
    id; two different messages went out under one event id (a consumer deduplicating by
    event id drops the second). Expected: a fresh run id and fresh event ids (or the
    redelivery recognised as the duplicate it is)."""
    service, store, bus, relay, _clock, request = await _first_run(fail_spellcheck=False)
    result = await service.handle_message(*request)
    await relay.drain()
    history = await store.history("b1")
    run_ids = [r.run_id for r in history]
    reused = _reused_ids(bus)
    assert len(set(run_ids)) == len(run_ids), f"two archived runs share a run id: {run_ids}"
    assert not reused, f"one event id named different messages: {reused}"
    assert result.duplicate or len(history) == 2


@pytest.mark.xfail(
    strict=True, reason="known defect: a request redelivered after the inbox purge reuses the first run's ids"
)
async def test_request_redelivered_after_purge_sends_its_command_under_a_new_event_id() -> None:
    """The first run failed at spellcheck (nothing is pruned). The request, redelivered after
    the purge, starts a second run whose spellcheck command carries the *same event id* as the
    first run's command: a worker that deduplicates commands by event id (as the platform's do)
    drops it, and the new run can only time out (its re-sends reuse that id too). Expected: the
    second run's command has an event id of its own."""
    service, _store, bus, relay, _clock, request = await _first_run(fail_spellcheck=True)
    first = [m.event_id for m in bus.messages(Topic.SPELLCHECK.value)]
    assert len(first) == 1
    result = await service.handle_message(*request)
    await relay.drain()
    if result.duplicate:
        return  # recognised as the duplicate it is: fine
    commands = [m.event_id for m in bus.messages(Topic.SPELLCHECK.value)]
    assert len(commands) == 2
    assert commands[1] != commands[0], "the new run's spellcheck command reuses the old run's event id"
