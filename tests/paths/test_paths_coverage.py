"""Issue 12.3: every declared transition is reached by a generated path, the search is
finite and complete, its paths are the shortest, and ``decide`` keeps its invariants on
every input of every reachable abstract state."""

from __future__ import annotations

from typing import Any

import attrs

from pipeline_state._decide import Move
from pipeline_state._lifecycle import ABSENT, LIFECYCLES
from pipeline_state.testing import (
    Exploration,
    TransitionKey,
    coverage,
    declared_transitions,
    engine_invariants,
)
from pipeline_state.testing.paths import abstract_key

__all__: list[str] = []

KNOWN_VIOLATIONS = {"dispatch_without_items"}
"""Broken invariants found by the exploration and reported, each with its own test below."""


def test_every_declared_transition_of_every_lifecycle_is_reached(exploration: Exploration) -> None:
    result = coverage(exploration)
    lines = []
    for lc in result.lifecycles:
        lines += [f"unreached {key}" for key in lc.missing]
        lines += [f"undeclared move {key}" for key in lc.undeclared]
    assert result.complete, "\n".join(lines)
    assert [lc.lifecycle for lc in result.lifecycles] == list(LIFECYCLES)
    for lc in result.lifecycles:
        assert lc.covered == lc.declared


def test_the_declared_transitions_are_read_from_the_definitions() -> None:
    declared = declared_transitions()
    # One per source of each transition, each guarded alternative apart.
    for name, lifecycle in LIFECYCLES.items():
        pairs = {(t.trigger, s, t.dest) for t in lifecycle.transitions for s in t.sources}
        assert {(k.trigger, k.source, k.dest) for k in declared[name]} == pairs
    assert TransitionKey("batch", "register", ABSENT, "awaiting_content_validation") in declared["batch"]
    finishes = [k.dest for k in declared["run"] if k.trigger == "finish"]
    assert finishes == ["completed_successfully", "completed_with_failures", "failed_critically"]
    expires = [k.dest for k in declared["phase"] if k.trigger == "expire"]
    assert expires == ["dispatch_initiated", "failed"]


def test_the_engine_makes_only_declared_moves(exploration: Exploration) -> None:
    undeclared = [str(key) for lc in coverage(exploration).lifecycles for key in lc.undeclared]
    assert not undeclared


def test_the_search_is_finite_complete_and_never_crashes_decide(exploration: Exploration) -> None:
    assert exploration.complete
    assert not exploration.crashes, [(c.path.labels, c.input.label, c.error) for c in exploration.crashes]
    assert len(exploration.states) > 1000
    statuses = {key.status for key in exploration.states}
    assert statuses == {ABSENT, *LIFECYCLES["batch"].states}
    for verdict in (
        "denied:batch_not_found",
        "denied:batch_not_ready",
        "denied:pipeline_already_active",
        "denied:prompt_not_attached",
        "denied:unknown_pipeline",
        "denied:dependencies_not_completed",
        "ignored:already_registered",
        "ignored:duplicate_outcome",
        "ignored:stale_run",
        "ignored:phase_not_dispatched",
        "ignored:non_critical_validation_errors",
        "raised:BatchNotFoundError",
        "raised:BatchConflictError",
        "raised:ItemMismatchError",
        "raised:UnknownPipelineError",
        "raised:IllegalTransitionError",
    ):
        assert verdict in exploration.verdicts, verdict


def test_every_path_is_a_shortest_one(exploration: Exploration) -> None:
    states = exploration.states
    # Breadth first: a path only extends the path that first reached its last state, so
    # each of its prefixes is the shortest path of the state it ends in.
    every = [*states.values(), *exploration.transitions.values(), *exploration.verdicts.values()]
    for path in every:
        for n in range(len(path)):
            prefix = path.steps[n - 1].state if n else None
            assert len(states[abstract_key(prefix)]) == n, path.describe()
    for key, path in states.items():
        assert path.key == key
    for transition, path in exploration.transitions.items():
        assert transition in path.steps[-1].transitions
        assert all(transition not in step.transitions for step in path.steps[:-1]), path.describe()
    for verdict, path in exploration.verdicts.items():
        assert path.steps[-1].verdict == verdict


def test_the_transitions_that_need_special_conditions_are_reached_as_intended(
    exploration: Exploration,
) -> None:
    paths = exploration.transitions
    abort = paths[TransitionKey("phase", "abort", "dispatch_initiated", "failed")]
    assert abort.labels[0] == "register_legacy"
    record = paths[TransitionKey("run", "record", ABSENT, "completed_successfully")]
    assert record.labels[-1].startswith("record:")
    assert record.labels[-1].endswith(":success")
    expired = paths[TransitionKey("phase", "expire", "dispatch_initiated", "failed")]
    assert expired.labels.count("expire_overdue") == exploration.profile.max_resends + 1
    pending = paths[TransitionKey("phase", "cancel", "pending_dependencies", "cancelled")]
    assert pending.labels[-1] in ("cancel_run", "cancel_batch", "validation_errors_critical")


def test_decide_keeps_its_invariants_on_every_input(exploration: Exploration) -> None:
    broken = {name: v for name, v in exploration.violations.items() if name not in KNOWN_VIOLATIONS}
    assert not broken, "\n\n".join(f"{v.name}: {v.detail}\n{v.path.describe()}" for v in broken.values())


def test_no_phase_is_dispatched_without_items(exploration: Exploration) -> None:
    found = exploration.violations.get("dispatch_without_items")
    assert found is None, f"{found and found.detail}\n{found and found.path.describe()}"


def test_the_invariant_check_catches_broken_decisions(exploration: Exploration) -> None:
    path = exploration.transitions[TransitionKey("batch", "provision_guest", *_GUEST_READY)]
    before = path.steps[-2].state
    step = path.steps[-1]
    profile = exploration.profile
    assert engine_invariants(before, step, profile) == []
    decision = step.decision
    assert decision is not None
    (move,) = decision.moves

    def broken(*moves: Move, **changes: Any) -> list[str]:
        doctored = attrs.evolve(decision, moves=moves, **changes)
        return engine_invariants(before, attrs.evolve(step, decision=doctored), profile)

    assert broken(attrs.evolve(move, trigger="provision")) == [
        f"undeclared_move: batch: provision {move.source} -> {move.dest}"
    ]
    assert _names(broken(attrs.evolve(move, source="archived"))) == {"undeclared_move", "move_source"}
    assert _names(broken(attrs.evolve(move, dest="cancelled"))) == {"undeclared_move", "final_status"}
    assert decision.state is not None
    same_version = attrs.evolve(decision.state, version=decision.state.version)
    assert before is not None
    stale = attrs.evolve(decision.state, version=before.version)
    assert broken(move, state=same_version) == []
    assert _names(broken(move, state=stale)) == {"version"}
    assert _names(broken(move, ignored="nope")) == {"refusal_moved"}
    assert _names(broken(ignored="nope", state=decision.state)) == {"version"}


def _names(problems: list[str]) -> set[str]:
    return {p.split(":")[0] for p in problems}


_GUEST_READY = ("awaiting_content_validation", "ready_for_pipeline_execution")
