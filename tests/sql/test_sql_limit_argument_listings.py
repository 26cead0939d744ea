"""The ``limit`` rule on the other listings of the stores: ``list_batches`` (and its
``offset``), ``claim`` and ``parked``, and the results stores' listings."""

from __future__ import annotations

from typing import Any

from pipeline_state import InMemoryStore

from .conftest import StoreMaker
from .test_sql_limit_argument_rule import _three_overdue_runs


async def _answer(call: Any) -> str:
    try:
        found = await call
    except ValueError as exc:
        return f"ValueError: {exc}"[:10]
    except Exception as exc:
        return type(exc).__name__
    return f"{len(found)} items"


async def test_list_batches_claim_and_parked_refuse_a_limit_below_one(make_store: StoreMaker) -> None:
    """Was a defect (found by a review of the limit rule's first form).

    Expected (the fix's own rule, CHANGELOG "a limit below 1 ... now raise ValueError";
    CONTRACT: the stores are interchangeable): ``list_batches(limit=-1)``,
    ``claim(now, -1)`` and ``parked(-1)`` raise ``ValueError`` on every store, as
    ``overdue_batches`` now does.

    Actual: three answers again. In memory ``list_batches`` slices ``ids[0:-1]`` and hides
    the last batch (pipeline_state/_memory.py ``list_batches``); SQLite reads ``LIMIT -1`` as
    no limit and lists all three; PostgreSQL raises ``RejectedDataError`` (LIMIT must not be
    negative). ``claim``/``parked`` likewise (adapters/pipeline_state_sql/lane_store.py
    ``claim``/``parked``, pipeline_state/_memory.py ``claim``/``parked``): no
    ``check_limit`` there."""
    answers: dict[str, dict[str, str]] = {}
    for name, store in (("memory", InMemoryStore()), ("sql", await make_store())):
        _, clock = await _three_overdue_runs(store)  # rows in the outbox, batches listed
        answers[name] = {
            "list_batches": await _answer(store.list_batches(limit=-1)),
            "claim": await _answer(store.claim(clock.now(), -1)),
            "parked": await _answer(store.parked(-1)),
        }
    assert answers["memory"] == answers["sql"], answers
    assert all(a.startswith("ValueError") for a in answers["sql"].values()), answers


async def test_the_results_stores_and_offsets_take_the_rule_too(make_store: StoreMaker) -> None:
    import pytest
    from pipeline_state_sql.results_store import open_results_store

    from pipeline_state.profiles.huleedu.results import InMemoryResultsStore

    sql = await make_store()
    url = sql.engine.url
    results = [InMemoryResultsStore()]
    if url.get_backend_name() == "sqlite":
        results.append(await open_results_store(url))
    for store in results:
        with pytest.raises(ValueError, match="limit must be"):
            await store.list_batches(limit=0)
        with pytest.raises(ValueError, match="offset must be"):
            await store.list_batches(offset=-1)
        with pytest.raises(ValueError, match="limit must be"):
            await store.parked(-1)
    with pytest.raises(ValueError, match="offset must be"):
        await sql.list_batches(offset=-1)
    for store in results[1:]:
        await store.close()
