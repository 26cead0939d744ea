"""Mermaid diagrams and the transition tables are generated from the definitions.

The state diagrams are checked by parsing the Mermaid text back (composite states, aliases,
arrows and their label lines) and comparing what is drawn with the lifecycle: every
transition once, from its source, from ``[*]`` when it creates the entity, or from a
composite whose states are exactly its sources.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass, field

import pytest

from pipeline_state._diagrams import (
    edge_label,
    lifecycle_mermaid,
    pipeline_mermaid,
    state_groups,
    transition_rows,
    transition_table,
)
from pipeline_state._lifecycle import (
    ABSENT,
    BATCH_LIFECYCLE,
    LIFECYCLES,
    PHASE_LIFECYCLE,
    RUN_LIFECYCLE,
    Effect,
    Guard,
    Lifecycle,
    Transition,
    Verdict,
    define_lifecycle,
)


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

# --------------------------------------------------------------------------- parsing back

_SAFE_ID = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_ALIAS = re.compile(r'^state "(?P<label>[^"]*)" as (?P<id>\w+)(?P<open> \{)?$')
_ARROW = re.compile(r"^(?P<src>\[\*\]|\w+) --> (?P<dst>\[\*\]|\w+)(?:: (?P<label>.*))?$")
_LABEL_LINE = re.compile(
    r"^(?P<else>else )?(?P<trigger>.+?)(?: \[(?P<guards>[^\]]*)\])?(?: / (?P<effects>.*))?$"
)


def _unescape(text: str) -> str:
    return re.sub(r"#(\d+);", lambda m: chr(int(m.group(1))), text)


@dataclass
class Drawn:
    """A state diagram read back: names by id, composites, arrows, classes."""

    names: dict[str, str] = field(default_factory=dict)
    groups: dict[str, str] = field(default_factory=dict)  # id -> label
    members: dict[str, list[str]] = field(default_factory=dict)  # group id -> direct member ids
    parent: dict[str, str | None] = field(default_factory=dict)  # state or group id -> group id
    arrows: list[tuple[str | None, str, str, list[str]]] = field(default_factory=list)
    classes: dict[str, str] = field(default_factory=dict)

    def name(self, node: str) -> str:
        return self.names.get(node, node)

    def states_in(self, group: str) -> set[str]:
        """Every state inside ``group``, nested groups included, by name."""
        found: set[str] = set()
        for member in self.members[group]:
            found |= self.states_in(member) if member in self.groups else {self.name(member)}
        return found


def parse(text: str) -> Drawn:
    lines = text.splitlines()
    if lines[0] == "---":
        lines = lines[lines.index("---", 1) + 1 :]
    assert lines[0] == "stateDiagram-v2"
    drawn = Drawn()
    scope: list[str] = []
    for raw in lines[1:]:
        line = raw.strip()
        if line == "}":
            scope.pop()
            assert raw == "    " * (len(scope) + 1) + line, raw
            continue
        here = scope[-1] if scope else None
        assert raw == "    " * (len(scope) + 1) + line, raw  # indented by nesting depth
        if line.startswith(("classDef ", "class ")):
            if line.startswith("class "):
                _, node, css = line.split()
                drawn.classes[node] = css
            continue
        alias = _ALIAS.match(line)
        arrow = _ARROW.match(line)
        if alias:
            node = alias.group("id")
            assert _SAFE_ID.match(node), node
            label = _unescape(alias.group("label"))
            if alias.group("open"):
                drawn.groups[node], drawn.members[node] = label, []
                scope.append(node)
            else:
                drawn.names[node] = label
        elif arrow:
            labels = [_unescape(part) for part in (arrow.group("label") or "").split("<br/>") if part]
            drawn.arrows.append((here, arrow.group("src"), arrow.group("dst"), labels))
            continue
        else:
            assert _SAFE_ID.match(line), f"unexpected Mermaid line {raw!r}"
            node = line
        if here is not None:
            drawn.members[here].append(node)
        drawn.parent[node] = here
    assert not scope, "unclosed composite state"
    return drawn


def _label_parts(label: str) -> tuple[bool, str, tuple[str, ...], tuple[str, ...]]:
    match = _LABEL_LINE.match(label)
    assert match, label
    guards = tuple(g for g in (match.group("guards") or "").split(", ") if g)
    effects = tuple(e for e in (match.group("effects") or "").split(", ") if e)
    return bool(match.group("else")), match.group("trigger"), guards, effects


def _check_complete(lifecycle: Lifecycle, text: str, *, effects: bool = False) -> Drawn:
    """Assert that ``text`` draws every transition of ``lifecycle`` exactly once."""
    drawn = parse(text)
    for node, group in drawn.parent.items():
        if group is not None and node not in drawn.groups:
            assert drawn.name(node) in lifecycle.states, node
    lines = [(src, dst, label) for _, src, dst, labels in drawn.arrows for label in labels]
    unlabelled = [(src, dst) for _, src, dst, labels in drawn.arrows if not labels]
    creates = any(t.creates for t in lifecycle.transitions)
    expected_plain = [] if creates else [("[*]", lifecycle.initial)]
    expected_plain += [(state, "[*]") for state in lifecycle.states if lifecycle.is_final(state)]
    assert [(drawn.name(s), drawn.name(d)) for s, d in unlabelled] == expected_plain
    remaining = list(lines)
    for t in lifecycle.transitions:
        first = all(lifecycle.alternatives(s, t.trigger).index(t) == 0 for s in t.sources)
        mine = []
        for line in remaining:
            _, dst, label = line
            is_else, trigger, guards, shown_effects = _label_parts(label)
            if (trigger, guards, drawn.name(dst)) == (t.trigger, t.guards, t.dest):
                assert shown_effects == (t.effects if effects else ()), label
                assert is_else is not first, label
                mine.append(line)
        if t.creates:
            chosen = [line for line in mine if line[0] == "[*]"][:1]
        else:
            # From a composite that holds exactly the sources, else from each source.
            chosen = [
                line
                for line in mine
                if line[0] in drawn.groups and drawn.states_in(line[0]) == set(t.sources)
            ][:1]
            if not chosen:
                chosen = [
                    next((line for line in mine if drawn.name(line[0]) == s), ("?", s, "")) for s in t.sources
                ]
        assert chosen, f"{lifecycle.name}: {t} is not drawn"
        assert all(line in remaining for line in chosen), f"{lifecycle.name}: {t} is not drawn"
        for line in chosen:
            remaining.remove(line)
    assert remaining == []
    return drawn


# --------------------------------------------------------------------------- lifecycles


@pytest.mark.parametrize("lifecycle", list(LIFECYCLES.values()), ids=list(LIFECYCLES))
def test_every_transition_of_every_shipped_lifecycle_is_drawn_once(lifecycle: Lifecycle) -> None:
    for effects in (False, True):
        for group in (True, False):
            text = lifecycle_mermaid(lifecycle, effects=effects, group=group)
            drawn = _check_complete(lifecycle, text, effects=effects)
            assert bool(drawn.groups) == (group and bool(state_groups(lifecycle)))
            assert "classDef" not in text


def test_guard_labels_are_written_in_brackets_in_evaluation_order() -> None:
    batch = lifecycle_mermaid(BATCH_LIFECYCLE).splitlines()
    start = (
        "ready_for_pipeline_execution --> processing_pipelines: "
        "start_run [no_active_run, fresh_correlation, plan_resolved, admitted]"
    )
    assert f"        {start}" in batch  # inside the composite of open states
    phase = lifecycle_mermaid(PHASE_LIFECYCLE)
    assert "    dispatch_initiated --> dispatch_initiated: expire [overdue, resends_left]\n" in phase
    dispatch = next(t for t in PHASE_LIFECYCLE.transitions if t.trigger == "dispatch")
    assert f"dispatch [{', '.join(dispatch.guards)}]" in phase


def test_later_alternatives_say_else_and_share_arrows_with_other_triggers() -> None:
    run = lifecycle_mermaid(RUN_LIFECYCLE).splitlines()
    assert "    active --> completed_successfully: finish [all_succeeded]" in run
    assert "    active --> completed_with_failures: else finish [final_step_done]" in run
    # The unguarded fallback and ``fail`` lead to the same state: one arrow, two lines.
    assert "    active --> failed_critically: else finish<br/>fail" in run
    phase = lifecycle_mermaid(PHASE_LIFECYCLE)
    failed = [line for line in phase.splitlines() if line.startswith("    dispatch_initiated --> failed: ")]
    assert len(failed) == 1
    assert failed[0].endswith("<br/>else expire [overdue]")


def test_effects_follow_a_slash_on_request() -> None:
    plain = lifecycle_mermaid(RUN_LIFECYCLE)
    assert " / " not in plain
    verbose = lifecycle_mermaid(RUN_LIFECYCLE, effects=True).splitlines()
    assert "    [*] --> active: accept / plan_phases, announce_pruned, notify_started, advance" in verbose
    fail = next(t for t in RUN_LIFECYCLE.transitions if t.trigger == "fail")
    assert edge_label(RUN_LIFECYCLE, fail, effects=True) == f"fail / {', '.join(fail.before + fail.after)}"


def test_creation_transitions_start_at_the_initial_pseudostate() -> None:
    run = lifecycle_mermaid(RUN_LIFECYCLE).splitlines()
    assert "    [*] --> active: accept" in run
    assert "    [*] --> completed_successfully: record [batch_idle, dependencies_recorded]" in run
    assert "    [*] --> active" not in run  # no extra unlabelled start arrow
    batch = lifecycle_mermaid(BATCH_LIFECYCLE).splitlines()
    register = [line for line in batch if line.startswith("    [*] --> ")]
    assert register == ["    [*] --> awaiting_content_validation: register [items_within_limit]"]
    # No creation transition: [*] points at the initial state, unlabelled.
    assert "    [*] --> requested_by_user" in lifecycle_mermaid(PHASE_LIFECYCLE).splitlines()


def test_transitions_from_every_open_state_are_one_arrow_from_a_composite() -> None:
    text = lifecycle_mermaid(BATCH_LIFECYCLE)
    drawn = parse(text)
    open_states = {s for s in BATCH_LIFECYCLE.states if not BATCH_LIFECYCLE.is_final(s)}
    assert list(drawn.groups.values()) == ["any non-final state"]
    (group,) = drawn.groups
    assert drawn.states_in(group) == open_states
    for trigger, dest in (("cancel", "cancelled"), ("fail_critically", "failed_critically")):
        arrows = [a for a in drawn.arrows if a[2] == dest]
        assert arrows == [(None, group, dest, [trigger])]
    # Nothing else leaves for cancelled from a single state.
    assert text.count("--> cancelled") == 1
    assert text.count("--> failed_critically") == 1
    # Moves between open states are written inside the composite.
    inside = [(src, dst) for scope, src, dst, _ in drawn.arrows if scope == group]
    assert ("ready_for_pipeline_execution", "processing_pipelines") in inside
    assert ("ready_for_pipeline_execution", "archived") not in inside
    ungrouped = lifecycle_mermaid(BATCH_LIFECYCLE, group=False)
    assert ungrouped.count("--> cancelled: cancel") == len(open_states)


def _lc(name: str, states: tuple[str, ...], final: tuple[str, ...], *moves: Transition) -> Lifecycle:
    return define_lifecycle(name, states=states, initial=states[0], final=final, transitions=moves)


def test_grouping_is_generic_nested_and_never_overlapping() -> None:
    states = ("a", "b", "c", "d", "e", "x", "y", "z")
    lc = _lc(
        "toy",
        states,
        ("x", "y", "z"),
        Transition("go", "a", "b"),
        Transition("on", "b", "c"),
        Transition("more", "c", "d"),
        Transition("last", "d", "e"),
        Transition("stop", ("a", "b", "c", "d", "e"), "x"),  # every open state
        Transition("halt", ("b", "c", "d"), "y"),  # three of them: nested inside
        Transition("drop", ("a", "b", "e"), "z"),  # overlaps b..d partly: drawn per source
    )
    groups = state_groups(lc)
    assert [(g.label, g.states, g.parent) for g in groups] == [
        ("any non-final state", ("a", "b", "c", "d", "e"), None),
        ("group 2", ("b", "c", "d"), 0),
    ]
    text = lifecycle_mermaid(lc, highlight=["c"])
    drawn = _check_complete(lc, text)
    outer, inner = drawn.groups
    assert drawn.parent[inner] == outer
    assert drawn.states_in(inner) == {"b", "c", "d"}
    assert text.count(": drop") == 3
    assert drawn.classes == {"c": "current"}
    assert f"    {outer} --> x: stop" in text.splitlines()
    assert f"        {inner} --> y: halt" not in text  # y is outside the outer group
    assert f"    {inner} --> y: halt" in text.splitlines()


def test_two_sources_are_grouped_only_when_they_are_all_the_open_states() -> None:
    two = _lc(
        "two",
        ("a", "b", "x", "y"),
        ("x", "y"),
        Transition("go", "a", "b"),
        Transition("stop", "a", "x"),
        Transition("end_", "b", "y"),
    )
    assert state_groups(two) == []
    both = _lc(
        "both", ("a", "b", "x"), ("x",), Transition("go", "a", "b"), Transition("stop", ("a", "b"), "x")
    )
    assert [g.states for g in state_groups(both)] == [("a", "b")]
    assert [g.states for g in state_groups(PHASE_LIFECYCLE)] == []  # cancel: two of three open states
    assert state_groups(RUN_LIFECYCLE) == []


def test_highlight_adds_the_current_class_inside_composites_too() -> None:
    text = lifecycle_mermaid(
        BATCH_LIFECYCLE,
        highlight=["processing_pipelines", "cancelled", "legacy_value", "not_final"],
        title="b1",
    )
    lines = text.splitlines()
    assert lines[:3] == ["---", 'title: "b1"', "---"]
    drawn = _check_complete(BATCH_LIFECYCLE, text)
    assert drawn.parent["processing_pipelines"] in drawn.groups  # inside the composite
    assert drawn.classes == {"processing_pipelines": "current", "cancelled": "current"}
    assert sum(line.strip().startswith("classDef current ") for line in lines) == 1
    assert "legacy_value" not in text
    phase = lifecycle_mermaid(PHASE_LIFECYCLE, highlight=["in_progress"])  # a wire value, not a state
    assert "class " not in phase


def test_unusual_names_get_safe_ids_and_keep_their_label() -> None:
    lc = define_lifecycle(
        "odd",
        states=("new item", "state", "not_final", "a:b", 'say "hi"', "end", "<b>"),
        initial="new item",
        final=("end", "<b>"),
        guards=(Guard("ok#1", Verdict.HOLD, ()),),
        effects=(Effect("log; it"),),
        transitions=(
            Transition("begin", ABSENT, "new item", after="log; it"),
            Transition("next", "new item", "state"),
            Transition("then: go", "state", "not_final", guards="ok#1"),
            Transition("more", "not_final", "a:b"),
            Transition("quote", "a:b", 'say "hi"'),
            Transition(
                "finish: now", ("new item", "state", "not_final", "a:b", 'say "hi"'), "end", guards="ok#1"
            ),
            Transition("finish: now", ("new item", "state", "not_final", "a:b", 'say "hi"'), "<b>"),
        ),
    )
    text = lifecycle_mermaid(lc, highlight=["end", "a:b"], effects=True)
    drawn = _check_complete(lc, text, effects=True)
    lines = text.splitlines()
    assert '        state "new item" as new_item' in lines
    assert '        state "state" as s_state' in lines
    assert '        state "a#58;b" as a_b' in lines
    assert '        state "say #34;hi#34;" as say__hi_' in lines
    assert '    state "#60;b#62;" as _b_' in lines
    # The composite's id does not take the name of the state called not_final.
    (group,) = drawn.groups
    assert group != "not_final"
    assert drawn.name("not_final") == "not_final"
    assert "    [*] --> new_item: begin / log#59; it" in lines
    assert f"    {group} --> s_end: finish#58; now [ok#35;1]" in lines
    assert f"    {group} --> _b_: else finish#58; now" in lines
    assert "    class s_end current" in lines
    assert "    class a_b current" in lines
    for line in lines:
        for raw in (":", '"', "#", "<", ">", ";"):
            label = line.partition(": ")[2].replace("<br/>", "")
            assert raw not in re.sub(r"#\d+;", "", label), line


def test_transition_table_follows_declaration_order() -> None:
    rows = transition_table(PHASE_LIFECYCLE)
    assert rows[0] == ("plan", "requested_by_user", "pending_dependencies")
    assert rows[-1] == ("cancel", "dispatch_initiated", "cancelled")
    assert len(rows) == sum(len(t.sources) for t in PHASE_LIFECYCLE.transitions)
    assert transition_table(RUN_LIFECYCLE)[:2] == [
        ("accept", ABSENT, "active"),
        ("record", ABSENT, "completed_successfully"),
    ]


def test_transition_rows_carry_guards_effects_and_alternatives() -> None:
    for lifecycle in LIFECYCLES.values():
        rows = transition_rows(lifecycle)
        assert [(r.trigger, r.source, r.dest) for r in rows] == transition_table(lifecycle)
    finish = [r for r in transition_rows(RUN_LIFECYCLE) if r.trigger == "finish"]
    assert [(r.dest, r.guards, r.alternative, r.alternatives) for r in finish] == [
        ("completed_successfully", ("all_succeeded",), 1, 3),
        ("completed_with_failures", ("final_step_done",), 2, 3),
        ("failed_critically", (), 3, 3),
    ]
    assert all(r.after[-1] == "release_batch" for r in finish)
    start = next(r for r in transition_rows(BATCH_LIFECYCLE) if r.trigger == "start_run")
    assert (start.before, start.after, start.alternative, start.alternatives) == (
        ("attach_prompt",),
        ("accept_run",),
        1,
        1,
    )


def test_every_label_line_parses_back_to_its_transition() -> None:
    for lifecycle in LIFECYCLES.values():
        labels = {edge_label(lifecycle, t) for t in lifecycle.transitions}
        drawn = parse(lifecycle_mermaid(lifecycle))
        assert {label for *_, lines in drawn.arrows for label in lines} == labels


# --------------------------------------------------------------------------- pipelines


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
        "from pipeline_state._diagrams import lifecycle_mermaid\n"
        "from pipeline_state._lifecycle import LIFECYCLES\n"
        "for lc in LIFECYCLES.values():\n"
        "    print(lifecycle_mermaid(lc, highlight=lc.final, effects=True))\n"
    )
    outputs = set()
    for seed in ("1", "2", "3"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": os.pathsep.join(sys.path)}
        done = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
        outputs.add(done.stdout)
    assert len(outputs) == 1
