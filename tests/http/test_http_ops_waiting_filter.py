"""the batch id filter of ``GET /v1/ops/waiting`` skips the id rule.

A batch id in a path is checked against the wire's id rule (no NUL, control characters,
line separators, bidi marks) and refused with 422 ``validation_error`` before any store is
asked (``test_bad_ids_in_paths_are_422_before_the_store_is_asked``). The same id as the
``batch_id`` query filter of the operational waiting-facts listing is only length-checked
(``Query(max_length=200)``), so the answer depends on the store: the in-memory store answers
200 with an empty list for a NUL, SQLite and PostgreSQL 422 ``rejected_data`` from the
store, and every store answers 200 to ESC sequences and U+2028.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from pipeline_state_http import HttpSettings, create_app

from pipeline_state import InMemoryStore, ManualClock, PipelineService

OPS = "ob-ops-token"
BASE = "http://testserver"


class CountingStore(InMemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.asked: list[Any] = []

    async def list_waiting(self, *args: Any, **kwargs: Any) -> Any:
        self.asked.append((args, kwargs))
        return await super().list_waiting(*args, **kwargs)


@pytest.mark.parametrize("value", ["a%00b", "%1b%5b2J", "a%0Ab", "a%E2%80%A8b", "a%E2%80%AEb"])
async def test_ops_waiting_batch_id_filter_is_checked_by_the_id_rule(value: str) -> None:
    """Was a defect (fixed): Observed: 200 ``{"count":0,"facts":[]}`` from the in-memory store
    (the store was asked). Expected: 422 ``validation_error`` on ``query.batch_id`` before the
    store is asked, as for the same id in a path."""
    store = CountingStore()
    app = create_app(PipelineService(store, clock=ManualClock()), settings=HttpSettings(ops_token=OPS))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as http:
        answer = await http.get(
            f"/v1/ops/waiting?batch_id={value}", headers={"Authorization": f"Bearer {OPS}"}
        )
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"] == "validation_error"
    assert store.asked == []


async def test_ops_waiting_with_a_plain_batch_id_filter_answers() -> None:
    store = CountingStore()
    app = create_app(PipelineService(store, clock=ManualClock()), settings=HttpSettings(ops_token=OPS))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as http:
        answer = await http.get("/v1/ops/waiting?batch_id=b-1", headers={"Authorization": f"Bearer {OPS}"})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"count": 0, "facts": []}
    assert len(store.asked) == 1
