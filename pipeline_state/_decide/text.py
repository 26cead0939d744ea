"""Free text an operator or a client gives a command (a cancel's or a retry's reason): the
wire's rule for free text, checked where the command is decided, whatever route it came by."""

from __future__ import annotations

from pipeline_state._wire import MAX_FREE_TEXT_LENGTH
from pipeline_state.errors import BadCommandError

__all__ = ["check_free_text", "free_text_problem"]


def free_text_problem(value: str, limit: int = MAX_FREE_TEXT_LENGTH) -> str | None:
    """Why ``value`` cannot be kept as free text, or ``None``: more than ``limit``
    characters, a NUL (which PostgreSQL refuses) or a lone surrogate (which no store can
    encode). Line breaks are free text's own."""
    if len(value) > limit:
        return f"is {len(value)} characters long, more than {limit}"
    if "\x00" in value:
        return "holds a NUL character"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "holds a lone surrogate"
    return None


def check_free_text(value: str | None, what: str, batch_id: str) -> None:
    """Raise :class:`~pipeline_state.errors.BadCommandError` unless ``value`` is ``None`` or
    free text by :func:`free_text_problem` (at most
    :data:`~pipeline_state._wire.MAX_FREE_TEXT_LENGTH` characters)."""
    problem = None if value is None else free_text_problem(value)
    if problem is not None:
        raise BadCommandError(f"the {what} {problem}", batch_id=batch_id)
