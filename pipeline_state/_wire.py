"""The generic wire: the envelope every message travels in, the payload base model, the
bounds of inbound input and the parsing of one message against a registry of topics.

A profile declares its own payload models (subclasses of :class:`WireModel`) and topics
(:class:`TopicSpec`); :func:`parse_message` turns raw bytes, text or a mapping into a
validated envelope and payload, raising :class:`~pipeline_state.errors.InvalidMessageError`
that names the topic and the field.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from uuid import UUID

import attrs
from pydantic import BaseModel, ConfigDict, StringConstraints, TypeAdapter, ValidationError, field_validator

from ._intake import DEFAULT_LIMITS, IntakeLimits, decode_json
from .errors import InvalidMessageError, UnknownTopicError

__all__ = [
    "DEAD_LETTER_SUFFIX",
    "ID_ADAPTER",
    "MAX_FREE_TEXT_LENGTH",
    "MAX_ID_LENGTH",
    "MAX_ITEMS_PER_BATCH",
    "MAX_ITEM_ID_LENGTH",
    "MAX_SHORT_TEXT_LENGTH",
    "EventEnvelope",
    "FreeText",
    "Id",
    "ItemId",
    "ShortText",
    "TopicSpec",
    "WireModel",
    "first_error",
    "is_id_text",
    "parse_message",
    "parse_payload",
]


class WireModel(BaseModel):
    """Base of every payload: immutable, ignores unknown fields."""

    model_config = ConfigDict(extra="ignore", frozen=True, str_strip_whitespace=False)


# --- bounds of inbound input -------------------------------------------------------------
# Every inbound id, text and list is bounded, so one message cannot make the service build
# unbounded state, and every phase command built from bounded input fits the producer's
# size limit (see ``pipeline_state._profile.command_size_bound``). Ids reject C0 control
# characters (NUL included) and lone surrogates: no store can keep them alike (PostgreSQL
# refuses NUL, UTF-8 cannot encode a lone surrogate), and without control characters one
# character of an id takes at most 4 bytes of UTF-8 JSON.

MAX_ITEMS_PER_BATCH = 1_000
"""Upper bound on a batch's items (and on every inbound list of items): an input naming more
is invalid. With item ids of at most :data:`MAX_ITEM_ID_LENGTH` characters, a phase command
of this many items is at most about 850 kB, under the producer's default 1 MiB request limit
(10,000 cannot fit: 10,000 UUID pairs alone are 1.09 MB)."""

DEAD_LETTER_SUFFIX = ".DLQ"
"""A consumed topic's dead-letter topic is the topic with this suffix (``<topic>.DLQ``)."""

MAX_ID_LENGTH = 200
"""Upper bound (characters) on every id: batch, owner, organisation, group, phase and
pipeline names. UUIDs take 36; platform ids (e-mail addresses included) fit. It equals the
width of the SQL store's id columns, so an id the wire accepts is one every store keeps."""

MAX_ITEM_ID_LENGTH = 100
"""Upper bound (characters) on the ids repeated once per item in phase commands: item ids
and content references (UUIDs take 36, storage keys such as ``items/<uuid>.txt`` about 50)."""

MAX_SHORT_TEXT_LENGTH = 64
"""Upper bound (characters) on short codes a batch is registered with (a language, say)."""

MAX_FREE_TEXT_LENGTH = 10_000
"""Upper bound (characters) on free text such as a retry's reason."""

_UNSHOWABLE = r"\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069"
"""C0 and C1 controls and DEL (a C1 CSI starts a terminal escape as ESC [ does), the line and
paragraph separators, the bidirectional marks, embeddings, overrides and isolates."""
_NO_CONTROL = rf"^[^{_UNSHOWABLE}]*$"
_NO_NUL = r"^[^\x00]*$"

Id = Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID_LENGTH, pattern=_NO_CONTROL)]
"""A non-empty id of at most :data:`MAX_ID_LENGTH` characters, without control characters
(C0, DEL and C1, NUL included), line or paragraph separators, bidirectional marks,
embeddings, overrides or isolates (U+061C, U+200E, U+200F, U+202A-U+202E, U+2066-U+2069:
they turn the text after an id around wherever it is shown) or lone surrogates
(pydantic refuses a string it cannot encode as UTF-8 whenever a constraint applies)."""

ID_ADAPTER: TypeAdapter[str] = TypeAdapter(Id)
"""Validates one value with the :data:`Id` rule (for an id outside a wire model)."""


_CONTROL = re.compile(f"[{_UNSHOWABLE}]")


def aware_utc(value: datetime, name: str) -> datetime:
    """``value`` in UTC (a naive one read as UTC); ``ValueError`` naming ``name`` when it has
    no UTC instant (9999-12-31T23:59-23:59 is past the last one ``datetime`` holds)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError(f"{name} is out of the representable range in UTC") from None


def is_id_text(value: str) -> bool:
    """Whether ``value`` can travel as an :data:`Id` and be kept by every store: 1 to
    :data:`MAX_ID_LENGTH` characters, no control or bidi character, no lone surrogate (what a
    definition checks for the names it puts in envelopes: phases, pipelines, topics)."""
    if not 0 < len(value) <= MAX_ID_LENGTH or _CONTROL.search(value):
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


ItemId = Annotated[str, StringConstraints(min_length=1, max_length=MAX_ITEM_ID_LENGTH, pattern=_NO_CONTROL)]
"""An item id or content reference: as :data:`Id`, at most :data:`MAX_ITEM_ID_LENGTH`."""

ShortText = Annotated[str, StringConstraints(max_length=MAX_SHORT_TEXT_LENGTH, pattern=_NO_CONTROL)]
"""A short code without control characters or lone surrogates."""

FreeText = Annotated[str, StringConstraints(max_length=MAX_FREE_TEXT_LENGTH, pattern=_NO_NUL)]
"""Free text of at most :data:`MAX_FREE_TEXT_LENGTH` characters, without NUL or lone surrogates
(line breaks allowed)."""


# --- envelope and registry -------------------------------------------------------------


_LEAP_SECOND = re.compile(r"^(\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}):60(?:[.,]\d+)?((?:[Zz]|[+-]\d{2}:?\d{2})?)$")
"""An RFC 3339 date-time in a leap second (``...:60``, any fraction), its zone kept."""


class EventEnvelope(WireModel):
    """The JSON value of every message."""

    event_id: UUID
    event_type: Id
    event_timestamp: datetime
    source_service: Id
    schema_version: int = 1
    correlation_id: UUID
    data: dict[str, Any]
    metadata: dict[str, Any] | None = None

    @field_validator("event_timestamp", mode="before")
    @classmethod
    def _leap_second(cls, value: object) -> object:
        # RFC 3339 allows second 60 (a leap second, as a clock that shows it writes it);
        # ``datetime`` cannot hold it: read as the last microsecond of second 59.
        if isinstance(value, str) and ":60" in value:
            return _LEAP_SECOND.sub(r"\1:59.999999\2", value)
        return value

    @field_validator("event_timestamp")
    @classmethod
    def _aware_utc(cls, value: datetime) -> datetime:
        return aware_utc(value, "event_timestamp")


@attrs.frozen
class TopicSpec:
    """What travels on a topic: its payload model, direction and the field used as key."""

    topic: str
    model: type[WireModel]
    direction: Literal["in", "out"]
    key_field: str


def first_error(topic: str, exc: ValidationError, prefix: str) -> InvalidMessageError:
    """The first error of a failed validation, naming the field (``prefix`` + its path)."""
    err = exc.errors(include_url=False)[0]
    path = ".".join(str(part) for part in err.get("loc", ()))
    field = f"{prefix}{path}" if path else (prefix.rstrip(".") or None)
    return InvalidMessageError(topic, err.get("msg", "invalid value"), field=field)


def parse_payload(topic: str, data: Mapping[str, Any], *, model: type[WireModel]) -> WireModel:
    """Validate ``data`` against ``model``, the payload model of ``topic``."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise first_error(topic, exc, "data.") from exc


def parse_message(
    topic: str,
    raw: bytes | bytearray | str | Mapping[str, Any],
    *,
    topics: Mapping[str, TopicSpec],
    inbound_only: bool = True,
    limits: IntakeLimits = DEFAULT_LIMITS,
) -> tuple[EventEnvelope, WireModel]:
    """Decode and validate one message received on ``topic``.

    Raw input (bytes or text) is bounded before it is parsed: at most
    ``limits.max_message_bytes`` bytes and ``limits.max_json_depth`` levels of nesting
    (:data:`pipeline_state._intake.DEFAULT_LIMITS` unless given). Raises
    :class:`UnknownTopicError` for a topic that is not registered (or not inbound when
    ``inbound_only``), and :class:`InvalidMessageError` naming the field for anything else:
    no input makes it raise another error.
    """
    spec = topics.get(topic)
    if spec is None or (inbound_only and spec.direction != "in"):
        raise UnknownTopicError(topic)
    decoded = decode_json(topic, raw, limits) if isinstance(raw, bytes | bytearray | str) else raw
    if not isinstance(decoded, Mapping):
        raise InvalidMessageError(topic, "the envelope must be a JSON object")
    try:
        envelope = EventEnvelope.model_validate(decoded)
        if envelope.event_type != topic:
            raise InvalidMessageError(
                topic, f"event_type {envelope.event_type!r} does not match the topic", field="event_type"
            )
        return envelope, parse_payload(topic, envelope.data, model=spec.model)
    except ValidationError as exc:
        raise first_error(topic, exc, "") from exc
    except (RecursionError, MemoryError, UnicodeError, OverflowError) as exc:
        raise InvalidMessageError(topic, f"message cannot be validated: {type(exc).__name__}") from exc
