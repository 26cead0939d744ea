"""Server-side SVG drawings of a lifecycle and of a run's phase DAG.

The status page must show a rendered diagram without loading any script from elsewhere,
so the graphs are laid out here: nodes go into columns by their longest distance from the
start (edges that point back, like ``finish_run``, are drawn as arcs above the nodes), and
each node is coloured by its status. All text is XML-escaped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from html import escape

import attrs

from pipeline_state._diagrams import StepLike
from pipeline_state._lifecycle import PHASE_ACTIVE, PHASE_DONE, Lifecycle, PhaseStatus

__all__ = ["STYLES", "Edge", "Node", "lifecycle_svg", "phase_class", "phases_svg", "render_graph"]


@attrs.frozen
class Node:
    """A box: its key, its title, an optional second line and a style class."""

    key: str
    title: str
    subtitle: str | None = None
    css: str = "state"


@attrs.frozen
class Edge:
    """An arrow; a ``faint`` one (a trigger allowed from many states) is left out of the
    drawing and told in the caption instead."""

    source: str
    target: str
    label: str | None = None
    faint: bool = False


STYLES: Mapping[str, tuple[str, str]] = {
    "state": ("#ffffff", "#6b7280"),
    "final": ("#f3f4f6", "#374151"),
    "current": ("#fde68a", "#b45309"),
    "done": ("#bbf7d0", "#15803d"),
    "failed": ("#fecaca", "#b91c1c"),
    "active": ("#bfdbfe", "#1d4ed8"),
    "pending": ("#f3f4f6", "#6b7280"),
    "skipped": ("#e5e7eb", "#9ca3af"),
    "pruned": ("#ecfccb", "#65a30d"),
}
"""Fill and stroke colour of each style class."""

_DASHED = frozenset({"skipped", "pruned"})
_FAILED = frozenset({PhaseStatus.FAILED, PhaseStatus.CANCELLED})
_SKIPPED = frozenset({PhaseStatus.SKIPPED_BY_USER_CONFIG, PhaseStatus.SKIPPED_DUE_TO_DEPENDENCY_FAILURE})

_H = 46
_GAP_X = 80
_GAP_Y = 26
_MARGIN = 16
_ARC = 48
_CHAR = 7.0
_LINE = 14
_WRAP = 20


def phase_class(status: str) -> str:
    """The style class of a phase status (``pruned`` for ``already_completed``)."""
    if status in PHASE_DONE:
        return "done"
    if status in _FAILED:
        return "failed"
    if status in PHASE_ACTIVE:
        return "active"
    if status in _SKIPPED:
        return "skipped"
    if status == "already_completed":
        return "pruned"
    return "pending"


def _columns(keys: Sequence[str], edges: Iterable[Edge]) -> dict[str, int]:
    """Longest distance of each node from the nodes without incoming forward edges; an edge
    that closes a cycle (found by a depth-first walk in declaration order) is not counted."""
    out: dict[str, list[str]] = {k: [] for k in keys}
    for edge in edges:
        if edge.source in out and edge.target in out and edge.target not in out[edge.source]:
            out[edge.source].append(edge.target)
    back: set[tuple[str, str]] = set()
    colour: dict[str, int] = {}
    for root in keys:
        if root in colour:
            continue
        stack: list[tuple[str, int]] = [(root, 0)]
        colour[root] = 1
        while stack:
            node, i = stack.pop()
            if i < len(out[node]):
                stack.append((node, i + 1))
                nxt = out[node][i]
                if colour.get(nxt) == 1:
                    back.add((node, nxt))
                elif nxt not in colour:
                    colour[nxt] = 1
                    stack.append((nxt, 0))
            else:
                colour[node] = 2
    column = dict.fromkeys(keys, 0)
    for _ in range(len(keys)):  # relax until stable: at most one pass per node
        changed = False
        for source in keys:
            for target in out[source]:
                if (source, target) not in back and column[target] < column[source] + 1:
                    column[target] = column[source] + 1
                    changed = True
        if not changed:
            break
    return column


def _clip(text: str, limit: int = 34) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _wrap(text: str, limit: int = _WRAP) -> list[str]:
    """``text`` on one line, or on two split after the ``_`` (or space) nearest the middle
    when longer than ``limit``; each line clipped to ``limit`` characters."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return [text]
    cuts = [i + 1 for i, ch in enumerate(text) if ch in "_ " and 0 < i + 1 < len(text)]
    if not cuts:
        return [_clip(text, limit)]
    cut = min(cuts, key=lambda i: abs(i - len(text) / 2))
    return [_clip(text[:cut].rstrip(), limit), _clip(text[cut:], limit)]


def _lines(node: Node) -> list[tuple[str, bool]]:
    """The text lines of a node: ``(text, is_title)``."""
    lines = [(line, True) for line in _wrap(node.title)]
    if node.subtitle is not None:
        lines.extend((line, False) for line in _wrap(node.subtitle))
    return lines


def render_graph(
    nodes: Sequence[Node], edges: Sequence[Edge], *, title: str, element_id: str, note: str | None = None
) -> str:
    """An ``<svg>`` of the graph, nodes in columns, ready to inline in HTML. Faint edges
    shape the columns but are not drawn; ``note`` is a caption line under the graph."""
    keys = [n.key for n in nodes]
    column = _columns(keys, edges)
    texts = {n.key: _lines(n) for n in nodes}
    longest = max((len(text) for lines in texts.values() for text, _ in lines), default=10)
    width = max(120, round(longest * _CHAR) + 24)
    height = max(_H, 14 + _LINE * max((len(lines) for lines in texts.values()), default=1))
    rows: dict[int, int] = {}
    place: dict[str, tuple[float, float]] = {}
    for node in nodes:
        col = column[node.key]
        row = rows.get(col, 0)
        rows[col] = row + 1
        place[node.key] = (_MARGIN + col * (width + _GAP_X), _MARGIN + _ARC + row * (height + _GAP_Y))
    total_w = _MARGIN * 2 + (max(column.values(), default=0) + 1) * (width + _GAP_X) - _GAP_X
    total_h = _MARGIN * 2 + _ARC + max(rows.values(), default=1) * (height + _GAP_Y) - _GAP_Y
    if note is not None:
        total_h += 20
    marker = f"{element_id}-arrow"
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" id="{escape(element_id)}" class="graph" role="img" '
        f'viewBox="0 0 {total_w} {total_h}" width="{total_w}" height="{total_h}" '
        f'style="max-width:100%;height:auto" font-family="system-ui,sans-serif" font-size="12">',
        f"<title>{escape(title)}</title>",
        f'<defs><marker id="{escape(marker)}" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#4b5563"/>'
        "</marker></defs>",
    ]
    box = _Box(width, height)
    for edge in edges:
        if edge.source in place and edge.target in place and not edge.faint:
            parts.append(_edge(edge, place, box, marker, column))
    for node in nodes:
        parts.append(_node(node, texts[node.key], place[node.key], box))
    if note is not None:
        parts.append(
            f'<text class="note" x="{_MARGIN}" y="{total_h - _MARGIN}" font-size="11" fill="#4b5563">'
            f"{escape(note)}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


@attrs.frozen
class _Box:
    width: int
    height: int


def _edge(
    edge: Edge, place: Mapping[str, tuple[float, float]], box: _Box, marker: str, column: Mapping[str, int]
) -> str:
    sx, sy = place[edge.source]
    tx, ty = place[edge.target]
    span = column[edge.target] - column[edge.source]
    if span == 1 or (span > 1 and sy != ty):
        x1, y1, x2, y2 = sx + box.width, sy + box.height / 2, tx, ty + box.height / 2
        bend = max(30.0, (x2 - x1) / 2)
        d = f"M{x1:.0f},{y1:.0f} C{x1 + bend:.0f},{y1:.0f} {x2 - bend:.0f},{y2:.0f} {x2:.0f},{y2:.0f}"
        lx, ly = (x1 + x2) / 2, (y1 + y2) / 2 - 4
    else:  # backwards, sideways, or forward past nodes on the same row: an arc above
        shift = 12 if span <= 0 else -12
        x1, y1, x2, y2 = sx + box.width / 2 + shift, sy, tx + box.width / 2 - shift, ty
        top = min(y1, y2) - _ARC + 6 + (0 if span <= 0 else 10)
        d = f"M{x1:.0f},{y1:.0f} C{x1:.0f},{top:.0f} {x2:.0f},{top:.0f} {x2:.0f},{y2:.0f}"
        lx, ly = (x1 + x2) / 2, top + 10
    path = (
        f'<path d="{d}" fill="none" stroke="#4b5563" stroke-width="1.3" marker-end="url(#{escape(marker)})"/>'
    )
    if edge.label is None:
        return path
    label = (
        f'<text x="{lx:.0f}" y="{ly:.0f}" text-anchor="middle" font-size="10" fill="#374151" '
        f'stroke="#ffffff" stroke-width="3" paint-order="stroke">{escape(_clip(edge.label, 24))}</text>'
    )
    return path + label


def _node(node: Node, lines: Sequence[tuple[str, bool]], at: tuple[float, float], box: _Box) -> str:
    x, y = at
    fill, stroke = STYLES.get(node.css, STYLES["state"])
    extra = ' stroke-dasharray="5 3"' if node.css in _DASHED else ""
    thick = 3 if node.css in ("current", "active") else 1.5
    texts = []
    for i, (line, is_title) in enumerate(lines):
        offset = box.height / 2 + (i - (len(lines) - 1) / 2) * _LINE + 4
        weight = ' font-weight="600"' if is_title else ' fill="#374151"'
        texts.append(
            f'<text x="{x + box.width / 2:.0f}" y="{y + offset:.0f}" text-anchor="middle"{weight}>'
            f"{escape(line)}</text>"
        )
    status = "" if node.subtitle is None else f' data-status="{escape(node.subtitle)}"'
    return (
        f'<g class="node {escape(node.css)}" data-name="{escape(node.key)}"{status}>'
        f'<rect x="{x:.0f}" y="{y:.0f}" width="{box.width}" height="{box.height}" rx="8" fill="{fill}" '
        f'stroke="{stroke}" stroke-width="{thick}"{extra}/>{"".join(texts)}</g>'
    )


def lifecycle_svg(
    lifecycle: Lifecycle, *, current: str | None, element_id: str, show: Callable[[str], str] = str
) -> str:
    """A lifecycle's states and transitions, the ``current`` state highlighted. Triggers
    allowed from three or more states are named in a caption instead of drawn. ``show``
    gives a state's or trigger's label (a profile's state names; the lifecycle's own by
    default)."""
    nodes = []
    for state in lifecycle.states:
        css = "current" if state == current else ("final" if lifecycle.is_final(state) else "state")
        nodes.append(Node(state, show(state), "current" if state == current else None, css))
    edges = [
        Edge(source, t.dest, show(t.trigger), faint=len(t.sources) >= 3)
        for t in lifecycle.transitions
        for source in t.sources
    ]
    title = f"{lifecycle.name} lifecycle" + (f", current state {show(current)}" if current else "")
    open_states = {state for state in lifecycle.states if not lifecycle.is_final(state)}
    wide = [
        f"{show(t.trigger)} → {show(t.dest)} from "
        + ("any non-final state" if set(t.sources) == open_states else ", ".join(map(show, t.sources)))
        for t in lifecycle.transitions
        if len(t.sources) >= 3
    ]
    note = "; ".join(wide) if wide else None
    return render_graph(nodes, edges, title=title, element_id=element_id, note=note)


def phases_svg(steps: Sequence[StepLike], statuses: Mapping[str, str], *, title: str, element_id: str) -> str:
    """A run's step DAG, each step coloured and labelled with its status."""
    nodes = [
        Node(step.name, step.name, statuses.get(step.name), phase_class(statuses.get(step.name, "")))
        for step in steps
    ]
    edges = [Edge(dep, step.name) for step in steps for dep in step.depends_on]
    return render_graph(nodes, edges, title=title, element_id=element_id)
