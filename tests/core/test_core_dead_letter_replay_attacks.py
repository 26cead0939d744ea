"""Found by an attack on the replay of dead-lettered facts (:mod:`pipeline_state._replay`,
``PipelineService._replayed``). The tests whose docstring says "Was a defect" failed before
their fix (a replay waiting under its derived id was resumed under the original id, which
the inbox had closed: the fact that woke it was answered as a duplicate and lost); the
others held."""

from __future__ import annotations

from datetime import timedelta

import pytest

from pipeline_state import InMemoryRuntime
from pipeline_state._replay import replay_id
from pipeline_state._retention import PurgeCutoffs
from pipeline_state._service import ExpiredFact
from pipeline_state.errors import PipelineStateError
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes
from tests.core.test_core_dead_letter_replay import _expire

pytestmark = pytest.mark.timeout(30)


async def _ready(rt: InMemoryRuntime, env: HuleEduEnvelopes, batch_id: str, items: int = 1) -> None:
    await rt.deliver(*env.register(batch_id, items=items))
    await rt.deliver(*env.provisioned(batch_id, env.item_ids(batch_id, items)))
    assert (await rt.service.get_batch(batch_id)).status.value == "ready_for_pipeline_execution"


async def test_expired_request_replayed_stays_a_duplicate(rt: InMemoryRuntime, env: HuleEduEnvelopes) -> None:
    """A pipeline request that waited for its batch is denied on expiry, not dead-lettered:
    its repeat (even once the batch is ready) must not start a run the client was told was
    denied."""
    request = env.request("r1", "nlp")
    first = await rt.service.handle_message(*request)
    assert first.waiting is not None
    letters = await _expire(rt)
    assert letters == []  # denied, not dead-lettered
    assert (await rt.store.inbox_entry(first.event_id)).result.startswith("denied:")  # type: ignore[union-attr]
    await _ready(rt, env, "r1")
    again = await rt.service.handle_message(*request)
    assert again.duplicate
    assert (await rt.service.get_batch("r1")).active_run is None
    assert rt.service.counters["replayed"] == 0


async def test_replay_of_a_fact_still_waiting_is_a_duplicate(
    rt: InMemoryRuntime, env: HuleEduEnvelopes
) -> None:
    provisioned = env.provisioned("w1", env.item_ids("w1", 1))
    first = await rt.service.handle_message(*provisioned)
    assert first.waiting is not None
    again = await rt.service.handle_message(*provisioned)
    assert again.duplicate
    await rt.deliver(*env.register("w1", items=1))
    assert (await rt.service.get_batch("w1")).status.value == "ready_for_pipeline_execution"
    third = await rt.service.handle_message(*provisioned)
    assert third.duplicate
    assert rt.service.counters["replayed"] == 0


async def test_replay_racing_the_sweep_before_forget_then_later_applies_once(
    rt: InMemoryRuntime, env: HuleEduEnvelopes
) -> None:
    """The letter replayed while the sweep is between writing it and forgetting the fact:
    a duplicate then (the fact still waits); a later replay, once the batch exists, applies
    exactly once."""
    provisioned = env.provisioned("s1", env.item_ids("s1", 1))
    await rt.service.handle_message(*provisioned)
    during: list[bool] = []

    async def dead_letter(fact: ExpiredFact) -> None:
        result = await rt.service.handle_message(fact.topic, fact.raw)
        during.append(result.duplicate)

    rt.clock.advance(rt.service.waiting_window_seconds + 1)
    await rt.service.sweep_waiting(dead_letter)
    assert during == [True]
    await rt.deliver(*env.register("s1", items=1))
    late = await rt.service.handle_message(*provisioned)
    assert not late.duplicate
    assert late.event_id == replay_id(_eid(provisioned))
    assert (await rt.service.get_batch("s1")).status.value == "ready_for_pipeline_execution"
    assert (await rt.service.handle_message(*provisioned)).duplicate


def _eid(delivery: tuple[str, object]) -> str:
    raw = delivery[1]
    import json

    data = json.loads(raw) if isinstance(raw, bytes | str) else raw
    return str(data["event_id"])  # type: ignore[index]


async def test_fact_resumed_while_its_letter_is_written_is_not_replayed_again(
    rt: InMemoryRuntime, env: HuleEduEnvelopes
) -> None:
    """The batch arrives while the sweep writes the letter: the fact applies (resumed), the
    forget finds it gone, its inbox result stays applied, and a replay of the letter is a
    duplicate (no second application)."""
    provisioned = env.provisioned("s2", env.item_ids("s2", 1))
    await rt.service.handle_message(*provisioned)

    async def dead_letter(_fact: ExpiredFact) -> None:
        await rt.deliver(*env.register("s2", items=1))

    rt.clock.advance(rt.service.waiting_window_seconds + 1)
    sweep = await rt.service.sweep_waiting(dead_letter)
    assert sweep.dead_lettered == 0
    entry = await rt.store.inbox_entry(_eid(provisioned))
    assert entry is not None
    assert not entry.result.startswith("dead_lettered:")
    replay = await rt.service.handle_message(*provisioned)
    assert replay.duplicate
    assert rt.service.counters["replayed"] == 0


async def test_recorded_refusal_replayed_stays_a_duplicate(
    rt: InMemoryRuntime, env: HuleEduEnvelopes
) -> None:
    """An event id whose inbox result is a recorded refusal (``rejected:``) is a duplicate:
    never handled under a derived id."""
    await _ready(rt, env, "f1")
    from pipeline_state import CancelRun  # type: ignore[attr-defined]

    with pytest.raises(PipelineStateError):
        await rt.service.execute(CancelRun("f1"), event_id="key-1", record_refusal=True)
    entry = await rt.store.inbox_entry("key-1")
    assert entry is not None
    assert entry.result.startswith("rejected:")
    again = await rt.service.execute(CancelRun("f1"), event_id="key-1", record_refusal=True)
    assert again.duplicate
    assert rt.service.counters["replayed"] == 0


async def test_chain_of_early_replays_applies_once(rt: InMemoryRuntime, env: HuleEduEnvelopes) -> None:
    provisioned = env.provisioned("c1", env.item_ids("c1", 1))
    await rt.service.handle_message(*provisioned)
    (letter,) = await _expire(rt)
    expected = letter.event_id
    for _ in range(6):
        early = await rt.service.handle_message(letter.topic, letter.raw)
        expected = replay_id(expected)
        assert early.event_id == expected
        assert early.waiting is not None
        (again,) = await _expire(rt)
        assert again.event_id == expected
    await rt.deliver(*env.register("c1", items=1))
    late = await rt.service.handle_message(letter.topic, letter.raw)
    assert late.event_id == replay_id(expected)
    assert not late.duplicate
    assert (await rt.service.get_batch("c1")).status.value == "ready_for_pipeline_execution"
    assert (await rt.service.handle_message(letter.topic, letter.raw)).duplicate


async def test_a_registration_after_an_early_replay_applies_with_it(
    rt: InMemoryRuntime, env: HuleEduEnvelopes
) -> None:
    """Was a defect (fixed): a letter replayed before its batch exists waits again, under the
    derived id R1 (as the module doc of _replay says). When the registration then arrives it
    resumes the fact, but ``_resume`` re-parses the fact's raw bytes, whose envelope still
    carries the original id E, and writes the inbox row of E (already ``dead_lettered:``)
    resolving R1: the commit raises DuplicateEventError(E), which ``_handle`` answers as the
    *registration* being a duplicate. Nothing is written: the registration is lost (the
    consumer commits its offset on a duplicate) and the provisioning waits until it is
    dead-lettered again."""
    provisioned = env.provisioned("m0", env.item_ids("m0", 1))
    await rt.service.handle_message(*provisioned)
    (letter,) = await _expire(rt)
    early = await rt.service.handle_message(letter.topic, letter.raw)
    assert early.waiting == "batch_registration"
    registered = await rt.service.handle_message(*env.register("m0", items=1))
    assert not registered.duplicate, "a fresh registration was answered as a duplicate and dropped"
    assert (await rt.service.get_batch("m0")).status.value == "ready_for_pipeline_execution"
    assert await rt.service.waiting_count() == 0


async def test_a_replay_and_a_registration_in_one_fetch_both_apply(
    rt: InMemoryRuntime, env: HuleEduEnvelopes
) -> None:
    """Was a defect (fixed): the same through ``handle_many`` (a Kafka fetch holding the replayed
    letter and the registration): the group commit and then the one-by-one fallback both
    fail on the inbox row of the original id, and the registration's slot says duplicate."""
    provisioned = env.provisioned("m1", env.item_ids("m1", 1))
    await rt.service.handle_message(*provisioned)
    (letter,) = await _expire(rt)
    replay, registered, twice = await rt.service.handle_many(
        [(letter.topic, letter.raw), env.register("m1", items=1), (letter.topic, letter.raw)]
    )
    assert not isinstance(replay, Exception)
    assert not isinstance(registered, Exception)
    assert not isinstance(twice, Exception)
    assert not registered.duplicate, "a fresh registration was answered as a duplicate and dropped"
    assert (await rt.service.get_batch("m1")).status.value == "ready_for_pipeline_execution"
    assert await rt.service.waiting_count() == 0


async def test_replay_after_purge_forgot_the_dead_letter_entry_has_no_second_effect(
    rt: InMemoryRuntime, env: HuleEduEnvelopes
) -> None:
    """Replayed once (applied under the derived id), then the inbox purge forgets the
    original's ``dead_lettered`` entry but not the replay's: a further replay is handled
    under the original id again; it must change nothing and emit nothing."""
    provisioned = env.provisioned("p1", env.item_ids("p1", 1))
    await rt.service.handle_message(*provisioned)
    (letter,) = await _expire(rt)
    await rt.deliver(*env.register("p1", items=1))
    rt.clock.advance(60)
    first = await rt.service.handle_message(letter.topic, letter.raw)
    assert not first.duplicate
    before = await rt.service.get_batch("p1")
    cutoff = rt.clock.now() - timedelta(seconds=30)
    await rt.store.purge(PurgeCutoffs(processed_before=cutoff))
    assert await rt.store.inbox_entry(letter.event_id) is None
    assert await rt.store.inbox_entry(replay_id(letter.event_id)) is not None
    try:
        again = await rt.service.handle_message(letter.topic, letter.raw)
    except PipelineStateError:
        again = None
    if again is not None:
        assert again.all_messages == ()
        assert again.decision is None or not again.decision.changed
    after = await rt.service.get_batch("p1")
    assert (after.status, after.version) == (before.status, before.version)


async def test_a_request_after_an_early_replayed_outcome_starts_its_run(
    rt: InMemoryRuntime, env: HuleEduEnvelopes
) -> None:
    """Was a defect (fixed): same root cause, on a request: an outcome that came before its run
    waits for ``run_start``, is dead-lettered, and replayed before the run starts (waits
    again under R1). The client's pipeline request then starts the run, which resumes R1
    whose inbox row is written under the original id: DuplicateEventError, and the *request*
    is answered as a duplicate. No run, no denial, no notification: the request vanished."""
    await _ready(rt, env, "r2")
    correlation = "0b5f0c3e-1111-4222-8333-944455556666"
    items = env.item_ids("r2", 1)
    outcome = env.outcome("r2", "spellcheck", correlation, processed=items)
    first = await rt.service.handle_message(*outcome)
    assert first.waiting == "run_start"
    (letter,) = await _expire(rt)
    early = await rt.service.handle_message(letter.topic, letter.raw)
    assert early.waiting == "run_start"
    request = await rt.service.handle_message(*env.request("r2", "nlp", correlation_id=correlation))
    assert not request.duplicate, "a fresh pipeline request was answered as a duplicate: no run, no denial"
    assert (await rt.service.get_batch("r2")).active_run is not None
