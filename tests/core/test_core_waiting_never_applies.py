"""A waiting fact that turns out never to apply once its batch is there is dead-lettered, as
the same record consumed in order is: delivery order must not decide whether a poison
record reaches ``<topic>.DLQ`` (CONTRACT section 4, docs/guarantees.md).

Was a defect (found by an attack on the Kafka intake): a provisioning naming more items
than its batch registered, consumed *after* the registration, is dead-lettered
(``ItemMismatchError``); consumed *before* it, it waited, was re-attempted when the
registration applied, and left the waiting set as ``rejected:ItemMismatchError`` in the
inbox: no dead letter, nothing to re-inject, its raw bytes gone. Now it stays in the waiting
set marked ``never_applies:<error>`` (re-attempted no more), and the next waiting sweep hands
it to its dead letter before forgetting it (at least once), without waiting for the window.

The scenario takes any store: ``tests/sql/test_sql_waiting_never_applies.py`` runs it on
SQLite and PostgreSQL.
"""

from __future__ import annotations

import pytest

from pipeline_state import InMemoryStore, ManualClock, PipelineService
from pipeline_state._service import NEVER_APPLIES, ExpiredFact
from pipeline_state.errors import ItemMismatchError
from pipeline_state.ports import Store
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes


async def an_early_fact_that_never_applies_is_dead_lettered_at_the_next_sweep(store: Store) -> None:
    clock = ManualClock()
    service = PipelineService(store, clock=clock, waiting_window_seconds=900)
    env = HuleEduEnvelopes()
    provisioned = env.provisioned("b1", env.item_ids("b1", 3))  # the batch registers 2
    event_id = provisioned[1]["event_id"]

    early = await service.handle_message(*provisioned)
    assert early.waiting == "batch_registration"

    registered = await service.handle_message(*env.register("b1", items=2))

    (resumed,) = registered.resumed
    assert isinstance(resumed, ItemMismatchError), resumed
    (kept,) = await store.list_waiting()
    assert kept.event_id == event_id
    assert kept.waits_for.startswith(NEVER_APPLIES), kept.waits_for
    assert "ItemMismatchError" in kept.waits_for
    assert len(f"dead_lettered:{kept.waits_for}") <= 200  # fits the stores' result column
    # Another change of the batch does not re-attempt it (it would fail the same way).
    assert await service.resume_waiting("b1") == []

    letters: list[ExpiredFact] = []

    async def dead_letter(expired: ExpiredFact) -> None:
        letters.append(expired)

    clock.advance(5)  # the next sweep, long before the 900 s window
    sweep = await service.sweep_waiting(dead_letter)

    assert sweep.dead_lettered == 1
    (letter,) = letters
    assert letter.never_applies
    assert (letter.event_id, letter.topic, letter.raw) == (event_id, provisioned[0], kept.raw)
    assert "ItemMismatchError" in letter.reason
    assert await store.count_waiting() == 0
    entry = await store.inbox_entry(event_id)
    assert entry is not None
    assert entry.result == f"dead_lettered:{kept.waits_for}"
    # A later sweep writes no second letter.
    await service.sweep_waiting(dead_letter)
    assert len(letters) == 1
    # The letter replayed (before its cause is fixed) is decided afresh, as any replay of a
    # dead-lettered fact is, and refused as the in-order record was: the consumer letters it.
    with pytest.raises(ItemMismatchError):
        await service.handle_message(*provisioned)


async def a_letter_that_fails_keeps_the_fact_for_the_next_sweep(store: Store) -> None:
    """At least once: the fact is forgotten only after its letter was written."""
    clock = ManualClock()
    service = PipelineService(store, clock=clock)
    env = HuleEduEnvelopes()
    await service.handle_message(*env.provisioned("b1", env.item_ids("b1", 3)))
    await service.handle_message(*env.register("b1", items=2))

    async def broker_down(expired: ExpiredFact) -> None:
        raise ConnectionError("the dead-letter topic is unreachable")

    try:
        await service.sweep_waiting(broker_down)
    except ConnectionError:
        pass
    else:  # pragma: no cover - the assertion below says what went wrong
        raise AssertionError("the failed letter was swallowed")
    assert await store.count_waiting() == 1

    letters: list[ExpiredFact] = []

    async def dead_letter(expired: ExpiredFact) -> None:
        letters.append(expired)

    await service.sweep_waiting(dead_letter)
    assert len(letters) == 1
    assert await store.count_waiting() == 0


async def test_an_early_fact_that_never_applies_is_dead_lettered_at_the_next_sweep() -> None:
    await an_early_fact_that_never_applies_is_dead_lettered_at_the_next_sweep(InMemoryStore())


async def test_a_letter_that_fails_keeps_the_fact_for_the_next_sweep() -> None:
    await a_letter_that_fails_keeps_the_fact_for_the_next_sweep(InMemoryStore())
