"""Inbound ``event_timestamp`` in a leap second (RFC 3339 second 60): read as the last
microsecond of second 59, never refused."""

from __future__ import annotations

import pytest
from core_flow import Flow
from pydantic import ValidationError

from pipeline_state import InMemoryRuntime
from pipeline_state._wire import EventEnvelope
from pipeline_state.errors import PipelineStateError
from pipeline_state.profiles.huleedu.events import Topic
from pipeline_state.profiles.huleedu.profile import huleedu_profile
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes

LEAP_SECOND = "2016-12-31T23:59:60Z"
"""A real leap second (IERS Bulletin C 52): valid ISO 8601 / RFC 3339 ``date-time``."""


async def test_an_outcome_stamped_in_a_leap_second_is_applied() -> None:
    """Was a defect (found by an attack on time).

    Expected (CONTRACT §3: ``event_timestamp`` is ISO-8601, UTC; §4: bad input is what
    breaks the contract): a worker's final phase outcome whose ``event_timestamp`` is
    ``2016-12-31T23:59:60Z`` - a lawful ISO 8601 / RFC 3339 leap second, as a worker on a
    clock that shows the leap second writes it - is applied (the engine never even reads
    ``event_timestamp`` to decide; the stamp can be read as ``23:59:59.999999``), and the run
    completes.

    Actual: ``EventEnvelope.event_timestamp`` is a plain pydantic ``datetime`` (pipeline_state/
    _wire.py ``EventEnvelope``), which refuses second 60: ``InvalidMessageError`` ("Input
    should be a valid datetime or date, unexpected extra characters"), so the consumer
    dead-letters the worker's only outcome and the run can only end by the phase's timeout
    (``failed_critically`` instead of ``completed_successfully``)."""
    flow = Flow(InMemoryRuntime(huleedu_profile()), HuleEduEnvelopes())
    ids = await flow.ready("b1", items=2)
    started = await flow.start("b1", "nlp", prompt_payload={"prompt_ref": "p"})
    await flow.outcome("b1", "spellcheck", started.correlation_id, processed=ids)
    topic, value = flow.env.outcome("b1", "nlp", started.correlation_id, processed=ids)
    value = dict(value, event_timestamp=LEAP_SECOND)
    try:
        out = await flow.rt.deliver(topic, value)
    except PipelineStateError as exc:
        raise AssertionError(f"the leap-second outcome was refused: {exc}") from None
    completed = [m for m in out if m["topic"] == Topic.PIPELINE_COMPLETED.value]
    assert len(completed) == 1
    assert completed[0]["value"]["data"]["final_status"] == "completed_successfully"


@pytest.mark.parametrize(
    ("stamp", "read"),
    [
        ("2016-12-31T23:59:60Z", "2016-12-31T23:59:59.999999+00:00"),
        ("2016-12-31T23:59:60.25Z", "2016-12-31T23:59:59.999999+00:00"),
        ("2017-01-01T00:59:60+01:00", "2016-12-31T23:59:59.999999+00:00"),
    ],
)
def test_a_leap_second_is_read_as_the_end_of_second_59(stamp: str, read: str) -> None:
    envelope = EventEnvelope.model_validate({**_ENVELOPE, "event_timestamp": stamp})
    assert envelope.event_timestamp.isoformat() == read


@pytest.mark.parametrize("stamp", ["2016-12-31T23:60:00Z", "2016-12-31T23:59:61Z", "2016-12-31T24:00:60Z"])
def test_other_out_of_range_times_are_still_refused(stamp: str) -> None:
    with pytest.raises(ValidationError):
        EventEnvelope.model_validate({**_ENVELOPE, "event_timestamp": stamp})


_ENVELOPE = {
    "event_id": "6f1c1c52-3c0e-4a43-9a3e-2f1f3c8a8b11",
    "event_type": "t",
    "source_service": "s",
    "correlation_id": "6f1c1c52-3c0e-4a43-9a3e-2f1f3c8a8b12",
    "data": {},
}
