"""The test kit's strategies take any profile (issue 13, point 6): what they draw is the
profile's own wire, and delivered in order it drives the engine through real runs."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import HealthCheck, Phase, find, given, settings

from pipeline_state import InMemoryRuntime, Profile
from pipeline_state._clock import ManualClock
from pipeline_state._inputs import EngineInput, GroupConfirmed, ItemsReady, ValidationFailed
from pipeline_state._lifecycle import BatchStatus
from pipeline_state.errors import BadCommandError
from pipeline_state.profiles import default_profile
from pipeline_state.testing.builders import Delivery, Envelopes
from pipeline_state.testing.strategies import deliveries, engine_inputs, traces
from tests.core.core_flow import load_example

MEDIA: Profile = load_example("custom_catalog").MEDIA
PROFILES = [pytest.param(default_profile(), id="huleedu"), pytest.param(MEDIA, id="media")]
FAST = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))


def _play(profile: Profile, trace: list[Delivery]) -> tuple[InMemoryRuntime, list[str]]:
    """Deliver ``trace`` in order; the handling labels (``refused:<error>`` for a message the
    service refuses as bad input, as documented: a drawn outcome may name items an earlier
    failure kept from its phase), and the runtime afterwards."""

    async def play() -> tuple[InMemoryRuntime, list[str]]:
        rt = InMemoryRuntime(profile, clock=ManualClock())
        labels = []
        for topic, envelope in trace:
            try:
                result = await rt.service.handle_message(topic, envelope)
            except BadCommandError as exc:
                labels.append(f"refused:{type(exc).__name__}")
                continue
            labels.append(result.label)
            await rt.relay.drain()
        return rt, labels

    return asyncio.run(play())


@pytest.mark.parametrize("profile", PROFILES)
def test_drawn_inputs_travel_on_the_profiles_own_topics(profile: Profile) -> None:
    env = Envelopes(profile=profile)

    @FAST
    @given(value=engine_inputs(profile), message=deliveries(profile))
    def check(value: EngineInput, message: Delivery) -> None:
        topic, envelope = message
        assert topic in profile.inbound
        _, parsed = profile.inbound.parse(topic, envelope)
        assert parsed.batch_id in ("b1", "b2")
        # What is drawn is an input the profile's wire carries: it reads back as its kind.
        _, again = profile.inbound.parse(*env.send(value))
        assert (type(again), again.batch_id) == (type(value), value.batch_id)

    check()


@pytest.mark.parametrize("profile", PROFILES)
def test_drawn_traces_keep_the_engines_promises(profile: Profile) -> None:
    @FAST
    @given(trace=traces(profile, max_size=15))
    def check(trace: list[Delivery]) -> None:
        rt, labels = _play(profile, trace)
        assert not [label for label in labels if label.startswith("dead_lettered")], labels
        for state in asyncio.run(rt.store.list_batches(limit=100)):
            assert (state.status is BatchStatus.PROCESSING_PIPELINES) == (state.active_run is not None)

    check()


@pytest.mark.parametrize("profile", PROFILES)
def test_drawn_traces_reach_a_completed_run(profile: Profile) -> None:
    # Not only refusals: some trace the strategy draws completes a run of the profile.
    def completes(trace: list[Delivery]) -> bool:
        rt, _ = _play(profile, trace)
        return any(
            asyncio.run(rt.store.history(s.batch_id)) for s in asyncio.run(rt.store.list_batches(limit=100))
        )

    search = settings(max_examples=2_000, deadline=None, database=None, phases=[Phase.generate])
    found = find(traces(profile, max_size=20), completes, settings=search)
    assert found


@FAST
@given(value=engine_inputs(MEDIA))
def test_a_wire_without_group_confirmation_never_draws_one(value: EngineInput) -> None:
    # The media wire consumes no group confirmation, validation error or items-ready fact.
    assert not isinstance(value, GroupConfirmed | ValidationFailed | ItemsReady)
