"""Both SQL stores stand on one ``LaneStore``: the same error translation at the boundary."""

from __future__ import annotations

from typing import Any

import pytest
from pipeline_state_sql.lane_store import LaneStore
from pipeline_state_sql.results_store import open_results_store

from pipeline_state.errors import RejectedDataError
from pipeline_state.ports import InboxEntry
from pipeline_state.profiles.huleedu.results import ResultsChange
from pipeline_state.profiles.huleedu.testing.results_contract import T0, sample_batch

LONE = "b-\udc80"


async def test_a_results_value_the_driver_cannot_encode_is_rejected_data(database: Any) -> None:
    store = await open_results_store(database.url, schema=database.schema)
    try:
        assert isinstance(store, LaneStore)
        change = ResultsChange(
            "b1", None, sample_batch("b1"), T0, inbox=InboxEntry(LONE, "t", "b1", "applied", T0)
        )
        with pytest.raises(RejectedDataError):
            await store.commit(change)
        assert await store.load("b1") is None
        # The store still works: the failed commit left nothing behind.
        await store.commit(ResultsChange("b1", None, sample_batch("b1"), T0))
        loaded = await store.load("b1")
        assert loaded is not None
        assert loaded.version == 1
    finally:
        await store.close()
