"""Mermaid diagrams generated from the definitions, never drawn by hand.

* :func:`lifecycle_mermaid` draws a :class:`~pipeline_state.lifecycle.Lifecycle` as a
  ``stateDiagram-v2``, optionally highlighting the current state(s);
* :func:`pipeline_mermaid` draws a pipeline's step DAG as a ``flowchart LR``, optionally
  with each step's phase status;
* :func:`transition_table` lists ``(trigger, source, dest)`` rows for reference docs.

Output is deterministic: it follows declaration order, never set or hash order. Names
that are not safe Mermaid identifiers are mapped to safe, unique ids and keep their
original text as the label.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

from pipeline_state.lifecycle import ABSENT, PHASE_ACTIVE, PHASE_DONE, Lifecycle, PhaseStatus

__all__ = [
    "PipelineLike",
    "StepLike",
    "lifecycle_mermaid",
    "pipeline_mermaid",
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
_SKIPPED = frozenset({PhaseStatus.SKIPPED_BY_USER_CONFIG, PhaseStatus.SKIPPED_DUE_TO_DEPENDENCY_FAILURE})
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
    if status in _SKIPPED:
        return "skipped"
    return None


def _ids(names: Iterable[str], prefix: str) -> dict[str, str]:
    """Map each name to a unique Mermaid-safe id, keeping safe names unchanged."""
    ids: dict[str, str] = {}
    used: set[str] = set()
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
_ENTITIES = str.maketrans({char: f"#{ord(char)};" for char in '#";:'})


def _label(text: str) -> str:
    """Text safe inside a Mermaid label: one line, syntax characters as entity codes."""
    return " ".join(str(text).split()).translate(_ENTITIES)


def _front_matter(title: str | None) -> list[str]:
    if title is None:
        return []
    return ["---", f"title: {json.dumps(' '.join(title.split()))}", "---"]


def transition_table(lifecycle: Lifecycle) -> list[tuple[str, str, str]]:
    """Rows ``(trigger, source, dest)``: one per source, in declaration order."""
    return [(t.trigger, source, t.dest) for t in lifecycle.transitions for source in t.sources]


def lifecycle_mermaid(
    lifecycle: Lifecycle, *, highlight: Iterable[str] = (), title: str | None = None
) -> str:
    """Draw ``lifecycle`` as a Mermaid ``stateDiagram-v2``.

    ``highlight`` names states to mark with the ``current`` class; names that are not
    states of the lifecycle (for example legacy statuses) are ignored. ``title`` is
    written as Mermaid front matter.
    """
    ids = _ids(lifecycle.states, "s")
    lines = [*_front_matter(title), "stateDiagram-v2"]
    for state in lifecycle.states:
        if ids[state] != state:
            lines.append(f'{_INDENT}state "{_label(state)}" as {ids[state]}')
    if not any(t.creates for t in lifecycle.transitions):
        lines.append(f"{_INDENT}[*] --> {ids[lifecycle.initial]}")
    for trigger, source, dest in transition_table(lifecycle):
        start = "[*]" if source == ABSENT else ids[source]
        lines.append(f"{_INDENT}{start} --> {ids[dest]}: {_label(trigger)}")
    for state in lifecycle.states:
        if lifecycle.is_final(state):
            lines.append(f"{_INDENT}{ids[state]} --> [*]")
    wanted = {str(h) for h in highlight}
    marked = [ids[state] for state in lifecycle.states if state in wanted]
    if marked:
        lines.append(f"{_INDENT}{_CURRENT_STYLE}")
        lines.extend(f"{_INDENT}class {state_id} current" for state_id in marked)
    return "\n".join(lines) + "\n"


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
