"""Found by an attack: the engine against the shipped reference model on custom catalogs
(diamond, wide fan-in, phases shared by several pipelines, deadlines, re-sends,
max_parallel 2 and 3 which the shipped strategies never draw, strict correlation)."""

from __future__ import annotations

import copy
import logging
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import run_state_machine_as_test

from pipeline_state import InMemoryRuntime
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes
from pipeline_state.profiles.huleedu.testing.harness import PipelineMachine
from pipeline_state.profiles.huleedu.testing.reference import ReferenceModel
from pipeline_state.profiles.huleedu.testing.strategies import ProfileSpec

DEADLINES = {"a": 30, "b": 30, "d": 10, "r2": 20}


def _steps(steps: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "steps": [
            {**s, **({"deadline_seconds": DEADLINES[s["name"]]} if s["name"] in DEADLINES else {})}
            for s in steps
        ]
    }


DIAMOND = [
    {"name": "a"},
    {"name": "b", "depends_on": ["a"]},
    {"name": "c", "depends_on": ["a"]},
    {"name": "d", "depends_on": ["b", "c"]},
]
CATALOG = {
    "pipelines": {
        "diamond": _steps(DIAMOND),
        "one": _steps([{"name": "a"}, {"name": "b", "depends_on": ["a"]}]),
        "two": _steps([{"name": "a"}, {"name": "c", "depends_on": ["a"]}]),
        "wide": _steps(
            [
                {"name": "r1"},
                {"name": "r2"},
                {"name": "r3"},
                {"name": "r4"},
                {"name": "sink", "depends_on": ["r1", "r2", "r3", "r4"]},
            ]
        ),
    }
}


@pytest.mark.parametrize(
    ("max_parallel", "max_resends", "strict"),
    [(2, 2, False), (3, 1, True), (2, 0, True), (None, 2, False)],
)
def test_engine_agrees_with_the_reference_model_on_custom_catalogs(
    max_parallel: int | None, max_resends: int, strict: bool
) -> None:
    spec = ProfileSpec(
        copy.deepcopy(CATALOG), max_parallel=max_parallel, max_resends=max_resends, strict_correlation=strict
    )
    machine = type("PinnedMachine", (PipelineMachine,), {"profile_strategy": lambda self: st.just(spec)})
    logging.disable(logging.WARNING)
    try:
        run_state_machine_as_test(
            machine,
            settings=settings(
                max_examples=30,
                stateful_step_count=30,
                deadline=None,
                phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],
                suppress_health_check=list(HealthCheck),
            ),
        )
    finally:
        logging.disable(logging.NOTSET)


async def test_the_reference_model_keeps_each_pipelines_deadline() -> None:
    """Was a defect (fixed): the catalog lets a phase's deadline differ per pipeline and the
    engine uses the run's pipeline's value; the shipped reference model kept the
    first-declared one, so the stateful harness failed a correct engine on such a catalog.
    It now keeps a deadline per (pipeline, phase)."""
    data = {
        "pipelines": {
            "fast": {"steps": [{"name": "x", "deadline_seconds": 10}]},
            "slow": {"steps": [{"name": "x", "deadline_seconds": 100}]},
        }
    }
    spec = ProfileSpec(data, max_resends=0)
    rt, env = InMemoryRuntime(spec.profile()), HuleEduEnvelopes()
    ref = ReferenceModel(data, max_resends=0)
    registration = env.register("b1", items=1)
    ref.register(registration[1]["event_id"], registration[1]["data"])
    await rt.deliver(*registration)
    provisioned = env.provisioned("b1", ["b1-e0"])
    ref.provision(provisioned[1]["event_id"], "b1", {"b1-e0": "b1-e0-text"})
    await rt.deliver(*provisioned)
    request = env.request("b1", "slow")
    ref.request(request[1]["event_id"], "b1", "slow", request[1]["correlation_id"], prompt=False)
    await rt.deliver(*request)

    rt.clock.advance(11)
    ref.advance_clock(11)
    engine_out = await rt.expire_overdue()
    expected = ref.expire()
    engine_kind = "applied" if engine_out else "ignored"
    assert engine_kind == "ignored", "the engine must keep the slow pipeline's 100 s deadline"
    assert expected.kind == engine_kind, (
        f"reference model expects {expected.kind} (the fast pipeline's 10 s deadline) where the engine, "
        "following the run's pipeline, did nothing"
    )
