"""A keyed operator request the batch's state refused is replayed with the first answer's
whole error: status, code and the context that names what was refused (the lifecycle,
state and trigger of an illegal transition), so the typed client raises the same error
the first time and the second."""

from __future__ import annotations

import pytest
from pipeline_state_http import PipelineStateClient

from pipeline_state import IllegalTransitionError

from .conftest import MakeReady


async def test_a_replayed_illegal_transition_keeps_what_was_refused(
    client: PipelineStateClient, make_ready: MakeReady
) -> None:
    """Was a defect (fixed): the replay kept the status and ``error`` but not the context,
    so the client raised ``IllegalTransitionError('?', '?', '?')`` the second time."""
    await make_ready("b1")
    with pytest.raises(IllegalTransitionError) as first:
        await client.cancel("b1", idempotency_key="k-1")
    with pytest.raises(IllegalTransitionError) as again:
        await client.cancel("b1", idempotency_key="k-1")
    seen = (first.value.lifecycle, first.value.state, first.value.trigger)
    assert "?" not in seen
    assert (again.value.lifecycle, again.value.state, again.value.trigger) == seen
    assert again.value.batch_id == first.value.batch_id == "b1"
