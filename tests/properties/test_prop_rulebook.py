"""The lifecycles are the rule-book: every move ``decide`` makes is a declared transition.

Random engine traces (the same generator as the other decide properties) are decided; each
move of a batch, run or phase must be one of its lifecycle's declared transitions (creation
from the empty source included), and a decision that changed the state must have logged a
move of the batch whenever the batch's status changed.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings

from pipeline_state._decide import decide
from pipeline_state._lifecycle import ABSENT, LIFECYCLES
from pipeline_state.profiles.huleedu.testing.strategies import EngineTrace, engine_traces

DECLARED = {
    (name, trigger, source, t.dest)
    for name, lc in LIFECYCLES.items()
    for t in lc.transitions
    for source in t.sources
    for trigger in (t.trigger,)
}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(engine_traces())
def test_prop_every_move_is_a_declared_transition(trace: EngineTrace) -> None:
    for step in trace.steps:
        decision = step.decision
        if decision is None:  # the input raised: it moved nothing
            assert step.error is not None
            continue
        assert decide(step.before, step.command, profile=trace.profile, now=step.now) == decision
        for move in decision.moves:
            source = ABSENT if move.source == "" else move.source
            assert (move.entity, move.trigger, source, move.dest) in DECLARED, move
        before, after = step.before, decision.state
        if before is not None and after is not None and before.status != after.status:
            assert any(m.entity == "batch" for m in decision.moves)
