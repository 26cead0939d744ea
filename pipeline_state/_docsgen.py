"""Write the reference pages of the documentation site from the code.

The pages under ``docs/reference/`` that describe states, transitions, pipelines, the wire
contract and the error tree are *generated*: they are rendered from the same definitions
the engine runs (:data:`~pipeline_state._lifecycle.LIFECYCLES`, the default profile's
catalog, its wire contract (:class:`WireContract`, from
:func:`~pipeline_state.profiles.default_wire_contract`) and the pydantic models' JSON
schemas, :mod:`pipeline_state.errors`), so they cannot drift from it. A test re-renders them and
fails when a committed page differs.

Regenerate them from the repository root with::

    python -m pipeline_state._docsgen            # rewrite the pages that changed
    python -m pipeline_state._docsgen --check    # exit 1 and list the stale pages

Rendering is pure and deterministic (declaration order, never set order); only
:func:`write_pages`, :func:`stale_pages` and :func:`main` touch the file system.
"""

from __future__ import annotations

import argparse
import inspect
import json
import re
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from . import errors as errors_module
from ._api_reference import render_api_page
from ._asyncapi import asyncapi_document, asyncapi_json
from ._asyncapi_kafka import DEAD_LETTER
from ._diagrams import (
    TransitionRow,
    edge_label,
    lifecycle_mermaid,
    pipeline_mermaid,
    state_groups,
    transition_rows,
)
from ._lifecycle import (
    ABSENT,
    LIFECYCLES,
    PHASE_ACTIVE,
    PHASE_DONE,
    PHASE_TERMINAL,
    Lifecycle,
    PhaseStatus,
    Refusals,
    Transition,
    Verdict,
)
from ._markdown import anchor as _anchor
from ._markdown import code as _code
from ._markdown import codes as _codes
from ._markdown import table as _table
from ._markdown import unique_anchors
from ._profile import Profile
from ._profile_reference import render_profile_page
from ._wire import EventEnvelope, TopicSpec, WireModel
from .profiles import default_profile, default_wire_contract

__all__ = [
    "ABSENT_LABEL",
    "ELSEWHERE_LABEL",
    "GENERATED_BANNER",
    "REGENERATE_COMMAND",
    "VERDICT_MEANINGS",
    "WireContract",
    "main",
    "render_asyncapi_page",
    "render_cli_page",
    "render_errors_page",
    "render_lifecycles_page",
    "render_pages",
    "render_pipelines_page",
    "render_wire_contract_page",
    "stale_pages",
    "write_pages",
]

REGENERATE_COMMAND = "python -m pipeline_state._docsgen"
"""The command that regenerates the pages (run from the repository root)."""

GENERATED_BANNER = (
    f"<!-- Generated from the code by `{REGENERATE_COMMAND}`: do not edit by hand, "
    "a test fails when this page differs from a fresh render. -->"
)
"""The first line of every generated page."""

_LIFECYCLE_TITLES: Mapping[str, str] = {
    "batch": "Batch lifecycle",
    "run": "Run lifecycle",
    "phase": "Phase execution lifecycle",
}
_LIFECYCLE_INTROS: Mapping[str, str] = {
    "batch": (
        "A batch is registered, validated (its content, then, for a batch with a group, the "
        "matching of its items to the group's members), "
        "and then alternates between `ready_for_pipeline_execution` and "
        "`processing_pipelines`, one run at a time, until it is archived, cancelled or fails "
        "critically."
    ),
    "run": (
        "A run is one accepted pipeline request. It is `active` until no phase of it can move "
        "any more, then ends in exactly one final status and is archived into the batch's history."
    ),
    "phase": (
        "Each step of a run's plan is a phase with its own execution status. Only a phase in "
        "`dispatch_initiated` accepts an outcome."
    ),
}

VERDICT_MEANINGS: Mapping[Verdict, str] = {
    Verdict.IGNORE: (
        "nothing changes and nothing is emitted; the decision records the reason (normal under "
        "at-least-once delivery: a repeat or a late fact)"
    ),
    Verdict.DENY: "a request is refused: denial events are emitted (with the reason), nothing else changes",
    Verdict.REJECT: (
        "the input can never be right here: a typed error is raised "
        "([`IllegalTransitionError`][pipeline_state.errors.IllegalTransitionError] for a "
        "trigger the state does not allow) and nothing changes"
    ),
    Verdict.HOLD: (
        "not now: an internal move waits until a later decision finds its guards true; nothing is reported"
    ),
}
"""What each :class:`~pipeline_state._lifecycle.Verdict` means, as the reference page says it."""


# --------------------------------------------------------------------------- helpers


def _fence(language: str, body: str) -> list[str]:
    return [f"```{language}", body.rstrip("\n"), "```"]


def _page(lines: Iterable[str]) -> str:
    text = "\n".join([GENERATED_BANNER, "", *lines]).rstrip("\n") + "\n"
    return re.sub(r"\n{3,}", "\n\n", text)


# --------------------------------------------------------------------------- lifecycles


ABSENT_LABEL = "*absent*"
"""How the tables name the pseudo-state of an entity that does not exist yet."""

ELSEWHERE_LABEL = "*any other*"
"""How the refusals table names every other state in which a trigger is not allowed."""

_ORDINALS = ("1st", "2nd", "3rd")


def _state_cell(state: str) -> str:
    return ABSENT_LABEL if state == ABSENT else _code(state)


def _ordinal(n: int) -> str:
    return _ORDINALS[n - 1] if n <= len(_ORDINALS) else f"{n}th"


def _move(lifecycle: Lifecycle, move: Transition) -> str:
    return f"{_code(edge_label(lifecycle, move))} → {_code(move.dest)}"


def _states_table(lifecycle: Lifecycle) -> list[str]:
    phase = lifecycle.name == "phase"
    header = ["state", "kind", "leaves by (arrow label → state)"]
    if phase:
        header[2:2] = ["accepts outcomes", "reused by later runs"]
    creators: dict[str, list[str]] = {}
    for move in lifecycle.transitions:
        if move.creates:
            creators.setdefault(move.dest, []).append(move.trigger)
    rows: list[list[str]] = []
    for state in lifecycle.states:
        kinds = []
        if state == lifecycle.initial:
            kinds.append("initial")
        if state in creators:
            kinds.append(f"created by {_codes(creators[state])}")
        if lifecycle.is_final(state):
            kinds.append("final")
        moves = ", ".join(_move(lifecycle, move) for move in lifecycle.moves_from(state))
        row = [_code(state), ", ".join(kinds) or "—", moves or "— (never changes again)"]
        if phase:
            row[2:2] = [
                "yes" if state in PHASE_ACTIVE else "no",
                "yes (pruned)" if state in PHASE_DONE else "no",
            ]
        rows.append(row)
    return _table(header, rows)


def _sources_cell(lifecycle: Lifecycle, move: Transition) -> str:
    if move.creates:
        return f"{ABSENT_LABEL} (creates it)"
    cell = _codes(move.sources)
    open_states = tuple(s for s in lifecycle.states if not lifecycle.is_final(s))
    if len(move.sources) > 1 and move.sources == open_states:
        cell = f"any non-final state: {cell}"
    return cell


def _effects_cell(move: Transition) -> str:
    parts = []
    if move.before:
        parts.append(f"before: {_codes(move.before)}")
    if move.after:
        parts.append(f"after: {_codes(move.after)}")
    return "; ".join(parts) or "—"


def _order_note(rows: Sequence[TransitionRow]) -> str:
    """Where a transition stands among the alternatives of its trigger, from its rows (one
    per source); empty when it is the only one."""
    orders = sorted({(row.alternative, row.alternatives) for row in rows})
    if orders == [(1, 1)]:
        return ""
    return ", ".join(f"tried {_ordinal(position)} of {total} alternatives" for position, total in orders)


def _transitions_table(lifecycle: Lifecycle) -> list[str]:
    rows = iter(transition_rows(lifecycle))  # one row per (transition, source), in order
    body = []
    for move in lifecycle.transitions:
        mine = [next(rows) for _ in move.sources]
        notes = [text for text in (_order_note(mine), " ".join(move.doc.split())) if text]
        body.append(
            [
                _code(move.trigger),
                _sources_cell(lifecycle, move),
                _code(move.dest),
                _codes(move.guards),
                _effects_cell(move),
                "; ".join(notes) or "—",
            ]
        )
    return _table(["trigger", "from", "to", "guards (in order)", "effects", "note"], body)


def _guards_table(lifecycle: Lifecycle) -> list[str]:
    rows = []
    for guard in lifecycle.guards.values():
        reasons = _codes(guard.reasons)
        if guard.open_reasons:
            reasons += " (examples: pluggable guards give their own)"
        users = dict.fromkeys(t.trigger for t in lifecycle.transitions if guard.name in t.guards)
        rows.append(
            [
                _code(guard.name),
                " ".join(guard.doc.split()) or "—",
                _code(guard.verdict.value),
                reasons,
                _codes(users),
            ]
        )
    return _table(["guard", "holds when", "if false", "reasons", "used by"], rows)


def _effects_table(lifecycle: Lifecycle) -> list[str]:
    rows = []
    for effect in lifecycle.effects.values():
        users = [
            f"{_code(t.trigger)} ({'before' if effect.name in t.before else 'after'})"
            for t in lifecycle.transitions
            if effect.name in t.effects
        ]
        rows.append(
            [_code(effect.name), " ".join(effect.doc.split()) or "—", ", ".join(dict.fromkeys(users))]
        )
    return _table(["effect", "does", "run by (when)"], rows)


def _refusals_table(lifecycle: Lifecycle) -> list[str]:
    rows = []
    for trigger in lifecycle.triggers:
        declared = lifecycle.refusals.get(trigger)
        specific = [] if declared is None else list(declared.by_state.items())
        for state, refusal in specific:
            rows.append(
                [
                    _code(trigger),
                    _state_cell(state),
                    _code(refusal.verdict.value),
                    _code(refusal.reason) if refusal.reason else "—",
                    _code(refusal.detail) if refusal.detail else "—",
                ]
            )
        default = (declared or Refusals()).default
        rows.append(
            [
                _code(trigger),
                ELSEWHERE_LABEL,
                _code(default.verdict.value),
                _code(default.reason) if default.reason else "—",
                _code(default.detail) if default.detail else "—",
            ]
        )
    return _table(["trigger", "in state", "verdict", "reason", "detail"], rows)


def _not_states(lifecycle: Lifecycle) -> list[str]:
    """Wire values of the lifecycle's status enum that are not states of it (only the
    phase enum has any: ``BatchStatus`` is exactly the batch lifecycle's states)."""
    if lifecycle.name != "phase":
        return []
    return [status.value for status in PhaseStatus if status.value not in lifecycle.states]


def _lifecycle_section(lifecycle: Lifecycle) -> list[str]:
    name = lifecycle.name
    title = _LIFECYCLE_TITLES.get(name, f"{name.capitalize()} lifecycle")
    lines = [f"## {title} {{ #{_anchor(name)}-lifecycle }}", ""]
    intro = _LIFECYCLE_INTROS.get(name)
    if intro:
        lines += [intro, ""]
    if lifecycle.doc:
        lines += [f"*Definition:* {' '.join(lifecycle.doc.split())}", ""]
    lines += [*_fence("mermaid", lifecycle_mermaid(lifecycle)), ""]
    groups = state_groups(lifecycle)
    if groups:
        boxed = "; ".join(f"*{g.label}* holds {_codes(g.states)}" for g in groups)
        lines += [
            f"The box is drawn for the transitions that leave from every state in it ({boxed}); "
            "its arrows stand for one arrow from each of those states.",
            "",
        ]

    lines += [f"### States of the {name} lifecycle", "", *_states_table(lifecycle), ""]
    legacy = _not_states(lifecycle)
    if legacy:
        lines += [
            f"Wire values that are not states of this lifecycle: {_codes(legacy)}. They parse and "
            "count as active or terminal where the status sets say so, but the engine never "
            "enters them (see the definition above).",
            "",
        ]
    if name == "phase":
        lines += [
            f"Terminal phase statuses: {_codes(s for s in lifecycle.states if s in PHASE_TERMINAL)}.",
            "",
        ]

    lines += [f"### Transitions of the {name} lifecycle", "", *_transitions_table(lifecycle), ""]
    if lifecycle.guards:
        lines += [f"### Guards of the {name} lifecycle", "", *_guards_table(lifecycle), ""]
    if lifecycle.effects:
        lines += [f"### Effects of the {name} lifecycle", "", *_effects_table(lifecycle), ""]
    lines += [
        f"### Refusals of the {name} lifecycle",
        "",
        f"What a trigger does in a state that does not allow it ({ABSENT_LABEL}: the "
        f"{name} does not exist yet; {ELSEWHERE_LABEL}: every other such state). "
        "`{trigger}` and `{state}` in a reason are filled in.",
        "",
        *_refusals_table(lifecycle),
        "",
    ]
    return lines


def render_lifecycles_page(lifecycles: Mapping[str, Lifecycle] = LIFECYCLES) -> str:
    """The page with every lifecycle's state diagram and its tables of states,
    transitions, guards, effects and refusals."""
    missing = set(Verdict) - VERDICT_MEANINGS.keys()
    if missing:  # pragma: no cover - guards a new verdict without an explanation
        raise ValueError(f"VERDICT_MEANINGS does not explain {sorted(missing)}")
    lines = [
        "# Lifecycles, states and transitions",
        "",
        "Every diagram and table on this page is rendered from the lifecycle definitions in "
        "[`pipeline_state._lifecycle`][pipeline_state._lifecycle] by "
        "[`lifecycle_mermaid`][pipeline_state._diagrams.lifecycle_mermaid] and "
        "[`transition_rows`][pipeline_state._diagrams.transition_rows]; the same diagrams are "
        "printed by `pipeline-state diagram batch|run|phase`. The lifecycle is the rule-book: "
        "the engine fires these transitions, checks these guards and answers with these "
        "refusals ([Concepts](../concepts.md#lifecycles-are-the-rule-book) explains the words).",
        "",
        "## Reading the diagrams",
        "",
        "- An arrow is labelled `trigger [guard, ...]`: the trigger moves the entity along it "
        "when every guard holds, checked in the order written.",
        "- `else trigger` is an alternative: the same trigger from the same state, tried only "
        "when the alternatives before it do not apply (the first whose guards hold is taken).",
        "- Several transitions between the same two states share one arrow, one line each.",
        "- An arrow from `[*]` creates the entity; final states lead to `[*]`.",
        "- A box holds states that share transitions: its arrows leave from every state in it.",
        "- Effects are listed in the transitions tables, not on the arrows "
        "(`lifecycle_mermaid(..., effects=True)` writes them after a `/`).",
        "",
        "When a guard is false, or a trigger arrives in a state that does not allow it, the "
        "engine answers with a verdict:",
        "",
        *_table(["verdict", "meaning"], ([_code(v.value), VERDICT_MEANINGS[v]] for v in Verdict)),
        "",
    ]
    for lifecycle in lifecycles.values():
        lines += _lifecycle_section(lifecycle)
    return _page(lines)


# --------------------------------------------------------------------------- pipelines


def render_pipelines_page(profile: Profile | None = None) -> str:
    """The page with a DAG and a step table for every pipeline of ``profile``'s catalog."""
    profile = profile or default_profile()
    catalog = profile.catalog
    ids = unique_anchors(catalog.names, "pipeline")
    lines = [
        f"# Pipelines of the `{profile.name}` profile",
        "",
        "Each pipeline is a DAG of phases declared as data in the profile's catalog "
        "(a [`Catalog`][pipeline_state._catalog.Catalog]). "
        "The diagrams are rendered by [`pipeline_mermaid`][pipeline_state._diagrams.pipeline_mermaid] "
        "(also `pipeline-state diagram pipelines`); an arrow points from a phase to the phases "
        "that depend on it. Steps are listed in *plan order*: the deterministic order in which "
        "the engine considers them.",
        "",
        *_table(
            ["pipeline", "steps in plan order", "final step"],
            (
                [
                    f"[{_code(name)}](#{ids[name]})",
                    _codes(catalog.get(name).step_names),
                    _code(catalog.get(name).final_step),
                ]
                for name in catalog.names
            ),
        ),
        "",
    ]
    for name in catalog.names:
        pipeline = catalog.get(name)
        lines += [
            f"## {_code(name)} {{ #{ids[name]} }}",
            "",
            *_fence("mermaid", pipeline_mermaid(pipeline)),
            "",
        ]
        rows = []
        for step in pipeline.steps:
            command = profile.phase_commands.get(step.name)
            deadline = "—" if step.deadline_seconds is None else f"{step.deadline_seconds:g} s"
            rows.append(
                [
                    _code(step.name),
                    _codes(step.depends_on),
                    deadline,
                    _code(command.topic) if command else "—",
                ]
            )
        lines += [*_table(["step", "depends on", "deadline", "started by command on topic"], rows), ""]
    lines += [
        "A step that an earlier run of the batch completed (`completed_successfully` or "
        "`completed_with_partial_success`) is pruned from a later run and reported with "
        '`PhaseSkippedV1` (`skip_reason="already_completed"`); see [Concepts](../concepts.md#pruning).',
        "",
    ]
    return _page(lines)


# --------------------------------------------------------------------------- wire contract


def _schema_type(schema: Mapping[str, Any]) -> str:
    """A short, readable type for one JSON-schema node."""
    if "$ref" in schema:
        name = str(schema["$ref"]).rsplit("/", 1)[-1]
        return f"[`{name}`](#{_anchor(name)})"
    if "const" in schema:
        return _code(json.dumps(schema["const"]))
    if "enum" in schema:
        return "one of " + ", ".join(_code(json.dumps(v)) for v in schema["enum"])
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return " or ".join(_schema_type(option) for option in schema[key])
    kind = schema.get("type")
    if kind == "array":
        items = schema.get("items")
        return f"list of {_schema_type(items)}" if isinstance(items, Mapping) else "list"
    if kind == "object":
        values = schema.get("additionalProperties")
        if isinstance(values, Mapping) and values:
            return f"map of string to {_schema_type(values)}"
        return "object"
    if isinstance(kind, str):
        fmt = schema.get("format")
        return f"{kind} ({fmt})" if fmt else kind
    return "any"


_CONSTRAINTS: tuple[tuple[str, str], ...] = (
    ("minLength", "length ≥ {}"),
    ("maxLength", "length ≤ {}"),
    ("minimum", "≥ {}"),
    ("maximum", "≤ {}"),
    ("exclusiveMinimum", "> {}"),
    ("exclusiveMaximum", "< {}"),
    ("minItems", "items ≥ {}"),
    ("maxItems", "items ≤ {}"),
    ("pattern", "matches {}"),
)


def _constraints(schema: Mapping[str, Any]) -> str:
    found = [
        template.format(_code(schema[key])) if key == "pattern" else template.format(schema[key])
        for key, template in _CONSTRAINTS
        if key in schema
    ]
    return ", ".join(found) or "—"


def _fields_table(schema: Mapping[str, Any]) -> list[str]:
    properties: Mapping[str, Mapping[str, Any]] = schema.get("properties", {})
    required = set(schema.get("required", ()))
    rows = []
    for name, field in properties.items():
        default = "—" if "default" not in field else _code(json.dumps(field["default"]))
        rows.append(
            [
                _code(name),
                _schema_type(field),
                "yes" if name in required else "no",
                default,
                _constraints(field),
            ]
        )
    if not rows:
        return ["No fields."]
    return _table(["field", "type", "required", "default", "constraints"], rows)


def _model_section(title: str, schema: Mapping[str, Any], facts: Sequence[str] = ()) -> list[str]:
    lines = [f"### `{title}` {{ #{_anchor(title)} }}", ""]
    description = " ".join(str(schema.get("description", "")).split())
    if description:
        lines += [description, ""]
    if facts:
        lines += [" · ".join(facts), ""]
    return [*lines, *_fields_table(schema), ""]


def _collect_defs(schema: Mapping[str, Any], into: dict[str, Mapping[str, Any]], owner: str) -> None:
    for name, definition in schema.get("$defs", {}).items():
        previous = into.setdefault(name, definition)
        if previous != definition:  # pragma: no cover - guards a naming clash between models
            raise ValueError(f"two different JSON schemas named {name!r} (seen again in {owner})")


@attrs.frozen
class WireContract:
    """What a profile's wire-contract page is rendered from: its topics, and the Markdown
    that names where they are declared (``source``), what parses them (``parser``) and
    which fields key its messages (``keys``)."""

    topics: Mapping[str, TopicSpec]
    source: str
    parser: str
    keys: str


def render_wire_contract_page(contract: WireContract | None = None) -> str:
    """The page listing every topic of ``contract`` (default: the default profile's), the
    envelope and each payload's fields."""
    contract = contract or default_wire_contract()
    topics = contract.topics
    lines = [
        "# Wire contract",
        "",
        "Every Kafka message value is a JSON [`EventEnvelope`](#eventenvelope) whose `data` is "
        "the payload of its topic. The tables are rendered from "
        f"{contract.source} and the pydantic models' JSON schemas "
        "(`model_json_schema()`), so they list exactly what "
        f"{contract.parser} accepts "
        "and what the engine emits. "
        "Unknown extra fields are ignored on input. The message key is the value of the topic's "
        f"key field ({contract.keys}), which keeps "
        "every batch's messages in order on one partition.",
        "",
        "## Topics",
        "",
    ]
    lines += _table(
        ["direction", "topic", "payload (`data`)", "key field"],
        (
            [
                "in" if spec.direction == "in" else "out",
                _code(spec.topic),
                f"[`{spec.model.__name__}`](#{_anchor(spec.model.__name__)})",
                _code(spec.key_field),
            ]
            for spec in topics.values()
        ),
    )
    lines += [
        "",
        "A message that cannot be decoded or validated raises "
        "[`InvalidMessageError`][pipeline_state.errors.InvalidMessageError] naming the topic and "
        "the field; an unknown topic raises [`UnknownTopicError`][pipeline_state.errors.UnknownTopicError].",
        "",
        "## Envelope",
        "",
    ]
    envelope_schema = EventEnvelope.model_json_schema()
    lines += _model_section(
        "EventEnvelope", envelope_schema, ["`event_type` must equal the topic the message is received on."]
    )
    nested: dict[str, Mapping[str, Any]] = {}
    for direction, heading in (("in", "Inbound payloads"), ("out", "Outbound payloads")):
        lines += [f"## {heading}", ""]
        for spec in topics.values():
            if spec.direction != direction:
                continue
            model: type[WireModel] = spec.model
            schema = model.model_json_schema()
            _collect_defs(schema, nested, model.__name__)
            facts = [f"topic {_code(spec.topic)}", f"key {_code(spec.key_field)}"]
            lines += _model_section(model.__name__, schema, facts)
    if nested:
        lines += ["## Nested models", ""]
        for name in sorted(nested):
            lines += _model_section(name, nested[name])
    return _page(lines)


# --------------------------------------------------------------------------- errors


def _error_tree(doc: str) -> str:
    """The indented tree drawn in the errors module docstring (after the ``::`` line)."""
    lines = doc.splitlines()
    start = next((i for i, line in enumerate(lines) if line.rstrip().endswith("::")), None)
    if start is None:
        raise ValueError("the errors module docstring has no '::' block with the error tree")
    block: list[str] = []
    for line in lines[start + 1 :]:
        if line.strip() and not line.startswith(" "):
            break
        block.append(line)
    return inspect.cleandoc("\n".join(block))


def _error_classes(tree: str) -> list[type[BaseException]]:
    """The exported error classes, in the order the tree draws them (undrawn ones last)."""
    names: Sequence[str] = errors_module.__all__
    classes = [getattr(errors_module, name) for name in names]
    found = [cls for cls in classes if isinstance(cls, type) and issubclass(cls, BaseException)]

    def position(cls: type[BaseException]) -> tuple[int, str]:
        match = re.search(rf"\b{cls.__name__}\b", tree)
        return (match.start() if match else len(tree), cls.__name__)

    return sorted(found, key=position)


def _constructor(cls: type[BaseException]) -> str:
    """The constructor's parameters, without annotations: ``(problem, *, pipeline=None)``."""
    owner = next(c for c in cls.__mro__ if "__init__" in c.__dict__)
    if owner in (Exception, BaseException):
        return "`(message)`"
    parts: list[str] = []
    for parameter in inspect.signature(owner).parameters.values():
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY and "*" not in parts:
            parts.append("*")
        default = parameter.default
        parts.append(
            parameter.name if default is inspect.Parameter.empty else f"{parameter.name}={default!r}"
        )
    return _code(f"({', '.join(parts)})")


def render_errors_page() -> str:
    """The error reference: the tree from the errors module docstring and one row per error."""
    tree = _error_tree(errors_module.__doc__ or "")
    rows = []
    for cls in _error_classes(tree):
        parent = cls.__mro__[1]
        summary = " ".join((inspect.getdoc(cls) or "").split("\n\n", 1)[0].split())
        rows.append(
            [
                f"[`{cls.__name__}`][pipeline_state.errors.{cls.__name__}]",
                "—" if parent is Exception else _code(parent.__name__),
                _constructor(cls),
                summary,
            ]
        )
    lines = [
        "# Errors",
        "",
        "Every error the library raises on purpose derives from "
        "[`PipelineStateError`][pipeline_state.errors.PipelineStateError], so one `except` "
        "catches the family. Errors carry their context as attributes (the constructor's "
        "keyword arguments), not only in the message. The tree below is the one drawn in the "
        "docstring of [`pipeline_state.errors`][pipeline_state.errors].",
        "",
        *_fence("text", tree),
        "",
        *_table(["error", "parent", "constructor", "meaning"], rows),
        "",
        "Definition errors are raised while definitions are built (at import time for the "
        "shipped ones), never while events are handled. Driver errors are translated at the "
        "adapter boundary (`raise StoreUnavailableError(...) from exc`).",
        "",
    ]
    return _page(lines)


# --------------------------------------------------------------------------- asyncapi


def _key_cell(message: Mapping[str, Any]) -> str:
    kafka: Mapping[str, Any] = message.get("bindings", {}).get("kafka", {})
    location = kafka.get("x-key-location")
    if isinstance(location, str):
        return _code(location.removeprefix("$message.payload#/").replace("/", "."))
    return str(kafka.get("key", {}).get("description", "—"))


def render_asyncapi_page(profile: Profile | None = None) -> str:
    """The page that shows the AsyncAPI document of ``profile``'s wire as tables."""
    profile = profile or default_profile()
    document = asyncapi_document(profile)
    messages: Mapping[str, Mapping[str, Any]] = document["components"]["messages"]
    documented = {spec.model.__name__ for spec in default_wire_contract().topics.values()}
    rows = []
    sent: list[tuple[bool, Mapping[str, Any]]] = []
    for operation in document["operations"].values():
        topic = operation["channel"]["$ref"].removeprefix("#/channels/")
        (ref,) = document["channels"][topic]["messages"].values()
        message = messages[ref["$ref"].removeprefix("#/components/messages/")]
        name = message["name"]
        if operation["action"] == "send" and name != DEAD_LETTER:
            sent.append((operation["tags"][0]["name"] == "event", message))
        rows.append(
            [
                _code(topic),
                f"{operation['action']} ({operation['tags'][0]['name']})",
                f"[`{name}`](wire-contract.md#{_anchor(name)})" if name in documented else _code(name),
                _key_cell(message),
            ]
        )
    sample = max(sent, key=lambda pair: pair[0])[1]  # the first event (max keeps the first)
    letter = messages[DEAD_LETTER]["headers"]
    headers = sample["headers"]["properties"]
    lines = [
        f"# AsyncAPI document of the `{profile.name}` profile",
        "",
        "The Kafka wire of a service, as an [AsyncAPI 3.0.0](https://www.asyncapi.com/docs/reference/"
        "specification/v3.0.0) document generated from the code by "
        "[`asyncapi_document`][pipeline_state._asyncapi.asyncapi_document]: download it as "
        "[`asyncapi.json`](asyncapi.json), or fetch it from a running service at `GET /asyncapi.json` "
        "(API token). Channels are topics (a deployment's topic prefix goes before each); each "
        "channel's message is an [`EventEnvelope`](wire-contract.md#eventenvelope) whose `data` is "
        "the channel's pydantic model, every model's JSON schema under `components/schemas`. A test "
        "validates the document against the official AsyncAPI 3.0.0 JSON Schema and checks the "
        "records the engine really sends against it.",
        "",
        "## Channels and operations",
        "",
        "Facts are received; phase commands, the profile's events and dead letters are sent. The "
        "key is the record key's location in the value (the Kafka binding's `x-key-location`). "
        "Commands and events carry the [envelope headers](#headers), dead letters the "
        "[`dlq_*` headers](#dead-letters).",
        "",
        *_table(["channel (topic)", "operation", "message (`data`)", "key"], rows),
        "",
        "## Headers",
        "",
        "Every command and event the service publishes carries these headers (UTF-8 text). Of "
        "the records it consumes, the service reads only the optional `traceparent` and "
        "`tracestate` (it continues that trace); any other header is allowed and ignored.",
        "",
        *_table(
            ["header", "value"],
            ([_code(name), " ".join(str(spec["description"]).split())] for name, spec in headers.items()),
        ),
        "",
        "## Dead letters",
        "",
        "A record of a consumed topic that can never be handled (not JSON, not valid, unknown, "
        "too large, or a fact that waited too long) is parked unchanged on the topic's "
        "dead-letter channel (`<topic>.DLQ`), same key and value, its own headers kept, with "
        "these headers added:",
        "",
        *_table(
            ["header", "always", "value"],
            (
                [_code(name), "yes" if name in letter["required"] else "no", str(spec["description"])]
                for name, spec in letter["properties"].items()
            ),
        ),
        "",
        "## One message in full",
        "",
        f"The message of `{sample['name']}`, as the document declares it:",
        "",
        *_fence("json", json.dumps(sample, indent=2, ensure_ascii=False)),
        "",
    ]
    return _page(lines)


# --------------------------------------------------------------------------- files


def render_cli_page() -> str:
    """The command-line reference: exit codes, environment and every operator command."""
    from ._cli import build_parser, command_plugins

    parser = build_parser()
    lines = [line for plugin in command_plugins() for line in plugin.reference_lines(parser)]
    return _page(lines or ["# Command line", "", "No command plugin is installed.", ""])


_RENDERERS: Mapping[str, Callable[[], str]] = {
    "reference/lifecycles.md": render_lifecycles_page,
    "reference/pipelines.md": render_pipelines_page,
    "reference/wire-contract.md": render_wire_contract_page,
    "reference/errors.md": render_errors_page,
    "reference/asyncapi.md": render_asyncapi_page,
    "reference/asyncapi.json": asyncapi_json,
    "reference/profile.md": lambda: _page([render_profile_page(default_profile())]),
    "reference/cli.md": render_cli_page,
    "reference/api.md": lambda: _page(render_api_page()),
}


def render_pages() -> dict[str, str]:
    """Every generated page: path relative to the docs folder -> Markdown text (or, for
    ``.json`` files, the JSON document a page links to)."""
    return {path: render() for path, render in _RENDERERS.items()}


def stale_pages(docs_dir: Path) -> list[str]:
    """Generated pages that are missing under ``docs_dir`` or differ from a fresh render."""
    stale = []
    for path, text in render_pages().items():
        target = docs_dir / path
        if not target.is_file() or target.read_text(encoding="utf-8") != text:
            stale.append(path)
    return stale


def write_pages(docs_dir: Path) -> list[str]:
    """Write the generated pages that changed under ``docs_dir``; returns their paths."""
    written = []
    for path, text in render_pages().items():
        target = docs_dir / path
        if target.is_file() and target.read_text(encoding="utf-8") == text:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m pipeline_state._docsgen [--check] [--docs-dir DIR]``."""
    parser = argparse.ArgumentParser(
        prog="python -m pipeline_state._docsgen", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--docs-dir", default="docs", help="the site's docs folder (default: ./docs)")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a page is stale")
    args = parser.parse_args(argv)
    docs_dir = Path(args.docs_dir)
    if not docs_dir.is_dir():
        print(f"error: {docs_dir} is not a folder (run from the repository root)", file=sys.stderr)
        return 2
    if args.check:
        stale = stale_pages(docs_dir)
        for path in stale:
            print(f"stale: {docs_dir / path}", file=sys.stderr)
        if stale:
            print(f"regenerate with: {REGENERATE_COMMAND}", file=sys.stderr)
        return 1 if stale else 0
    for path in write_pages(docs_dir):
        print(f"wrote {docs_dir / path}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
