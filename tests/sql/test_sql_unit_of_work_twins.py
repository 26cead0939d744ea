"""The in-memory and SQL unit-of-work engines answer the same change the same way.

Both stores of each kind (the pipeline's batch states, the results read models) are built
on one engine per technology (:mod:`pipeline_state._memory_unit_of_work`,
:mod:`pipeline_state_sql.unit_of_work`). Changes that break two rules at once show the
order of the checks: the compare-and-set first, then the inbox, on every engine.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from pipeline_state_sql import open_store
from pipeline_state_sql.results_store import open_results_store

from pipeline_state._memory import InMemoryStore
from pipeline_state.errors import ConcurrencyConflictError, DuplicateEventError
from pipeline_state.ports import Change, InboxEntry
from pipeline_state.profiles.huleedu.results import InMemoryResultsStore, ResultsChange
from pipeline_state.profiles.huleedu.testing.results_contract import sample_batch
from pipeline_state.testing.contract import T0, make_state

KINDS = [
    "memory-pipeline",
    "sql-pipeline",
    pytest.param("postgres-pipeline", marks=pytest.mark.postgres),
    "memory-results",
    "sql-results",
    pytest.param("postgres-results", marks=pytest.mark.postgres),
]


def _pipeline(
    batch_id: str, expected: int | None, version: int | None, event_id: str, of: str | None = None
) -> Change:
    """A change of ``batch_id`` whose new state (of batch ``of``, by default the same) has
    ``version`` (``None``: no new state)."""
    state = None if version is None else make_state(of or batch_id, version=version)
    return Change(batch_id, expected, state, T0, inbox=InboxEntry(event_id, "t", batch_id, "applied", T0))


def _results(
    batch_id: str, expected: int | None, version: int | None, event_id: str, of: str | None = None
) -> ResultsChange:
    """The same for a results read model."""
    batch = None if version is None else sample_batch(of or batch_id, version=version)
    inbox = InboxEntry(event_id, "t", batch_id, "applied", T0)
    return ResultsChange(batch_id, expected, batch, T0, inbox=inbox)


Make = Callable[..., Any]


@pytest.fixture(params=KINDS)
async def engine(request: pytest.FixtureRequest, sqlite_url: str) -> AsyncIterator[tuple[Any, Make]]:
    kind = request.param
    if kind == "memory-pipeline":
        yield InMemoryStore(), _pipeline
    elif kind == "memory-results":
        yield InMemoryResultsStore(), _results
    else:
        pipeline = kind.endswith("-pipeline")
        opener: Any = open_store if pipeline else open_results_store
        if kind.startswith("postgres"):
            # On PostgreSQL the pipeline's unit of work is one statement: the order of its
            # checks is the statement's.
            pg = request.getfixturevalue("pg")
            store: Any = await opener(pg.url, schema=pg.schema)
        else:
            store = await opener(sqlite_url)
        yield store, _pipeline if pipeline else _results
        await store.close()


async def test_a_stale_version_wins_over_a_duplicate(engine: tuple[Any, Make]) -> None:
    store, make = engine
    await store.commit(make("b1", None, 1, "e1"))
    with pytest.raises(ConcurrencyConflictError) as info:
        await store.commit(make("b1", None, 2, "e1"))  # the row exists, and e1 was processed
    assert (info.value.expected, info.value.actual) == (None, 1)
    with pytest.raises(ConcurrencyConflictError):
        await store.commit(make("b1", 1, 1, "e1"))  # a version that does not grow, and e1
    with pytest.raises(DuplicateEventError):
        await store.commit(make("b1", 1, None, "e1"))  # the version holds: the duplicate
    assert (await store.load("b1")).version == 1


async def test_a_document_of_another_key_is_a_conflict(engine: tuple[Any, Make]) -> None:
    store, make = engine
    with pytest.raises(ConcurrencyConflictError):
        await store.commit(make("b1", None, 1, "e1", of="b2"))
    assert await store.load("b1") is None
    assert await store.inbox_entry("e1") is None
