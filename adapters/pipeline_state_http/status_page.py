"""The live status page of one batch: rendered diagrams, the phases table and the history.

Everything is rendered on the server: the diagrams are inline SVG (see
:mod:`pipeline_state_http.svg`), so the page needs no script from elsewhere and works
offline. A small inline script (allowed by a per-response nonce in the page's
Content-Security-Policy) refreshes the live part in place every few seconds. Every value
that comes from a request or the store is HTML-escaped.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Sequence
from datetime import datetime
from html import escape

from pipeline_state._catalog import Catalog
from pipeline_state._lifecycle import BATCH_LIFECYCLE
from pipeline_state._model import BatchState, PhaseRun, Run
from pipeline_state._names import NO_RENAMES, StateNames

from .diagram import PRUNED, batch_mermaid, run_dag, shown_run
from .svg import lifecycle_svg, phase_class, phases_svg

__all__ = ["StatusPage", "render_status_page"]

_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5rem;color:#111827;background:#fafafa}
h1{font-size:1.4rem;margin:0 0 .3rem} h2{font-size:1.1rem;margin:1.4rem 0 .5rem}
.meta{color:#4b5563;font-size:.9rem} .meta code{background:#eef2ff;padding:0 .3rem;border-radius:4px}
.badge{display:inline-block;padding:.1rem .5rem;border-radius:999px;font-size:.85rem;border:1px solid}
.diagram{background:#fff;border:1px solid #e5e7eb;border-radius:8px;padding:.5rem;overflow-x:auto}
table{border-collapse:collapse;background:#fff;font-size:.9rem;min-width:50%}
th,td{border:1px solid #e5e7eb;padding:.3rem .6rem;text-align:left;vertical-align:top}
th{background:#f3f4f6} td.status{font-weight:600}
td.done{background:#dcfce7} td.failed{background:#fee2e2} td.active{background:#dbeafe}
td.pending{background:#f9fafb} td.skipped{background:#f3f4f6;color:#6b7280} td.pruned{background:#f7fee7}
details{margin-top:1rem} pre{background:#fff;border:1px solid #e5e7eb;padding:.6rem;overflow-x:auto}
footer{margin-top:1.5rem;color:#6b7280;font-size:.8rem}
"""

_SCRIPT = """
(function () {
  var every = %d;
  if (!every) { return; }
  function tick() {
    fetch(window.location.href, {headers: {"Accept": "text/html"}, cache: "no-store"})
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (text) {
        if (text) {
          var fresh = new DOMParser().parseFromString(text, "text/html").getElementById("live");
          var live = document.getElementById("live");
          if (fresh && live) { live.replaceWith(fresh); }
          document.getElementById("refreshed").textContent = new Date().toISOString();
        }
      })
      .catch(function () {})
      .then(function () { window.setTimeout(tick, every); });
  }
  window.setTimeout(tick, every);
})();
"""


class StatusPage:
    """A rendered page and the Content-Security-Policy that goes with it."""

    def __init__(self, html: str, nonce: str) -> None:
        self.html = html
        self.csp = (
            "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
            f"script-src 'nonce-{nonce}'; connect-src 'self'; base-uri 'none'; "
            "form-action 'none'; frame-ancestors 'none'"
        )


def _when(moment: datetime | None) -> str:
    return "" if moment is None else moment.isoformat(timespec="seconds")


def _table(headers: Sequence[str], rows: Iterable[Sequence[str]], *, table_id: str) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(rows_cells) + "</tr>" for rows_cells in rows)
    if not body:
        body = f'<tr><td colspan="{len(headers)}">none</td></tr>'
    return f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _cell(value: object) -> str:
    return f"<td>{escape(str(value))}</td>"


def _status_cell(status: str) -> str:
    css = phase_class(status)
    return f'<td class="status {css}" data-status="{escape(status)}">{escape(status)}</td>'


def _phase_rows(run: Run) -> list[list[str]]:
    rows = [
        [_cell(name), _status_cell(PRUNED), _cell(""), _cell(""), _cell(""), _cell("")] for name in run.pruned
    ]
    for phase in run.phases:
        rows.append(_phase_row(phase))
    return rows


def _phase_row(phase: PhaseRun) -> list[str]:
    counts = f"{len(phase.inputs)} in / {len(phase.outputs)} out / {len(phase.failed_item_ids)} failed"
    return [
        f'<td data-phase="{escape(phase.name)}">{escape(phase.name)}</td>',
        _status_cell(phase.status.value),
        _cell(_when(phase.dispatched_at)),
        _cell(_when(phase.finished_at)),
        _cell(counts),
        _cell(phase.error or ""),
    ]


def _history_rows(history: Sequence[Run], limit: int) -> list[list[str]]:
    return [
        [
            _cell(run.run_id),
            _cell(run.pipeline_name),
            _cell(run.status.value),
            _cell(", ".join(run.completed_phases)),
            _cell(", ".join(run.skipped_phases)),
            _cell(_when(run.accepted_at)),
            _cell(_when(run.completed_at)),
        ]
        for run in list(reversed(history))[:limit]
    ]


def _run_section(run: Run, catalog: Catalog, active: bool, items: str) -> str:
    dag = run_dag(run, catalog)
    heading = "Active run" if active else "Latest run"
    status = escape(run.status.value)
    svg = phases_svg(
        dag.steps, dag.statuses, title=f"phases of run {run.run_id}", element_id="phases-diagram"
    )
    table = _table(
        ["phase", "status", "dispatched", "finished", items, "error"], _phase_rows(run), table_id="phases"
    )
    return (
        f"<h2>{heading}: {escape(run.pipeline_name)} "
        f'<span class="badge" data-run-status="{status}">{status}</span></h2>'
        f'<p class="meta">run <code>{escape(run.run_id)}</code> · correlation '
        f"<code>{escape(run.correlation_id)}</code> · accepted {escape(_when(run.accepted_at))}</p>"
        f'<div class="diagram">{svg}</div><h3>Phases</h3>{table}'
    )


def render_status_page(
    state: BatchState,
    catalog: Catalog,
    *,
    title: str,
    refresh_seconds: int,
    history_limit: int,
    items: str = "items",
    state_names: StateNames = NO_RENAMES,
) -> StatusPage:
    """The HTML page of ``state``; ``items`` is what the profile calls its items (``essays``),
    ``state_names`` its names of batch statuses."""
    nonce = secrets.token_urlsafe(16)
    run = shown_run(state)
    show = state_names.show
    current = state.status.value
    batch_svg = lifecycle_svg(BATCH_LIFECYCLE, current=current, element_id="batch-diagram", show=show)
    run_html = (
        _run_section(run, catalog, state.active_run is not None, escape(items))
        if run is not None
        else '<h2>Runs</h2><p id="no-run">No pipeline has run on this batch yet.</p>'
    )
    history = _table(
        ["run", "pipeline", "final status", "completed", "skipped", "accepted", "completed at"],
        _history_rows(state.history, history_limit),
        table_id="history",
    )
    mermaid = escape(batch_mermaid(state, catalog, state_names=state_names))
    batch_id = escape(state.batch_id)
    status = escape(show(state.status.value))
    html = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)} · batch {batch_id}</title><style>{_CSS}</style></head>
<body>
<div id="live">
<h1>Batch <code><bdi>{batch_id}</bdi></code></h1>
<p class="meta">status <span class="badge" id="batch-status" data-status="{status}">{status}</span>
 · version {state.version} · owner <code><bdi>{escape(state.owner)}</bdi></code>
 · {len(state.items)} {escape(items)}
 · updated {escape(_when(state.updated_at))}</p>
<h2>Batch lifecycle</h2>
<div class="diagram">{batch_svg}</div>
{run_html}
<h2>History ({len(state.history)} archived runs, newest first)</h2>
{history}
<details><summary>Mermaid source</summary><pre id="mermaid-source">{mermaid}</pre></details>
</div>
<footer>{escape(title)} · refreshed <span id="refreshed">{escape(_when(state.updated_at))}</span></footer>
<script nonce="{nonce}">{_SCRIPT % (refresh_seconds * 1000)}</script>
</body></html>
"""
    return StatusPage(html, nonce)
