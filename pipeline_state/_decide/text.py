"""Free text an operator or a client gives a command (a cancel's or a retry's reason): the
wire's rule for free text, checked where the command is decided, whatever route it came by."""

from __future__ import annotations

from pipeline_state._wire import MAX_FREE_TEXT_LENGTH
from pipeline_state.errors import BadCommandError

__all__ = ["check_free_text"]


def check_free_text(value: str | None, what: str, batch_id: str) -> None:
    """Raise :class:`~pipeline_state.errors.BadCommandError` unless ``value`` is ``None`` or
    at most :data:`~pipeline_state._wire.MAX_FREE_TEXT_LENGTH` characters without a NUL
    (which PostgreSQL refuses) or a lone surrogate (which no store can encode)."""
    if value is None:
        return
    problem = None
    if len(value) > MAX_FREE_TEXT_LENGTH:
        problem = f"is {len(value)} characters long, more than {MAX_FREE_TEXT_LENGTH}"
    elif "\x00" in value:
        problem = "holds a NUL character"
    else:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            problem = "holds a lone surrogate"
    if problem is not None:
        raise BadCommandError(f"the {what} {problem}", batch_id=batch_id)
