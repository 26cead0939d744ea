"""An AsyncAPI 3.0.0 document of a profile's wire contract, generated from the code.

:func:`asyncapi_document` describes everything a service of ``profile`` reads from and writes
to Kafka, from the same definitions the engine runs:

* one **channel** per topic, its address the topic name: the topics of the profile's
  :class:`~pipeline_state._inbound.Inbound` (a ``receive`` operation each), the phase
  command topics of its :class:`~pipeline_state._profile.CommandSpec`\\ s and the topics of
  the events its :class:`~pipeline_state._outbound.Outbound` words (a ``send`` operation
  each; see :mod:`pipeline_state._announced`);
* one **message** per channel: the payload is the :class:`~pipeline_state._wire.EventEnvelope`
  with ``event_type`` fixed to the topic and ``data`` the topic's pydantic model, every
  model's JSON schema under ``components/schemas``;
* the **Kafka key** in the message's Kafka binding: a string, with the payload field that
  holds it as an ``x-key-location`` runtime expression;
* the **headers** of the records the service publishes (repeating envelope fields); of an
  inbound record only the optional W3C trace headers are read (the consumer continues that
  trace), and any other header is allowed;
* a **dead-letter channel** ``<topic>.DLQ`` for each consumed topic, where the Kafka adapter
  parks a record it can never handle, unchanged, with headers that say why.

What the Kafka adapter puts around a message (key binding, headers, dead letters) is
described in :mod:`pipeline_state._asyncapi_kafka`.

The document is plain JSON data, deterministic (channels, operations and schemas sorted), so
the documentation site keeps a copy that a test re-renders and compares. Topic names are the
contract's; a deployment's ``topic_prefix`` is put before each of them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import attrs
from pydantic.json_schema import models_json_schema

from ._announced import Announced, KeyKind, announced_events
from ._asyncapi_kafka import (
    DEAD_LETTER,
    DEAD_LETTER_SUFFIX,
    dead_letter_message,
    envelope_headers,
    inbound_headers,
    key_binding,
)
from ._profile import CommandSpec, Profile, check_profile
from ._wire import EventEnvelope, WireModel
from .errors import DefinitionError
from .profiles import default_profile

__all__ = ["ASYNCAPI_VERSION", "asyncapi_document", "asyncapi_json"]

ASYNCAPI_VERSION = "3.0.0"
"""The AsyncAPI specification version of the document."""

Action = Literal["receive", "send"]

_ROLE_WORDS: Mapping[str, str] = {"fact": "A fact", "command": "A phase command", "event": "An event"}
_SCHEMA_REF = "#/components/schemas/{model}"


def _token(key: str) -> str:
    """``key`` as one JSON Pointer token of a ``$ref`` (RFC 6901: ``~`` is written ``~0``
    and ``/`` ``~1``), so a topic holding either still names its own channel."""
    return key.replace("~", "~0").replace("/", "~1")


@attrs.frozen
class _Wire:
    """One topic of the profile's wire, as the document shows it."""

    topic: str
    model: type[WireModel]
    action: Action
    role: Literal["fact", "command", "event"]
    what: str
    key: KeyKind
    key_field: str | None


def _command(phase: str, spec: CommandSpec) -> _Wire:
    field = "batch_id" if "batch_id" in spec.model.model_fields else None
    return _Wire(spec.topic, spec.model, "send", "command", f"starts phase `{phase}`", "batch", field)


def _event(found: Announced) -> _Wire:
    what = "emitted for " + ", ".join(f"`{name}`" for name in found.announces)
    return _Wire(found.topic, found.model, "send", "event", what, found.key, found.key_field)


def _wire_topics(profile: Profile) -> list[_Wire]:
    """Every topic of ``profile``'s wire, sorted by action and topic. The one place that
    reads the topic registries: the profile's inbound topics, its commands and its outbound."""
    inbound = [
        _Wire(spec.topic, spec.model, "receive", "fact", "consumed by the engine", "batch", spec.key_field)
        for spec in profile.inbound.specs.values()
    ]
    commands = [_command(phase, spec) for phase, spec in profile.phase_commands.items()]
    if profile.group_matching is not None:
        commands.append(_command("group_matching", profile.group_matching))
    events = [_event(found) for found in announced_events(profile.name, profile.outbound)]
    wires = sorted([*inbound, *commands, *events], key=lambda w: (w.action, w.topic))
    seen: dict[str, _Wire] = {}
    for wire in wires:
        other = seen.setdefault(wire.topic, wire)
        if other is not wire:
            raise DefinitionError(
                profile.name,
                f"topic {wire.topic!r} carries two kinds of message: {other.role} "
                f"{other.model.__name__} and {wire.role} {wire.model.__name__}; "
                "one topic carries one kind of message",
            )
    return wires


def _schemas(wires: Sequence[_Wire]) -> tuple[dict[str, Any], dict[type[WireModel], str]]:
    """Every model's JSON schema by component name, and each model's ``$ref``."""
    models: list[type[WireModel]] = [EventEnvelope, *dict.fromkeys(wire.model for wire in wires)]
    refs, top = models_json_schema([(model, "validation") for model in models], ref_template=_SCHEMA_REF)
    defs: dict[str, Any] = top.get("$defs", {})
    by_model = {model: str(refs[(model, "validation")]["$ref"]) for model in models}
    return {name: defs[name] for name in sorted(defs)}, by_model


def _message(wire: _Wire, refs: Mapping[type[WireModel], str]) -> dict[str, Any]:
    name = wire.model.__name__
    payload = {
        "allOf": [
            {"$ref": refs[EventEnvelope]},
            {
                "type": "object",
                "properties": {"event_type": {"const": wire.topic}, "data": {"$ref": refs[wire.model]}},
            },
        ]
    }
    message: dict[str, Any] = {
        "name": name,
        "title": f"{name} on {wire.topic}",
        "summary": f"{_ROLE_WORDS[wire.role]} ({wire.what}): an EventEnvelope with a {name} as `data`.",
        "contentType": "application/json",
        "payload": payload,
        "correlationId": {
            "description": "The correlation id of the request this message belongs to.",
            "location": "$message.payload#/correlation_id",
        },
        "bindings": {"kafka": key_binding(wire.key, wire.key_field)},
    }
    if wire.model.__doc__:
        message["description"] = " ".join(wire.model.__doc__.split())
    message["headers"] = envelope_headers(wire.topic) if wire.action == "send" else inbound_headers()
    return message


def _info(profile: Profile) -> dict[str, Any]:
    from . import __version__

    return {
        "title": f"pipeline-state: the {profile.name} profile",
        "version": __version__,
        "description": (
            f"The Kafka wire of a pipeline-state service running the `{profile.name}` profile "
            f"(source service `{profile.source_service}`): the facts the engine receives, the "
            "phase commands it sends and the events it announces. Every record value is a JSON "
            "EventEnvelope whose `data` is the channel's payload; unknown extra fields are "
            "ignored on input. A deployment's topic prefix is put before every address. "
            "Generated from the code by `pipeline_state._asyncapi.asyncapi_document`."
        ),
    }


def asyncapi_document(profile: Profile | None = None) -> dict[str, Any]:
    """The AsyncAPI 3.0.0 document of ``profile``'s wire (the default profile by default).

    Pure and deterministic (see the module). Raises
    :class:`~pipeline_state.errors.DefinitionError` when ``profile`` is not a profile, or
    when one topic would carry two kinds of message.
    """
    profile = default_profile() if profile is None else check_profile(profile)
    wires = _wire_topics(profile)
    schemas, refs = _schemas(wires)
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for wire in wires:
        name = wire.model.__name__
        messages[wire.topic] = _message(wire, refs)
        channels[wire.topic] = {
            "address": wire.topic,
            "description": f"{wire.role.capitalize()}: {name}, {wire.what}.",
            "messages": {name: {"$ref": f"#/components/messages/{_token(wire.topic)}"}},
        }
        operations[f"{wire.action}.{wire.topic}"] = {
            "action": wire.action,
            "channel": {"$ref": f"#/channels/{_token(wire.topic)}"},
            "messages": [{"$ref": f"#/channels/{_token(wire.topic)}/messages/{name}"}],
            "summary": f"{'Receive' if wire.action == 'receive' else 'Send'} {name} ({wire.what}).",
            "tags": [{"name": wire.role}],
        }
    for wire in wires:
        if wire.action != "receive":
            continue
        letters = f"{wire.topic}{DEAD_LETTER_SUFFIX}"
        if letters in channels:
            raise DefinitionError(
                profile.name, f"topic {letters!r} is the dead-letter topic of {wire.topic!r}"
            )
        messages[DEAD_LETTER] = dead_letter_message()
        channels[letters] = {
            "address": letters,
            "description": f"Dead letters of {wire.topic}: the records of it the consumer parked.",
            "messages": {DEAD_LETTER: {"$ref": f"#/components/messages/{DEAD_LETTER}"}},
        }
        operations[f"send.{letters}"] = {
            "action": "send",
            "channel": {"$ref": f"#/channels/{_token(letters)}"},
            "messages": [{"$ref": f"#/channels/{_token(letters)}/messages/{DEAD_LETTER}"}],
            "summary": f"Park a record of {wire.topic} that can never be handled.",
            "tags": [{"name": "dead-letter"}],
        }
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": _info(profile),
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": operations,
        "components": {"schemas": schemas, "messages": messages},
    }


def asyncapi_json(profile: Profile | None = None) -> str:
    """:func:`asyncapi_document` as indented JSON text with a final newline (stable bytes)."""
    return json.dumps(asyncapi_document(profile), indent=2, ensure_ascii=False, sort_keys=False) + "\n"
