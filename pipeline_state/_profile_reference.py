"""The reference page of a profile, generated from the profile itself.

:func:`render_profile_page` describes everything a :class:`~pipeline_state._profile.Profile`
supplies to the engine: its limits, the readiness path its batches take, the topics it
consumes and the engine input each carries, the command that starts each phase (and the
fields the engine fills in it), the events its outbound emits and the admission guards that
can refuse a request. :mod:`pipeline_state._docsgen` writes it for the shipped profile, and the
docs tests check it never drifts from the code.
"""

from __future__ import annotations

from ._announced import announced_events
from ._markdown import code as _code
from ._markdown import codes as _codes
from ._markdown import table as _table
from ._profile import Profile, command_fields

__all__ = ["render_profile_page"]


def _seconds(value: float | None) -> str:
    return "none" if value is None else f"{value:g} s"


def _first_line(doc: str | None) -> str:
    return (doc or "").strip().split("\n\n")[0].replace("\n", " ")


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


def _limits(profile: Profile) -> list[str]:
    deadlines = ", ".join(f"`{p}`: {_seconds(s)}" for p, s in sorted(profile.deadlines.items())) or "—"
    rows = [
        ["`source_service`", _code(profile.source_service), "names the engine in every envelope it writes"],
        ["`max_items_per_batch`", str(profile.max_items_per_batch), "a larger registration is refused"],
        ["`max_command_bytes`", f"{profile.max_command_bytes:,}", "the largest phase command it may build"],
        ["`default_deadline_seconds`", _seconds(profile.default_deadline_seconds), "a phase's deadline"],
        ["`deadlines`", deadlines, "per-phase deadlines of this deployment"],
        ["`max_resends`", str(profile.max_resends), "re-sends of an overdue command before the phase fails"],
        [
            "`max_parallel`",
            "no limit" if profile.max_parallel is None else str(profile.max_parallel),
            "phases of a run dispatched at once",
        ],
        ["`strict_correlation`", str(profile.strict_correlation).lower(), "outcomes of no known run ignored"],
        [
            "`fan_in`",
            f"`{type(profile.fan_in).__name__}`",
            "what the command of a phase with several dependencies "
            f"({_codes(profile.fan_in_phases())}) carries for each item: "
            + _lower_first(_first_line(type(profile.fan_in).__doc__).rstrip(".")),
        ],
        [
            "`view_names`",
            _codes((profile.view_names.owner, profile.view_names.group_id, profile.view_names.items)),
            "keys of the owner, the group and the item count in the batch view (`snapshot`)",
        ],
    ]
    return _table(["setting", "value", "what it does"], rows)


def _readiness(profile: Profile) -> list[str]:
    matching = profile.group_matching
    if matching is None:
        return [
            "Every batch takes the **content-only** path: it is ready for pipelines once its "
            "content is provisioned (`ContentReady`).",
        ]
    fields = sorted(set(matching.model.model_fields) & command_fields(matching.model).matching)
    return [
        "A batch registered without a group is ready once its content is provisioned. A batch "
        f"with a group first asks for its items to be matched: the engine sends `{matching.model.__name__}` "
        f"on {_code(matching.topic)} (filling {_codes(fields)}), then waits for `GroupConfirmed` "
        "and `ItemsReady`.",
    ]


def _inbound(profile: Profile) -> list[str]:
    rows = (
        [_code(topic), f"`{entry.model.__name__}`", _code(entry.key_field), f"`{entry.kind.__name__}`"]
        for topic, entry in profile.inbound.topics.items()
    )
    return _table(["topic", "payload model", "key field", "engine input"], rows)


def _commands(profile: Profile) -> list[str]:
    rows = []
    for phase in profile.catalog.phases:
        spec = profile.phase_commands[phase]
        filled = sorted(set(spec.model.model_fields) & command_fields(spec.model).phase)
        rows.append([_code(phase), _code(spec.topic), f"`{spec.model.__name__}`", _codes(filled)])
    return _table(["phase", "command topic", "model", "fields the engine fills"], rows)


def _events(profile: Profile) -> list[str]:
    announced = announced_events(profile.name, profile.outbound)
    if not announced:
        return ["Its outbound emits nothing: the engine announces nothing on this profile's wire."]
    rows = (
        [
            _code(a.topic),
            f"`{a.model.__name__}`",
            "none" if a.key_field is None else f"{a.key} (`{a.key_field}`)",
            _codes(a.announces),
        ]
        for a in announced
    )
    return _table(["topic", "model", "key", "emitted for"], rows)


def _guards(profile: Profile) -> list[str]:
    if not profile.guards:
        return ["None: every request the lifecycle allows starts a run."]
    rows = ([f"`{type(g).__name__}`", _first_line(type(g).__doc__)] for g in profile.guards)
    return _table(["guard", "what it refuses"], rows)


def render_profile_page(profile: Profile) -> str:
    """The Markdown reference page of ``profile``."""
    lines = [
        f"# The `{profile.name}` profile",
        "",
        "What this profile supplies to the engine, generated from the profile itself (see "
        "[Define your own domain](../own-domain.md) for how a profile is built). Its pipelines "
        "are on the [Pipelines](pipelines.md) page and its messages on the "
        "[AsyncAPI](asyncapi.md) page.",
        "",
        "## Settings",
        "",
        *_limits(profile),
        "",
        "## Readiness",
        "",
        *_readiness(profile),
        "",
        "## What it consumes",
        "",
        "Each message is validated with its topic's model, then read as an engine input "
        "([`pipeline_state._inputs`][pipeline_state._inputs]).",
        "",
        *_inbound(profile),
        "",
        "## The command of each phase",
        "",
        *_commands(profile),
        "",
        "## What it announces",
        "",
        *_events(profile),
        "",
        "## Admission guards",
        "",
        *_guards(profile),
        "",
    ]
    return "\n".join(lines)
