"""Mermaid diagrams generated from the definitions, never drawn by hand.

* :func:`lifecycle_mermaid` draws a :class:`~pipeline_state._lifecycle.Lifecycle` as a
  ``stateDiagram-v2`` that tells the whole rule-book: every transition, labelled
  ``trigger [guards]`` (:func:`edge_label`), creation transitions from ``[*]``, and the
  transitions shared by many states drawn once from a composite state
  (:func:`state_groups`); optionally the effects, and the current state(s) highlighted;
* :func:`pipeline_mermaid` draws a pipeline's step DAG as a ``flowchart LR``, optionally
  with each step's phase status;
* :func:`transition_table` lists ``(trigger, source, dest)`` rows, and
  :func:`transition_rows` the same rows with guards, effects and the order of
  alternatives, for reference docs.

Output is deterministic: it follows declaration order, never set or hash order. Names
that are not safe Mermaid identifiers are mapped to safe, unique ids and keep their
original text as the label.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Protocol

import attrs

from pipeline_state._lifecycle import (
    ABSENT,
    PHASE_ACTIVE,
    PHASE_DONE,
    PHASE_SKIPPED,
    Lifecycle,
    PhaseStatus,
    Transition,
)

__all__ = [
    "PipelineLike",
    "StateGroup",
    "StepLike",
    "TransitionRow",
    "edge_label",
    "lifecycle_mermaid",
    "pipeline_mermaid",
    "state_groups",
    "transition_rows",
    "transition_table",
]


class StepLike(Protocol):
    """A pipeline step as the diagrams need it (duck type of the catalog's step)."""

    @property
    def name(self) -> str: ...

    @property
    def depends_on(self) -> Sequence[str]: ...


class PipelineLike(Protocol):
    """A pipeline as the diagrams need it (duck type of the catalog's pipeline)."""

    @property
    def name(self) -> str: ...

    @property
    def steps(self) -> Sequence[StepLike]: ...


_INDENT = "    "
_UNSAFE = re.compile(r"[^0-9A-Za-z_]")
# Words Mermaid parses as keywords when used as bare ids.
_KEYWORDS = frozenset(
    {"end", "state", "class", "classdef", "direction", "note", "style", "click", "subgraph", "graph"}
)

_CURRENT_STYLE = "classDef current fill:#fde68a,stroke:#b45309,stroke-width:3px"

# Status classes of pipeline steps, in the order their classDef lines are written.
_STATUS_STYLES: tuple[tuple[str, str], ...] = (
    ("done", "fill:#bbf7d0,stroke:#15803d"),
    ("failed", "fill:#fecaca,stroke:#b91c1c"),
    ("active", "fill:#bfdbfe,stroke:#1d4ed8"),
    ("pending", "fill:#f3f4f6,stroke:#6b7280"),
    ("skipped", "fill:#e5e7eb,stroke:#9ca3af,stroke-dasharray:4 2"),
)
_FAILED = frozenset({PhaseStatus.FAILED, PhaseStatus.CANCELLED})
_PENDING = frozenset({PhaseStatus.REQUESTED_BY_USER, PhaseStatus.PENDING_DEPENDENCIES})


def _status_class(status: str) -> str | None:
    """The style class of a phase status; ``None`` for a status this module does not know."""
    if status in PHASE_DONE:
        return "done"
    if status in _FAILED:
        return "failed"
    if status in PHASE_ACTIVE:
        return "active"
    if status in _PENDING:
        return "pending"
    if status in PHASE_SKIPPED:
        return "skipped"
    return None


def _ids(names: Iterable[str], prefix: str, taken: Iterable[str] = ()) -> dict[str, str]:
    """Map each name to a unique Mermaid-safe id, keeping safe names unchanged; ids in
    ``taken`` are avoided."""
    ids: dict[str, str] = {}
    used: set[str] = set(taken)
    for name in names:
        if name in ids:
            continue
        base = _UNSAFE.sub("_", name)
        if not base or base[0].isdigit() or base.lower() in _KEYWORDS:
            base = f"{prefix}_{base}"
        candidate, n = base, 1
        while candidate in used:
            n += 1
            candidate = f"{base}_{n}"
        ids[name] = candidate
        used.add(candidate)
    return ids


# Characters that end or confuse a Mermaid label, written as Mermaid entity codes.
_ENTITIES = str.maketrans({char: f"#{ord(char)};" for char in '#";:<>'})


def _label(text: str) -> str:
    """Text safe inside a Mermaid label: one line, syntax characters as entity codes."""
    return " ".join(str(text).split()).translate(_ENTITIES)


def _front_matter(title: str | None) -> list[str]:
    if title is None:
        return []
    return ["---", f"title: {json.dumps(_label(title))}", "---"]


def transition_table(lifecycle: Lifecycle) -> list[tuple[str, str, str]]:
    """Rows ``(trigger, source, dest)``: one per source, in declaration order.

    A creation transition's source is :data:`~pipeline_state._lifecycle.ABSENT` (``""``).
    :func:`transition_rows` gives the guards, effects and order of alternatives too.
    """
    return [(t.trigger, source, t.dest) for t in lifecycle.transitions for source in t.sources]


@attrs.frozen
class TransitionRow:
    """One transition from one source, with everything a reference table shows.

    ``alternative`` is the 1-based position of this transition among those ``trigger``
    may take from ``source`` (the engine tries them in that order; the first whose guards
    hold is taken), ``alternatives`` how many there are.
    """

    trigger: str
    source: str
    dest: str
    guards: tuple[str, ...]
    before: tuple[str, ...]
    after: tuple[str, ...]
    alternative: int
    alternatives: int
    doc: str


def transition_rows(lifecycle: Lifecycle) -> list[TransitionRow]:
    """Every ``(transition, source)`` pair as a :class:`TransitionRow`, in declaration order
    (the same rows as :func:`transition_table`, with guards, effects and alternatives)."""
    rows = []
    for t in lifecycle.transitions:
        for source in t.sources:
            options = lifecycle.alternatives(source, t.trigger)
            rows.append(
                TransitionRow(
                    trigger=t.trigger,
                    source=source,
                    dest=t.dest,
                    guards=t.guards,
                    before=t.before,
                    after=t.after,
                    alternative=options.index(t) + 1,
                    alternatives=len(options),
                    doc=t.doc,
                )
            )
    return rows


def edge_label(
    lifecycle: Lifecycle,
    transition: Transition,
    *,
    effects: bool = False,
    show: Callable[[str], str] | None = None,
) -> str:
    """The text of a transition's arrow, unescaped: ``trigger [guard, ...] / effect, ...``.

    An alternative tried after another of the same trigger from the same state is prefixed
    ``else``; guards are written in the order they are evaluated; effects (``before`` then
    ``after``) only when ``effects`` is true. ``show`` gives the trigger's name (a profile's
    state names rename triggers too).
    """
    later = any(
        lifecycle.alternatives(source, transition.trigger).index(transition) > 0
        for source in transition.sources
    )
    trigger = transition.trigger if show is None else show(transition.trigger)
    text = f"else {trigger}" if later else trigger
    if transition.guards:
        text += f" [{', '.join(transition.guards)}]"
    if effects and transition.effects:
        text += f" / {', '.join(transition.effects)}"
    return text


@attrs.frozen
class StateGroup:
    """Source states drawn together as one Mermaid composite state.

    A transition whose sources are exactly the states of a group is drawn once, from the
    group. ``parent`` is the index (in :func:`state_groups`) of the smallest group holding
    this one, or ``None``.
    """

    label: str
    states: tuple[str, ...]
    parent: int | None = None


def state_groups(lifecycle: Lifecycle) -> list[StateGroup]:
    """The composite states :func:`lifecycle_mermaid` draws, in the order first needed.

    Every transition with at least three sources, or whose sources are all the non-final
    states (at least two), asks for a group of its sources. Groups must nest or be
    disjoint (a state sits in one composite only): a requested group that overlaps one
    already taken is not drawn, and its transition is drawn from each source.
    """
    open_states = frozenset(s for s in lifecycle.states if not lifecycle.is_final(s))
    taken: list[frozenset[str]] = []
    for t in lifecycle.transitions:
        sources = frozenset(t.sources) - {ABSENT}
        wanted = len(sources) >= 3 or (len(sources) >= 2 and sources == open_states)
        if not wanted or sources in taken:
            continue
        if all(sources <= other or other <= sources or not sources & other for other in taken):
            taken.append(sources)
    groups = []
    for number, members in enumerate(taken, start=1):
        holders = [i for i, other in enumerate(taken) if members < other]
        parent = min(holders, key=lambda i: len(taken[i])) if holders else None
        label = "any non-final state" if members == open_states else f"group {number}"
        states = tuple(s for s in lifecycle.states if s in members)
        groups.append(StateGroup(label, states, parent))
    return groups


def _group_ids(groups: Sequence[StateGroup], lifecycle: Lifecycle, taken: set[str]) -> list[str]:
    """A Mermaid id per group, unique among the state ids in ``taken``."""
    open_states = tuple(s for s in lifecycle.states if not lifecycle.is_final(s))
    names = [
        "not_final" if grp.states == open_states else f"group_{number}"
        for number, grp in enumerate(groups, start=1)
    ]
    ids = _ids(names, "g", taken)
    return [ids[name] for name in names]


def lifecycle_mermaid(
    lifecycle: Lifecycle,
    *,
    highlight: Iterable[str] = (),
    title: str | None = None,
    effects: bool = False,
    group: bool = True,
    show: Callable[[str], str] | None = None,
) -> str:
    """Draw ``lifecycle`` as a Mermaid ``stateDiagram-v2``.

    Every transition is drawn, labelled as :func:`edge_label` writes it: ``trigger
    [guards]``, ``else`` before an alternative tried after another, and ``/ effects`` when
    ``effects`` is true (long: the reference tables list them). Transitions between the
    same two states share one arrow, one label line each. Creation transitions start at
    ``[*]``; without one, ``[*]`` points at the initial state. Final states lead to
    ``[*]``. With ``group`` (the default), each of the :func:`state_groups` is a composite
    state, and a transition from all of a group's states is one arrow from the composite.

    ``highlight`` names states to mark with the ``current`` class; names that are not
    states of the lifecycle (for example legacy statuses) are ignored. ``title`` is
    written as Mermaid front matter. ``show`` gives the label of a state or trigger (a
    profile's :attr:`~pipeline_state._profile.Profile.state_names`); states keep their
    names as ids.
    Output follows declaration order.
    """
    groups = state_groups(lifecycle) if group else []
    ids = _ids(lifecycle.states, "s")
    group_ids = _group_ids(groups, lifecycle, taken=set(ids.values()))
    home = _homes(lifecycle, groups)
    by_sources = {frozenset(g.states): index for index, g in enumerate(groups)}

    # (scope, source id, dest id) -> label lines; scope is the innermost composite
    # holding both ends (None: the diagram itself).
    arrows: dict[tuple[int | None, str, str], list[str]] = {}

    def arrow(scope: int | None, source: str, dest: str, label: str | None) -> None:
        lines = arrows.setdefault((scope, source, dest), [])
        if label is not None:
            lines.append(_label(label))

    if not any(t.creates for t in lifecycle.transitions):
        arrow(None, "[*]", ids[lifecycle.initial], None)
    for t in lifecycle.transitions:
        label = edge_label(lifecycle, t, effects=effects, show=show)
        index = by_sources.get(frozenset(t.sources))
        if t.creates:
            arrow(None, "[*]", ids[t.dest], label)
        elif index is not None:
            scope = _meet(groups, groups[index].parent, home[t.dest])
            arrow(scope, group_ids[index], ids[t.dest], label)
        else:
            for source in t.sources:
                arrow(_meet(groups, home[source], home[t.dest]), ids[source], ids[t.dest], label)
    for state in lifecycle.states:
        if lifecycle.is_final(state):
            arrow(None, ids[state], "[*]", None)

    def declare(state: str) -> str:
        label = state if show is None else show(state)
        return state if label == state == ids[state] else f'state "{_label(label)}" as {ids[state]}'

    def block(scope: int | None, pad: str) -> list[str]:
        members = [s for s in lifecycle.states if home[s] == scope]
        if scope is None:
            out = [pad + declare(s) for s in members if declare(s) != s]
        else:
            # Declared inside the composite, or Mermaid would place them outside it. Its
            # layout hangs the composite's own arrows on the first state declared in it:
            # the last declared state (usually the deepest), so they leave from the bottom.
            out = [pad + declare(s) for s in members[-1:] + members[:-1]]
        for index, g in enumerate(groups):
            if g.parent == scope:
                out.append(f'{pad}state "{_label(g.label)}" as {group_ids[index]} {{')
                out.extend(block(index, pad + _INDENT))
                out.append(pad + "}")
        for (where, source, dest), labels in arrows.items():
            if where == scope:
                text = f": {'<br/>'.join(labels)}" if labels else ""
                out.append(f"{pad}{source} --> {dest}{text}")
        return out

    lines = [*_front_matter(title), "stateDiagram-v2", *block(None, _INDENT)]
    wanted = {str(h) for h in highlight}
    marked = [ids[state] for state in lifecycle.states if state in wanted]
    if marked:
        lines.append(f"{_INDENT}{_CURRENT_STYLE}")
        lines.extend(f"{_INDENT}class {state_id} current" for state_id in marked)
    return "\n".join(lines) + "\n"


def _homes(lifecycle: Lifecycle, groups: Sequence[StateGroup]) -> dict[str, int | None]:
    """The innermost group of each state (``None``: in no group)."""
    home: dict[str, int | None] = dict.fromkeys(lifecycle.states)
    for index, g in sorted(enumerate(groups), key=lambda item: -len(item[1].states)):
        for state in g.states:
            home[state] = index
    return home


def _meet(groups: Sequence[StateGroup], a: int | None, b: int | None) -> int | None:
    """The innermost group holding both groups ``a`` and ``b`` (``None``: the diagram)."""

    def chain(scope: int | None) -> list[int | None]:
        path = [scope]
        while scope is not None:
            scope = groups[scope].parent
            path.append(scope)
        return path

    above = chain(b)
    return next(scope for scope in chain(a) if scope in above)


def pipeline_mermaid(pipeline: PipelineLike, *, statuses: Mapping[str, str] | None = None) -> str:
    """Draw a pipeline's steps as a Mermaid ``flowchart LR``, one edge per dependency.

    ``statuses`` maps step names to phase statuses: each known step's status is appended
    to its label and styles the node (``done``, ``failed``, ``active``, ``pending`` or
    ``skipped``). Entries for names that are not steps are ignored.
    """
    steps = list(pipeline.steps)
    names = [step.name for step in steps]
    deps = [dep for step in steps for dep in step.depends_on]
    ids = _ids([*names, *deps], "n")
    statuses = statuses or {}
    lines = [*_front_matter(pipeline.name), "flowchart LR"]
    classes: dict[str, list[str]] = {}
    for name in names:
        label = _label(name)
        status = statuses.get(name)
        if status is not None:
            label = f"{label}<br/>{_label(status)}"
            css = _status_class(status)
            if css is not None:
                classes.setdefault(css, []).append(ids[name])
        lines.append(f'{_INDENT}{ids[name]}["{label}"]')
    for step in steps:
        for dep in step.depends_on:
            lines.append(f"{_INDENT}{ids[dep]} --> {ids[step.name]}")
    for css, style in _STATUS_STYLES:
        if css in classes:
            lines.append(f"{_INDENT}classDef {css} {style}")
            lines.append(f"{_INDENT}class {','.join(classes[css])} {css}")
    return "\n".join(lines) + "\n"
