"""A fact the waiting sweep dead-lettered, replayed after the fix (its key and value
produced back to its topic, as the Kafka adapter's README says, or ``dlq reinject``): it
applies once, under an id derived from its own, and a second replay is a duplicate."""

from __future__ import annotations

import pytest

from pipeline_state import InMemoryRuntime
from pipeline_state._replay import replay_id
from pipeline_state._service import ExpiredFact
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes

pytestmark = pytest.mark.timeout(30)


async def _expire(rt: InMemoryRuntime) -> list[ExpiredFact]:
    letters: list[ExpiredFact] = []

    async def dead_letter(fact: ExpiredFact) -> None:
        letters.append(fact)

    rt.clock.advance(rt.service.waiting_window_seconds + 1)
    await rt.service.sweep_waiting(dead_letter)
    return letters


async def test_a_replayed_dead_letter_applies_once_under_a_derived_id(
    rt: InMemoryRuntime, env: HuleEduEnvelopes
) -> None:
    """Was a defect (fixed): the sweep closed the fact's event id in the inbox as
    ``dead_lettered:batch_registration``, so the replay was answered as a duplicate and
    dropped: the batch never got its content, the fact was lost."""
    items = env.item_ids("b1", 2)
    provisioned = env.provisioned("b1", items)
    first = await rt.service.handle_message(*provisioned)
    assert first.waiting == "batch_registration"
    (letter,) = await _expire(rt)
    await rt.deliver(*env.register("b1", items=2))

    replayed = await rt.service.handle_message(letter.topic, letter.raw)
    assert not replayed.duplicate
    assert replayed.event_id == replay_id(letter.event_id)
    assert (await rt.service.get_batch("b1")).status.value == "ready_for_pipeline_execution"
    assert rt.service.counters["replayed"] == 1

    again = await rt.service.handle_message(letter.topic, letter.raw)
    assert again.duplicate
    assert (await rt.store.inbox_entry(letter.event_id)).result == "dead_lettered:batch_registration"  # type: ignore[union-attr]


async def test_a_replay_made_too_early_waits_again_and_a_later_one_applies(
    rt: InMemoryRuntime, env: HuleEduEnvelopes
) -> None:
    provisioned = env.provisioned("b2", env.item_ids("b2", 1))
    await rt.service.handle_message(*provisioned)
    (letter,) = await _expire(rt)

    early = await rt.service.handle_message(letter.topic, letter.raw)  # the batch is not there yet
    assert early.waiting == "batch_registration"
    (second,) = await _expire(rt)
    assert second.event_id == replay_id(letter.event_id)

    await rt.deliver(*env.register("b2", items=1))
    late = await rt.service.handle_message(letter.topic, letter.raw)
    assert late.event_id == replay_id(replay_id(letter.event_id))
    assert (await rt.service.get_batch("b2")).status.value == "ready_for_pipeline_execution"


async def test_a_processed_fact_replayed_stays_a_duplicate(
    rt: InMemoryRuntime, env: HuleEduEnvelopes
) -> None:
    """Only a dead-lettered fact is handled again: an applied one, repeated, is a duplicate."""
    registration = env.register("b3", items=1)
    await rt.service.handle_message(*registration)
    again = await rt.service.handle_message(*registration)
    assert again.duplicate
    assert rt.service.counters["replayed"] == 0


async def test_a_replay_in_a_group_commit_applies_once(rt: InMemoryRuntime, env: HuleEduEnvelopes) -> None:
    """``handle_many`` (the Kafka consumer's fetch) handles a replayed letter as one message
    alone would."""
    provisioned = env.provisioned("b4", env.item_ids("b4", 1))
    await rt.service.handle_message(*provisioned)
    (letter,) = await _expire(rt)
    registration = env.register("b4", items=1)
    replay = (letter.topic, letter.raw)
    registered, replayed, twice = await rt.service.handle_many([registration, replay, replay])
    assert not isinstance(registered, Exception)
    assert not isinstance(replayed, Exception)
    assert not isinstance(twice, Exception)
    assert (replayed.duplicate, twice.duplicate) == (False, True)
    assert (await rt.service.get_batch("b4")).status.value == "ready_for_pipeline_execution"
