"""What the engine consumes, and how a profile reads it.

A profile's :class:`Inbound` lists the topics its service consumes. Each
:class:`InboundTopic` names the payload model of its messages, the field that keys them (the
batch id) and how a validated payload becomes an engine input
(:mod:`pipeline_state._inputs`). The service parses a message with the topic's model, then
hands :func:`~pipeline_state._decide.decide` the input; nothing past this seam reads a wire
model. ``encode`` goes the other way, from an input to the fields of a payload: test kits
and demos use it to write messages of any profile's wire.
"""

from __future__ import annotations

import typing
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Any

import attrs
from pydantic import BaseModel, ValidationError

from ._inputs import EngineInput, RequestPipeline
from ._intake import DEFAULT_LIMITS, IntakeLimits
from ._wire import MAX_ID_LENGTH, EventEnvelope, TopicSpec, WireModel, is_id_text, parse_message
from .errors import DefinitionError, InvalidMessageError

__all__ = ["Inbound", "InboundTopic"]

_ENGINE_INPUTS: tuple[type, ...] = typing.get_args(EngineInput)


def _shown(value: object) -> str:
    """``type value`` for a message, the value cut short."""
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 60 else text[:57] + '...'}"


def _field_keys(model: type[BaseModel]) -> frozenset[str]:
    """The names and string aliases of ``model``'s fields."""
    keys = set(model.model_fields)
    for field in model.model_fields.values():
        keys.update(a for a in (field.alias, field.validation_alias) if isinstance(a, str))
    return frozenset(keys)


@attrs.frozen
class InboundTopic:
    """One consumed topic: payload ``model``, the ``key_field`` its messages are keyed by,
    ``decode`` (validated payload -> engine input), and ``encode`` (engine input -> the
    payload's field values, for test kits and demos) with the ``kind`` of input it takes.

    Building it checks each part and raises :class:`~pipeline_state.errors.DefinitionError`
    naming the topic when the topic is not a non-empty string that an envelope can carry as
    its event type (1 to 200 characters, no control ones), ``model`` is not a pydantic
    model class, ``kind`` is not one of the engine's inputs (:mod:`pipeline_state._inputs`),
    ``decode`` or ``encode`` is not callable, or ``key_field`` is not a field of ``model``.
    """

    topic: str
    model: type[WireModel]
    kind: type[EngineInput]
    decode: Callable[[Any], EngineInput]
    encode: Callable[[Any], Mapping[str, Any]]
    key_field: str = "batch_id"

    def __attrs_post_init__(self) -> None:
        topic: object = self.topic
        if not isinstance(topic, str) or not topic.strip():
            raise DefinitionError(
                "inbound", f"an inbound topic must be a non-empty string, got {_shown(topic)}"
            )
        if not is_id_text(topic):
            # Its messages name it as their event type, which an envelope bounds.
            raise DefinitionError(
                "inbound",
                f"an inbound topic must be 1 to {MAX_ID_LENGTH} characters without control "
                f"characters (its messages name it as their event type), got {topic!r:.80}",
            )

        def fail(problem: str) -> DefinitionError:
            return DefinitionError("inbound", f"topic {topic!r}: {problem}")

        model: object = self.model
        if not isinstance(model, type) or not issubclass(model, BaseModel):
            raise fail(f"the model must be a pydantic model class, got {_shown(model)}")
        if self.kind not in _ENGINE_INPUTS:
            inputs = ", ".join(k.__name__ for k in _ENGINE_INPUTS)
            raise fail(f"the kind must be one of the engine's inputs ({inputs}), got {_shown(self.kind)}")
        for part, does in (
            ("decode", "payload -> engine input"),
            ("encode", "engine input -> payload fields"),
        ):
            if not callable(getattr(self, part)):
                raise fail(f"{part} must be callable ({does}), got {_shown(getattr(self, part))}")
        key: object = self.key_field
        if not isinstance(key, str) or key not in _field_keys(model):
            raise fail(
                f"key_field {key!r} is not a field of {model.__qualname__} "
                f"(its fields: {sorted(model.model_fields)}): messages are keyed by that field"
            )


class Inbound:
    """The topics a profile's service consumes, by topic, model and input kind.

    Building it checks that it lists at least one topic and that no topic, payload model or
    input kind appears twice (the engine must know which model a topic carries and which
    topic writes an input), and raises :class:`~pipeline_state.errors.DefinitionError`
    otherwise; each :class:`InboundTopic` checked its own parts when it was built.
    """

    __slots__ = ("_by_kind", "_by_model", "specs", "topics")

    def __init__(self, topics: Iterable[InboundTopic]) -> None:
        by_topic: dict[str, InboundTopic] = {}
        by_model: dict[type, InboundTopic] = {}
        by_kind: dict[type, InboundTopic] = {}
        for entry in topics:
            if not isinstance(entry, InboundTopic):
                raise DefinitionError(
                    "inbound", f"an inbound topic must be an InboundTopic, not {type(entry).__name__}"
                )
            for index, key, what in (
                (by_topic, entry.topic, "topic"),
                (by_model, entry.model, "payload model"),
                (by_kind, entry.kind, "input kind"),
            ):
                if key in index:
                    name = key if isinstance(key, str) else key.__name__
                    raise DefinitionError("inbound", f"the {what} {name} is listed twice")
                index[key] = entry  # type: ignore[index]
        if not by_topic:
            raise DefinitionError(
                "inbound", "it lists no topic: a service that consumes nothing never registers a batch"
            )
        self.topics: Mapping[str, InboundTopic] = MappingProxyType(by_topic)
        self.specs: Mapping[str, TopicSpec] = MappingProxyType(
            {t: TopicSpec(t, e.model, "in", e.key_field) for t, e in by_topic.items()}
        )
        self._by_model = by_model
        self._by_kind = by_kind

    @property
    def names(self) -> tuple[str, ...]:
        """The consumed topics, in declaration order."""
        return tuple(self.topics)

    def __contains__(self, topic: object) -> bool:
        return topic in self.topics

    def parse(
        self,
        topic: str,
        raw: bytes | bytearray | str | Mapping[str, Any],
        *,
        limits: IntakeLimits = DEFAULT_LIMITS,
    ) -> tuple[EventEnvelope, EngineInput]:
        """Decode and validate a message received on ``topic`` (see
        :func:`~pipeline_state._wire.parse_message`) and return its envelope and input."""
        envelope, payload = parse_message(topic, raw, topics=self.specs, limits=limits)
        return envelope, self.topics[topic].decode(payload)

    def decode(self, payload: object) -> EngineInput:
        """The engine input of a validated payload of one of the consumed models (a subclass
        of one is read as its base); :class:`TypeError` for any other object."""
        entry = self._by_model.get(type(payload))
        if entry is None:
            entry = next((self._by_model[b] for b in type(payload).__mro__[1:] if b in self._by_model), None)
            if entry is None:
                raise TypeError(f"no inbound topic carries {type(payload).__name__}")
        return entry.decode(payload)

    def encode(self, value: EngineInput) -> tuple[str, dict[str, Any]]:
        """The topic and the payload fields that carry ``value``, validated by the topic's
        model (so a value the wire cannot carry raises
        :class:`~pipeline_state.errors.InvalidMessageError`)."""
        entry = self._by_kind.get(type(value))
        if entry is None:
            raise TypeError(f"no inbound topic carries {type(value).__name__}")
        data = dict(entry.encode(value))
        try:
            entry.model.model_validate(data)
        except ValidationError as exc:
            error = exc.errors(include_url=False)[0]
            field = ".".join(str(part) for part in error.get("loc", ())) or None
            raise InvalidMessageError(
                entry.topic, f"cannot carry this input: {error['msg']}", field=field
            ) from None
        return entry.topic, data

    def topic_of(self, kind: type[EngineInput]) -> str | None:
        """The topic whose messages carry inputs of ``kind``, if any."""
        entry = self._by_kind.get(kind)
        return None if entry is None else entry.topic

    def is_request(self, topic: str) -> bool:
        """Whether ``topic`` carries pipeline requests."""
        entry = self.topics.get(topic)
        return entry is not None and entry.kind is RequestPipeline
