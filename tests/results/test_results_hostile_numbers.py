"""Numbers the results consumer must refuse as bad input, found by an attack: a completion
whose duration is ``Infinity`` (not JSON) was applied and announced again as a bare
``Infinity`` token, and a count past 64 bits made the SQLite store raise the driver's own
``OverflowError``, which the Kafka policy retried as a bug instead of dead-lettering it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pipeline_state_sql.results_store import open_results_store
from results_events import at, completion, registered

from pipeline_state import ManualClock
from pipeline_state.errors import InvalidMessageError
from pipeline_state.profiles.huleedu.results import InMemoryResultsStore, ResultsService


async def test_a_completion_with_a_number_json_does_not_have_is_invalid_input() -> None:
    store = InMemoryResultsStore()
    service = ResultsService(store, clock=ManualClock())
    await service.handle_message(*registered("b1"))
    topic, envelope = completion("b1", "r1", "c1", when=at(10))
    raw = json.dumps(envelope).replace(
        '"processing_duration_seconds": ', '"processing_duration_seconds": Infinity, "x": ', 1
    )
    with pytest.raises(InvalidMessageError, match="not a JSON number"):
        await service.handle_message(topic, raw)
    stored = await store.load("b1")
    assert stored is not None
    assert stored.completions == ()


async def test_a_count_the_sqlite_driver_cannot_bind_is_invalid_input(tmp_path: Path) -> None:
    """A count no store can keep is refused by the completion's model (it was refused by the
    SQLite driver, ``RejectedDataError``, before counts were bounded), and nothing is kept."""
    store = await open_results_store(f"sqlite+aiosqlite:///{tmp_path / 'r.db'}")
    try:
        service = ResultsService(store, clock=ManualClock())
        await service.handle_message(*registered("b1"))
        topic, envelope = completion("b1", "r1", "c1", when=at(10))
        envelope["data"]["successful_essay_count"] = 2**63
        with pytest.raises(InvalidMessageError, match="less than or equal to 1000000") as caught:
            await service.handle_message(topic, json.dumps(envelope))
        assert caught.value.field == "data.successful_essay_count"
        stored = await store.load("b1")
        assert stored is not None
        assert stored.completions == ()
    finally:
        await store.close()
