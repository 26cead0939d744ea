"""Issue 10.3 as properties: completion figures never exceed the items that entered the run,
whatever outcomes arrive (hostile ones are refused with ItemMismatchError)."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline_state._commands import Command
from pipeline_state._decide import decide
from pipeline_state.errors import ItemMismatchError
from pipeline_state.profiles.huleedu.events import (
    BatchPipelineCompletedV1,
    ELSBatchPhaseOutcomeV1,
    Topic,
    parse_message,
)
from pipeline_state.profiles.huleedu.profile import huleedu_profile
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes
from pipeline_state.profiles.huleedu.testing.strategies import EngineTrace, engine_traces, profile_specs

__all__: list[str] = []

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
NOW = datetime(2025, 1, 1, tzinfo=UTC)


@st.composite
def traces(draw: st.DrawFn) -> EngineTrace:
    return draw(engine_traces(draw(profile_specs()).profile()))


def _check_figures(completion: BatchPipelineCompletedV1, items: int) -> None:
    assert completion.successful_essay_count + completion.failed_essay_count <= items
    for result in completion.phase_results.values():
        assert result.successful + result.failed <= items


@FAST
@given(traces())
def test_prop_completion_figures_never_exceed_the_batchs_items(trace: EngineTrace) -> None:
    for step in trace.steps:
        if step.decision is None or step.decision.state is None:
            continue
        for emit in step.decision.emits:
            if emit.topic == Topic.PIPELINE_COMPLETED.value:
                assert isinstance(emit.payload, BatchPipelineCompletedV1)
                _check_figures(emit.payload, len(step.decision.state.items))


@FAST
@given(
    essays=st.integers(1, 5),
    processed=st.lists(st.sampled_from(["e0", "e1", "e2", "e3", "e4", "x1", "x2"]), max_size=8),
    failed=st.lists(st.sampled_from(["e0", "e1", "e2", "e3", "e4", "x1", "x2"]), max_size=8),
    status=st.sampled_from(["completed_successfully", "completed_with_failures", "failed_critically"]),
)
def test_prop_an_outcome_over_any_items_is_refused_or_keeps_figures_real(
    essays: int, processed: list[str], failed: list[str], status: str
) -> None:
    profile = huleedu_profile()
    env = HuleEduEnvelopes()
    ids = [f"e{i}" for i in range(essays)]
    state = None
    register = env.register("b1", items=essays)
    register[1]["data"]["essay_ids"] = ids  # type: ignore[index]
    deliveries = [
        register,
        env.provisioned("b1", ids),
        env.request("b1", "nlp", prompt_payload={"prompt_ref": "p"}),
    ]
    for topic, value in deliveries:
        envelope, payload = parse_message(topic, value)
        state = decide(
            state,
            Command(payload, str(envelope.event_id), str(envelope.correlation_id)),
            profile=profile,
            now=NOW,
        ).state
    assert state is not None
    assert state.active_run is not None
    corr = state.active_run.correlation_id
    outcome = ELSBatchPhaseOutcomeV1(
        batch_id="b1",
        phase_name="spellcheck",
        phase_status=status,  # type: ignore[arg-type]
        processed_essays=[{"essay_id": e, "text_storage_id": f"{e}-s"} for e in processed],  # type: ignore[misc]
        failed_essay_ids=failed,
        correlation_id=corr,  # type: ignore[arg-type]
    )
    try:
        decision = decide(state, Command(outcome, "ev-outcome", corr), profile=profile, now=NOW)
    except ItemMismatchError:
        assert (
            not set(processed) | set(failed) <= set(ids)
            or set(processed) & set(failed)
            or len(set(processed)) < len(processed)
            or len(set(failed)) < len(failed)
        )
        return
    assert decision.state is not None
    phase = (decision.state.active_run or decision.archived[-1]).phase("spellcheck")
    assert phase is not None
    assert len(phase.outputs) + len(phase.failed_item_ids) <= essays
    for emit in decision.emits:
        if isinstance(emit.payload, BatchPipelineCompletedV1):
            _check_figures(emit.payload, essays)
