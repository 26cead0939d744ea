"""The stateful property test: random interleavings against the engine, checked against the
reference model after every step (see :mod:`pipeline_state.profiles.huleedu.testing.harness` for the rules
and the invariants a-i, waiting facts and their expiry included).

Bounded for CI: a few hundred examples of 40 steps run in well under a minute; under
``CI`` Hypothesis loads its ``ci`` profile (``derandomize=True``), which these settings
inherit, so CI runs the same examples every time."""

from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from pipeline_state import InMemoryStore, ManualClock, PipelineService, Profile
from pipeline_state.profiles.huleedu.testing.harness import EngineUnderTest, PipelineMachine
from pipeline_state.profiles.huleedu.testing.strategies import HULEEDU_DEADLINE_CATALOG, ProfileSpec

__all__ = ["TestPipelineMachine", "TestSequentialServiceMachine"]

_SUPPRESSED = [HealthCheck.too_slow, HealthCheck.filter_too_much]


class InMemoryMachine(PipelineMachine):
    """The shipped harness with its default engine: an ``InMemoryRuntime`` (its relay and
    bus included), over HuleEdu-with-deadlines and random catalogs."""


InMemoryMachine.TestCase.settings = settings(
    max_examples=200, stateful_step_count=40, deadline=None, suppress_health_check=_SUPPRESSED
)
TestPipelineMachine = InMemoryMachine.TestCase


async def _bare_service(profile: Profile, clock: ManualClock) -> EngineUnderTest:
    """The factory hook other stores use: a plain service, no relay, no bus."""
    return EngineUnderTest(PipelineService(InMemoryStore(), profile=profile, clock=clock))


SequentialServiceMachine = PipelineMachine.with_engine(
    _bare_service,
    profiles=st.just(ProfileSpec(HULEEDU_DEADLINE_CATALOG, max_parallel=1)),
    name="SequentialServiceMachine",
)
SequentialServiceMachine.TestCase.settings = settings(
    max_examples=50, stateful_step_count=40, deadline=None, suppress_health_check=_SUPPRESSED
)
TestSequentialServiceMachine = SequentialServiceMachine.TestCase
