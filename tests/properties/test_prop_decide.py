"""Property tests of the pure core: ``decide`` over states the engine reaches.

States come from :func:`pipeline_state.profiles.huleedu.testing.strategies.engine_traces` (random commands
folded through ``decide`` from an empty store, over the HuleEdu pipelines with deadlines or
a random catalog, parallel or sequential); the next command from ``commands_for``.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline_state import Catalog, Profile, WireModel
from pipeline_state._commands import Command
from pipeline_state._decide import Decision, decide
from pipeline_state.errors import PipelineStateError
from pipeline_state.ports import BatchState
from pipeline_state.profiles.huleedu.events import (
    TOPICS,
    BatchPipelineCompletedV1,
    ELSBatchPhaseOutcomeV1,
    PhaseInitiateCommand,
    PhaseSkippedV1,
    parse_message,
)
from pipeline_state.profiles.huleedu.testing.reference import plan_order
from pipeline_state.profiles.huleedu.testing.strategies import (
    EngineTrace,
    TraceStep,
    catalog_data,
    commands_for,
    engine_traces,
    inbound_messages,
    profile_specs,
)

__all__: list[str] = []

# Each trace folds up to 30 commands through decide: 60 traces per property keeps every
# property at a few seconds on two cores.
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def traces(draw: st.DrawFn) -> EngineTrace:
    profile = draw(profile_specs()).profile()
    return draw(engine_traces(profile))


@st.composite
def state_and_command(draw: st.DrawFn) -> tuple[Profile, BatchState | None, Command, Any]:
    trace = draw(traces())
    command = draw(commands_for(trace.profile, trace.state, trace.batch_id))
    return trace.profile, trace.state, command, trace.now


def _decide(profile: Profile, state: BatchState | None, command: Command, now: Any) -> Decision | str:
    """The decision, or the error's type and message (errors are part of the contract)."""
    try:
        return decide(state, command, profile=profile, now=now)
    except PipelineStateError as exc:
        return f"{type(exc).__name__}: {exc}"


def _decisions(trace: EngineTrace) -> list[tuple[TraceStep, Decision]]:
    return [(step, step.decision) for step in trace.steps if step.decision is not None]


# -- the strategies themselves ----------------------------------------------------------


@FAST
@given(inbound_messages())
def test_prop_inbound_messages_are_valid(message: tuple[str, dict[str, Any]]) -> None:
    topic, envelope = message
    parsed, payload = parse_message(topic, envelope)
    assert parsed.event_type == topic
    assert isinstance(payload, TOPICS[topic].model)


@FAST
@given(catalog_data())
def test_prop_random_catalogs_load_in_an_order_the_reference_agrees_with(data: dict[str, Any]) -> None:
    catalog = Catalog.from_dict(data)
    assert catalog.names == tuple(data["pipelines"])
    for name, pipeline in data["pipelines"].items():
        steps = [(s["name"], tuple(s.get("depends_on", ()))) for s in pipeline["steps"]]
        order = catalog.get(name).step_names
        assert list(order) == plan_order(steps)
        for step, deps in steps:
            assert all(order.index(d) < order.index(step) for d in deps)


# -- decide -----------------------------------------------------------------------------


@FAST
@given(state_and_command())
def test_prop_decide_is_deterministic(case: tuple[Profile, BatchState | None, Command, Any]) -> None:
    profile, state, command, now = case
    assert _decide(profile, state, command, now) == _decide(profile, state, command, now)


@FAST
@given(traces())
def test_prop_versions_never_go_down(trace: EngineTrace) -> None:
    for step, decision in _decisions(trace):
        if step.before is None or decision.state is None:
            continue
        if decision.changed:
            assert decision.state.version == step.before.version + 1
        else:
            assert decision.state is step.before


@FAST
@given(traces())
def test_prop_ignored_and_denied_inputs_return_the_same_state(trace: EngineTrace) -> None:
    ignored = 0
    for step, decision in _decisions(trace):
        if decision.ignored is not None:
            ignored += 1
            assert decision.state is step.before, decision.ignored
            assert decision.emits == ()
            assert decision.moves == ()
        if decision.denial is not None:
            assert decision.state is step.before
            assert [e.topic for e in decision.emits] == [
                "huleedu.pipeline.denied.v1",
                "huleedu.notification.teacher.requested.v1",
            ]
    # Failing steps change nothing: the next step starts from the same state.
    for previous, step in zip(trace.steps, trace.steps[1:], strict=False):
        if previous.error is not None:
            assert step.before is previous.before


def _check_payload(profile: Profile, topic: str, key: str | None, payload: WireModel) -> None:
    spec = TOPICS.get(topic)
    if spec is not None:
        assert spec.direction == "out"
        model: type[WireModel] = spec.model
        key_field = spec.key_field
    else:
        (model,) = [c.model for c in profile.phase_commands.values() if c.topic == topic]
        key_field = "batch_id"
    assert isinstance(payload, model)
    assert model.model_validate(payload.model_dump(mode="json")) == payload
    assert key == getattr(payload, key_field)


@FAST
@given(traces())
def test_prop_every_outgoing_payload_validates_against_its_topic(trace: EngineTrace) -> None:
    for _, decision in _decisions(trace):
        for emit in decision.emits:
            _check_payload(trace.profile, emit.topic, emit.key, emit.payload)


def _final_step(profile: Profile, pipeline_name: str) -> str:
    if pipeline_name in profile.catalog:
        return profile.catalog.get(pipeline_name).final_step
    return pipeline_name  # a retry runs one phase, under that phase's name


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(traces())
def test_prop_completion_counts_add_up_to_the_essays_that_entered_the_run(trace: EngineTrace) -> None:
    """``successful + failed`` is the number of essays that entered the run, observed from
    the outside: the essays sent to its phases, plus those that came out of its final step
    (which, when pruned, are the outputs recorded by an earlier run)."""
    phase_topics = {spec.topic for spec in trace.profile.phase_commands.values()}
    sent: defaultdict[str, set[str]] = defaultdict(set)
    pruned: defaultdict[str, set[str]] = defaultdict(set)
    outputs: dict[tuple[str, str], set[str]] = {}
    recorded: dict[str, set[str]] = {}
    for step, decision in _decisions(trace):
        payload = step.command.payload
        if isinstance(payload, ELSBatchPhaseOutcomeV1) and decision.changed:
            # Applied to the active run, even with a foreign correlation id (issue 11.3).
            assert step.before is not None
            assert step.before.active_run is not None
            corr = step.before.active_run.correlation_id
            outputs[(corr, payload.phase_name)] = {e.essay_id for e in payload.processed_essays}
        for emit in decision.emits:
            out = emit.payload
            if emit.topic in phase_topics and isinstance(out, PhaseInitiateCommand):
                sent[emit.correlation_id].update(e.essay_id for e in out.essays_to_process)
            elif isinstance(out, PhaseSkippedV1) and out.skip_reason == "already_completed":
                pruned[out.correlation_id].add(out.phase_name)
            elif isinstance(out, BatchPipelineCompletedV1):
                corr = out.correlation_id
                final = _final_step(trace.profile, out.pipeline_name)
                if final in out.completed_phases:
                    successful = outputs[(corr, final)]
                elif final in pruned[corr]:
                    successful = recorded[final]
                else:
                    successful = set()
                entered = sent[corr] | successful
                assert out.successful_essay_count == len(successful)
                assert out.failed_essay_count == len(entered - successful)
                assert out.successful_essay_count + out.failed_essay_count == len(entered)
                for phase in out.completed_phases:
                    recorded[phase] = outputs[(corr, phase)]
