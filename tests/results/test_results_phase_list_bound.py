"""A completion lists at most ``MAX_PHASES_LISTED`` phases in each of its phase lists, so
the announcement every applied completion makes stays publishable."""

from __future__ import annotations

import json

import pytest
from results_events import at, completion, registered

from pipeline_state import ManualClock
from pipeline_state.errors import InvalidMessageError
from pipeline_state.profiles.huleedu.results import InMemoryResultsStore, ResultsService
from pipeline_state.profiles.huleedu.results.projection import MAX_PHASES_LISTED


def _completion(phases: int, field: str) -> tuple[str, str]:
    results = {f"p{i}": ("completed_successfully", 1, 0, 1.0) for i in range(phases)}
    topic, envelope = completion("b1", "r1", "c1", when=at(10), phases=results)
    names = [f"p{i}" for i in range(phases)]
    envelope["data"]["completed_phases"] = names if field == "completed_phases" else []
    envelope["data"]["skipped_phases"] = names if field == "skipped_phases" else []
    if field != "phase_results":
        envelope["data"]["phase_results"] = {}
    return topic, json.dumps(envelope)


@pytest.mark.parametrize("field", ["completed_phases", "skipped_phases", "phase_results"])
async def test_a_completion_listing_more_phases_than_the_bound_is_refused(field: str) -> None:
    service = ResultsService(InMemoryResultsStore(), clock=ManualClock())
    await service.handle_message(*registered("b1"))
    with pytest.raises(InvalidMessageError) as caught:
        await service.handle_message(*_completion(MAX_PHASES_LISTED + 1, field))
    assert caught.value.field == f"data.{field}"
    handled = await service.handle_message(*_completion(MAX_PHASES_LISTED, field))
    assert not handled.duplicate
