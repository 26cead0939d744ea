"""What the results read model keeps of input the engine ignores.

* Outcomes of phases whose dispatch the batch has not seen (a lost or foreign correlation
  id, an unknown phase name) are kept up to ``MAX_UNDISPATCHED_OUTCOMES``, the earliest.
  Was a defect (fixed): every one was kept for ever, so a worker that loses its correlation
  id, or anyone who can write to the outcome topic, grew one batch's document without bound
  (4,000 such outcomes: a 1 MB document, ~50 ms per event on SQLite, growing quadratically).
* A registration's ``expected_essay_count`` is a count no batch can exceed (``ItemCount``).
  Was a defect (fixed): a negative or a 200-digit count was stored and served.
"""

from __future__ import annotations

import json
import uuid

import pytest
from results_events import at, completion, dispatch, outcome, registered

from pipeline_state import ManualClock
from pipeline_state.errors import InvalidMessageError
from pipeline_state.profiles.huleedu.results import (
    InMemoryResultsStore,
    ResultsQueries,
    ResultsService,
    batch_to_document,
)

pytestmark = pytest.mark.timeout(60)

FOREIGN = 1_200


@pytest.mark.parametrize("what", ["lost-correlation", "unknown-phase"])
async def test_outcomes_the_engine_ignores_do_not_grow_a_batch_without_bound(what: str) -> None:
    """The read model of a batch whose run completed stays bounded whatever number of
    outcomes with no dispatch (which the engine ignores and the read model never shows) it is
    sent. Before the fix, each is kept (``projection._merge_outcome``; ``_normal`` drops only the outcomes
    of a *completed* correlation id), so 1,200 of them make a document of ~300 kB."""
    store = InMemoryResultsStore()
    service = ResultsService(store, clock=ManualClock())
    await service.handle_message(*registered("b1"))
    await service.handle_message(*dispatch("b1", "spellcheck", "c1", when=at(1)))
    await service.handle_message(*completion("b1", "r1", "c1", when=at(5)))
    for i in range(FOREIGN):
        if what == "lost-correlation":
            delivery = outcome("b1", "spellcheck", str(uuid.uuid4()), when=at(10 + i))
        else:
            delivery = outcome("b1", f"phase-{i}", "c2", when=at(10 + i))
        await service.handle_message(*delivery)
    batch = await store.load("b1")
    assert batch is not None
    view = await ResultsQueries(store).batch_json("b1")
    assert view is not None
    assert view["status"] == "completed_successfully"
    assert view["in_progress"] == []
    size = len(json.dumps(batch_to_document(batch)))
    assert len(batch.outcomes) < FOREIGN // 2, (len(batch.outcomes), size)


@pytest.mark.parametrize("count", [-5, 10**200])
async def test_a_registration_count_no_batch_can_have_is_invalid_input(count: int) -> None:
    """A registration whose ``expected_essay_count`` is negative or past any count a
    completion may report is invalid input, as out-of-range counts of a completion are.
    Before the fix, it was stored and served as ``expected_essays``."""
    store = InMemoryResultsStore()
    service = ResultsService(store, clock=ManualClock())
    topic, envelope = registered("b1")
    envelope["data"]["expected_essay_count"] = count
    with pytest.raises(InvalidMessageError):
        await service.handle_message(topic, json.dumps(envelope))
    assert await store.load("b1") is None


async def test_outcomes_of_a_completed_run_are_dropped_whatever_their_number() -> None:
    """outcomes redelivered (fresh event ids) with the completed run's own correlation
    id are dropped by the completion: the document keeps none of them."""
    store = InMemoryResultsStore()
    service = ResultsService(store, clock=ManualClock())
    await service.handle_message(*registered("b1"))
    await service.handle_message(*dispatch("b1", "spellcheck", "c1", when=at(1)))
    await service.handle_message(*completion("b1", "r1", "c1", when=at(5)))
    for i in range(200):
        await service.handle_message(
            *outcome("b1", "spellcheck", "c1", processed=["e0"] * (i % 3), when=at(6 + i))
        )
    batch = await store.load("b1")
    assert batch is not None
    assert batch.outcomes == ()
