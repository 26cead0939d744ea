"""The inbox result of a refused command: ``rejected:<error>``, then what was refused.

A command the batch's state refuses can be recorded under its event id (see
``PipelineService.handle(record_refusal=True)``) so that a repeat of the id is answered as
the first attempt was, never decided again on a state the first did not see. The result
names the error's class and, after a ``?``, the attributes that say what was refused (an
illegal transition's lifecycle, state and trigger; an unknown pipeline's name and kind), URL
encoded: ``rejected:IllegalTransitionError?lifecycle=run&state=completed&trigger=cancel``.
The result column holds :data:`RESULT_LIMIT` characters: attributes that would not fit are
left out whole, never cut.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode

import attrs

from .errors import IllegalTransitionError, PipelineStateError, RejectedDataError, UnknownPipelineError

__all__ = ["REJECTED", "RESULT_LIMIT", "RecordedRefusal", "read_refusal", "refusal_result"]

REJECTED = "rejected:"
"""The prefix of a recorded refusal's inbox result."""

RESULT_LIMIT = 200
"""The characters an inbox result keeps (the SQL stores' column)."""

_FIELDS: tuple[tuple[type[PipelineStateError], tuple[str, ...]], ...] = (
    (IllegalTransitionError, ("lifecycle", "state", "trigger")),
    (UnknownPipelineError, ("name", "kind")),
    (RejectedDataError, ("reason",)),
)
"""The attributes recorded for an error of each class (the first class that matches)."""


@attrs.frozen
class RecordedRefusal:
    """A refusal read back from an inbox result: the error's class name and what it said."""

    error: str
    context: dict[str, str] = attrs.field(factory=dict)


def refusal_result(error: PipelineStateError) -> str:
    """The inbox result that records ``error``: ``rejected:<class>`` and, as far as they fit
    in :data:`RESULT_LIMIT`, the attributes that say what was refused."""
    head = f"{REJECTED}{type(error).__name__}"[:RESULT_LIMIT]
    fields = next((names for cls, names in _FIELDS if isinstance(error, cls)), ())
    pairs: list[tuple[str, str]] = []
    for name in fields:
        value = getattr(error, name, None)
        if not isinstance(value, str):
            continue
        candidate = [*pairs, (name, value)]
        if len(head) + 1 + len(urlencode(candidate)) <= RESULT_LIMIT:
            pairs = candidate
    return f"{head}?{urlencode(pairs)}" if pairs else head


def read_refusal(result: str) -> RecordedRefusal | None:
    """The refusal an inbox ``result`` records, or ``None`` when it records none."""
    if not result.startswith(REJECTED):
        return None
    name, _, query = result.removeprefix(REJECTED).partition("?")
    return RecordedRefusal(name, dict(parse_qsl(query, keep_blank_values=True)))
