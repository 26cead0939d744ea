"""Ids the results consumer keys its read model by are checked with the wire's id rule, found
by an attack: the models of the library's own outbound topics (registrations, completions)
type them as plain text, so an id with a NUL was stored silently by the memory and SQLite
stores and refused by PostgreSQL, a lone surrogate stored by memory only, an id over 200
characters refused by PostgreSQL only; none of them could be read back through the HTTP
routes (which refuse such ids)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pipeline_state_sql.results_store import open_results_store
from results_events import at, completion, dispatch, registered, skipped

from pipeline_state import ManualClock
from pipeline_state.errors import InvalidMessageError
from pipeline_state.profiles.huleedu.results import InMemoryResultsStore, ResultsService
from pipeline_state.profiles.huleedu.results.ports import ResultsStore

BAD_IDS = ["b\x00x", "b\ud800", "b" * 201]


@pytest.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ResultsStore]:
    if request.param == "memory":
        yield InMemoryResultsStore()
        return
    opened = await open_results_store(f"sqlite+aiosqlite:///{tmp_path / 'r.db'}")
    try:
        yield opened
    finally:
        await opened.close()


@pytest.mark.parametrize("bad", BAD_IDS)
async def test_a_registration_with_a_bad_batch_id_is_invalid_input(store: ResultsStore, bad: str) -> None:
    service = ResultsService(store, clock=ManualClock())
    with pytest.raises(InvalidMessageError) as caught:
        await service.handle_message(*_raw(registered(bad)))
    assert caught.value.field == "data.entity_id"
    assert await store.class_results("class-1") is None  # nothing was counted
    if "\ud800" not in bad:  # (SQLite cannot even look a lone surrogate up)
        assert await store.load(bad) is None


@pytest.mark.parametrize("bad", BAD_IDS)
async def test_a_completion_with_a_bad_id_is_invalid_input(store: ResultsStore, bad: str) -> None:
    service = ResultsService(store, clock=ManualClock())
    await service.handle_message(*_raw(registered("b1")))
    with pytest.raises(InvalidMessageError) as caught:
        await service.handle_message(*_raw(completion(bad, "r1", "c1", when=at(10))))
    assert caught.value.field == "data.batch_id"
    with pytest.raises(InvalidMessageError) as caught:
        await service.handle_message(*_raw(completion("b1", bad, "c1", when=at(10))))
    assert caught.value.field == "data.run_id"
    stored = await store.load("b1")
    assert stored is not None
    assert stored.completions == ()


@pytest.mark.parametrize("bad", BAD_IDS)
async def test_a_dispatch_or_a_pruned_phase_with_a_bad_id_is_invalid_input(
    store: ResultsStore, bad: str
) -> None:
    """The phase commands and pruned-phase notices the projection reads (the engine's own
    outbound topics) are checked as the completions are."""
    service = ResultsService(store, clock=ManualClock())
    await service.handle_message(*_raw(registered("b1")))
    with pytest.raises(InvalidMessageError) as caught:
        await service.handle_message(*_raw(dispatch(bad, "nlp", "c1", when=at(1))))
    assert caught.value.field == "data.batch_id"
    with pytest.raises(InvalidMessageError) as caught:
        await service.handle_message(*_raw(skipped(bad, "nlp", "c1", when=at(1))))
    assert caught.value.field == "data.batch_id"
    with pytest.raises(InvalidMessageError) as caught:
        await service.handle_message(*_raw(skipped("b1", bad, "c1", when=at(1))))
    assert caught.value.field == "data.phase_name"
    stored = await store.load("b1")
    assert stored is not None
    assert (stored.dispatches, stored.pruned) == ((), ())


def _raw(delivery: tuple[str, dict[str, object]]) -> tuple[str, str]:
    topic, envelope = delivery
    return topic, json.dumps(envelope)
