"""Bounded decoding of inbound JSON: size and nesting depth are checked before parsing.

A record is untrusted bytes. Python's ``json`` parser recurses once per nesting level, so a
record of ``[[[[...]]]]`` raises :class:`RecursionError` (or worse, exhausts memory) before
the contract's validation ever runs. :func:`decode_json` refuses such input first, with two
cheap checks:

* the encoded size is at most :attr:`IntakeLimits.max_message_bytes`;
* the nesting depth of ``[``/``{`` outside JSON strings is at most
  :attr:`IntakeLimits.max_json_depth`, measured by a linear scan done in C (string contents
  are cut out with ``bytes.replace``/``split`` and the remaining brackets summed with
  ``itertools.accumulate``), so the check costs far less than the parse it protects.

Any other failure of the parser (bad UTF-8, lone surrogates in the text, a
:class:`RecursionError` or :class:`MemoryError` that slipped through) becomes a
:class:`~pipeline_state.errors.InvalidMessageError` too, so a record can only ever be
valid or rejected with a reason.

Limits travel with the code that parses: :class:`~pipeline_state._service.PipelineService`
takes ``limits=`` and ``pipeline-state serve`` builds them from
``PIPELINE_STATE_MAX_MESSAGE_BYTES`` and ``PIPELINE_STATE_MAX_JSON_DEPTH``. The defaults
(``DEFAULT_MAX_MESSAGE_BYTES`` = 1 MiB, ``DEFAULT_MAX_JSON_DEPTH`` = 32) fit the contract:
the deepest path of the default profile's envelopes is an item id inside a list of items
(depth 3), and free-form objects such as ``metadata`` get the rest.
"""

from __future__ import annotations

import json
import math
import re
from itertools import accumulate
from typing import Any

import attrs

from .errors import InvalidMessageError

__all__ = [
    "DEFAULT_LIMITS",
    "DEFAULT_MAX_JSON_DEPTH",
    "DEFAULT_MAX_MESSAGE_BYTES",
    "IntakeLimits",
    "decode_json",
    "json_depth",
]

DEFAULT_MAX_MESSAGE_BYTES = 1024 * 1024
"""Largest inbound message value accepted, in bytes (1 MiB)."""

DEFAULT_MAX_JSON_DEPTH = 32
"""Deepest nesting of JSON arrays/objects accepted (the envelope itself is depth 1)."""


@attrs.frozen
class IntakeLimits:
    """Bounds checked on every inbound message before it is parsed."""

    max_message_bytes: int = attrs.field(default=DEFAULT_MAX_MESSAGE_BYTES, validator=attrs.validators.ge(2))
    max_json_depth: int = attrs.field(default=DEFAULT_MAX_JSON_DEPTH, validator=attrs.validators.ge(1))


DEFAULT_LIMITS = IntakeLimits()
"""The documented defaults."""


_DELTA = [0] * 256
_DELTA[ord("[")] = _DELTA[ord("{")] = 1
_DELTA[ord("]")] = _DELTA[ord("}")] = -1
_NOT_BRACKETS = bytes(b for b in range(256) if _DELTA[b] == 0)


def json_depth(raw: bytes) -> int:
    """The deepest nesting of arrays/objects in JSON text ``raw``, outside strings.

    Exact for valid JSON; for invalid JSON an approximation that never lets a deeply
    nested prefix through. Linear in ``len(raw)``, no recursion.
    """
    if not any(b in raw for b in (b"[", b"{")):
        return 0
    # Inside strings, escapes pair up from the left: drop "\\" pairs first, then "\"",
    # so every quote left delimits a string (valid JSON has no backslash outside strings).
    text = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    outside = b"".join(text.split(b'"')[::2])
    brackets = outside.translate(None, _NOT_BRACKETS)
    if not brackets:
        return 0
    return max(0, max(accumulate(map(_DELTA.__getitem__, brackets))))


def _as_bytes(raw: bytes | bytearray | str) -> bytes:
    if isinstance(raw, str):
        return raw.encode("utf-8", "surrogatepass")
    return bytes(raw)


def decode_json(topic: str, raw: bytes | bytearray | str, limits: IntakeLimits = DEFAULT_LIMITS) -> Any:
    """Parse ``raw`` as JSON within ``limits``; raises
    :class:`InvalidMessageError` naming ``topic`` and the reason for anything that is not
    bounded, well-formed JSON."""
    data = _as_bytes(raw)
    if len(data) > limits.max_message_bytes:
        raise InvalidMessageError(
            topic, f"message of {len(data)} bytes exceeds the limit of {limits.max_message_bytes} bytes"
        )
    openers = data.count(b"[") + data.count(b"{")
    depth = 0 if openers <= limits.max_json_depth else json_depth(data)
    if depth > limits.max_json_depth:
        raise InvalidMessageError(
            topic, f"JSON nested {depth} levels deep exceeds the limit of {limits.max_json_depth}"
        )
    try:
        value = json.loads(data, parse_constant=_no_constant, parse_float=_finite_float)
    except (UnicodeError, ValueError) as exc:  # JSONDecodeError is a ValueError
        raise InvalidMessageError(topic, f"not valid JSON: {_short(exc)}") from exc
    except RecursionError as exc:
        raise InvalidMessageError(topic, "JSON nested too deeply to parse") from exc
    except MemoryError as exc:
        raise InvalidMessageError(topic, "JSON too large to parse") from exc
    where = None if _SURROGATE_ESCAPE.search(data) is None else _lone_surrogate_at(value)
    if where is not None:
        raise InvalidMessageError(
            topic, "a string holds a lone surrogate (\\ud800-\\udfff): not text", field=where or None
        )
    return value


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
"""A ``\\uD800``-``\\uDFFF`` escape: the only way a lone surrogate gets into parsed JSON
(the raw bytes are strict UTF-8). A pair of them is an ordinary character, so a match means
"look at the strings", not "refuse"."""


def _lone_surrogate_at(value: Any) -> str | None:
    """The dotted path of the first string (key or value) in the parsed ``value`` that cannot
    be UTF-8 encoded (``""`` for the top level), or ``None`` when every one can."""
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return path
        elif isinstance(item, dict):  # pushed in reverse: the first field in the text comes out first
            for key, inner in reversed(item.items()):
                stack.append((f"{path}.{key}" if path else str(key), inner))
                stack.append((path, key))
        elif isinstance(item, list):
            stack.extend(
                reversed([(f"{path}.{i}" if path else str(i), inner) for i, inner in enumerate(item)])
            )
    return None


def _finite_float(token: str) -> float:
    """A JSON number with a fraction or an exponent, refused when it leaves the float range
    (``1e400`` would read as infinity, which JSON cannot carry back out)."""
    number = float(token)
    if not math.isfinite(number):
        raise ValueError(f"{token[:40]} is outside the range of a JSON number")
    return number


def _no_constant(token: str) -> Any:
    """``NaN``, ``Infinity`` and ``-Infinity``, which Python's parser takes and JSON
    (RFC 8259) does not: refused, so no such number reaches a state, a store or a message."""
    raise ValueError(f"{token} is not a JSON number")


def _short(error: BaseException, limit: int = 200) -> str:
    text = str(error)
    return text if len(text) <= limit else f"{text[:limit]}..."
