"""Mermaid diagrams and the transition table are generated from the definitions."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass

import pytest

from pipeline_state.diagrams import lifecycle_mermaid, pipeline_mermaid, transition_table
from pipeline_state.lifecycle import LIFECYCLES, PHASE_LIFECYCLE, Lifecycle, Transition


@dataclass(frozen=True)
class Step:
    name: str
    depends_on: tuple[str, ...] = ()


@dataclass(frozen=True)
class Pipeline:
    name: str
    steps: tuple[Step, ...]


AI_FEEDBACK = Pipeline(
    "ai_feedback",
    (Step("spellcheck"), Step("nlp", ("spellcheck",)), Step("ai_feedback", ("spellcheck", "nlp"))),
)


@pytest.mark.parametrize("lifecycle", list(LIFECYCLES.values()), ids=list(LIFECYCLES))
def test_every_transition_appears_in_the_state_diagram(lifecycle: Lifecycle) -> None:
    text = lifecycle_mermaid(lifecycle)
    lines = text.splitlines()
    assert lines[0] == "stateDiagram-v2"
    assert f"    [*] --> {lifecycle.initial}" in lines
    for trigger, source, dest in transition_table(lifecycle):
        assert f"    {source} --> {dest}: {trigger}" in lines
    for state in lifecycle.final:
        assert f"    {state} --> [*]" in lines
    assert "classDef" not in text
    arrows = [line for line in lines if "-->" in line]
    assert len(arrows) == 1 + len(transition_table(lifecycle)) + len(lifecycle.final)


def test_transition_table_follows_declaration_order() -> None:
    rows = transition_table(PHASE_LIFECYCLE)
    assert rows[0] == ("plan", "requested_by_user", "pending_dependencies")
    assert rows[-1] == ("cancel", "in_progress", "cancelled")
    assert len(rows) == sum(len(t.sources) for t in PHASE_LIFECYCLE.transitions)


def test_highlight_adds_the_current_class() -> None:
    text = lifecycle_mermaid(PHASE_LIFECYCLE, highlight=["in_progress", "legacy_value"], title="phase")
    lines = text.splitlines()
    assert lines[:3] == ["---", 'title: "phase"', "---"]
    assert any(line.strip().startswith("classDef current ") for line in lines)
    assert "    class in_progress current" in lines
    assert "legacy_value" not in text


def test_unsafe_state_names_get_safe_ids_and_keep_their_label() -> None:
    lc = Lifecycle(
        name="odd",
        states=("new item", "end"),
        initial="new item",
        final=frozenset({"end"}),
        transitions=(Transition("finish: now", "new item", "end"),),
    )
    lines = lifecycle_mermaid(lc, highlight=["end"]).splitlines()
    assert '    state "new item" as new_item' in lines
    assert '    state "end" as s_end' in lines
    assert "    new_item --> s_end: finish#58; now" in lines
    assert "    class s_end current" in lines


def test_pipeline_draws_one_edge_per_dependency() -> None:
    text = pipeline_mermaid(AI_FEEDBACK)
    lines = text.splitlines()
    assert lines[:4] == ["---", 'title: "ai_feedback"', "---", "flowchart LR"]
    edges = [line.strip() for line in lines if "-->" in line]
    assert edges == ["spellcheck --> nlp", "spellcheck --> ai_feedback", "nlp --> ai_feedback"]
    for step in AI_FEEDBACK.steps:
        assert f'    {step.name}["{step.name}"]' in lines
    assert "classDef" not in text


def test_pipeline_statuses_label_and_style_the_steps() -> None:
    text = pipeline_mermaid(
        AI_FEEDBACK,
        statuses={"spellcheck": "completed_successfully", "nlp": "failed", "ai_feedback": "in_progress"},
    )
    lines = text.splitlines()
    assert '    nlp["nlp<br/>failed"]' in lines
    assert "    class spellcheck done" in lines
    assert "    class nlp failed" in lines
    assert "    class ai_feedback active" in lines
    pending = pipeline_mermaid(AI_FEEDBACK, statuses={"nlp": "pending_dependencies", "ghost": "failed"})
    assert "    class nlp pending" in pending.splitlines()
    assert "ghost" not in pending


def test_output_does_not_depend_on_hash_seed() -> None:
    code = (
        "from pipeline_state.diagrams import lifecycle_mermaid\n"
        "from pipeline_state.lifecycle import LIFECYCLES\n"
        "for lc in LIFECYCLES.values():\n"
        "    print(lifecycle_mermaid(lc, highlight=lc.final))\n"
    )
    outputs = set()
    for seed in ("1", "2", "3"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": os.pathsep.join(sys.path)}
        done = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
        outputs.add(done.stdout)
    assert len(outputs) == 1
