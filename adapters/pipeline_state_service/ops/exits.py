"""Exit codes of the operator commands and the one-line error that goes with each.

====  ==========================================================================
code  meaning
====  ==========================================================================
0     done (or already done: a repeated command is a duplicate)
1     denied or refused by the engine (the batch's state does not allow it)
2     usage or bad input (unknown option, malformed id, unknown topic or phase)
3     not found (no such batch, run or outbox row)
4     the store, the broker or the service's HTTP API cannot be reached
====  ==========================================================================
"""

from __future__ import annotations

import enum

from pipeline_state.errors import (
    BadCommandError,
    BatchNotFoundError,
    ConcurrencyConflictError,
    DuplicateEventError,
    IllegalTransitionError,
    InvalidMessageError,
    PipelineStateError,
    PublishError,
    RejectedDataError,
    StoreError,
    StoreUnavailableError,
    UnknownPipelineError,
)
from pipeline_state_service.errors import OperatorError

__all__ = [
    "MAX_LIMIT",
    "MEANINGS",
    "ExitCode",
    "OperatorError",
    "exit_code_of",
    "expected",
    "in_range",
    "one_line",
]

MAX_LIMIT = 10_000
"""The largest ``--limit``/``--log-limit`` an operator command takes."""


class ExitCode(enum.IntEnum):
    """What an operator command's exit status means (see the module docstring)."""

    OK = 0
    REFUSED = 1
    USAGE = 2
    NOT_FOUND = 3
    UNREACHABLE = 4


MEANINGS: dict[ExitCode, str] = {
    ExitCode.OK: "done, or already done (a repeated command is a duplicate)",
    ExitCode.REFUSED: "denied or refused by the engine: the batch's state does not allow it",
    ExitCode.USAGE: "usage or bad input: unknown option, malformed id, unknown topic or phase",
    ExitCode.NOT_FOUND: "not found: no such batch, run or outbox row",
    ExitCode.UNREACHABLE: "the store, the broker or the service's HTTP API cannot be reached",
}
"""What each exit code means (the command-line reference prints this table)."""


_LOST_RACES = (ConcurrencyConflictError, DuplicateEventError)
"""The store errors that report a race another writer won (refused, exit 1)."""


def exit_code_of(error: BaseException) -> ExitCode:
    """The exit code of ``error``: operator errors carry theirs; the library's errors map by
    kind (not found, unreachable, bad input, refused); a store error other than a lost race
    (the database failed or refused the operation: the engine never decided) is the store's
    failure, not a refusal; anything else is an outage of the store or broker only when it
    is a connection error (``OSError``, ``TimeoutError``)."""
    if isinstance(error, OperatorError):
        return error.code
    if isinstance(error, BatchNotFoundError):
        return ExitCode.NOT_FOUND
    if isinstance(error, StoreUnavailableError | PublishError | OSError | TimeoutError):
        return ExitCode.UNREACHABLE
    if isinstance(error, StoreError) and not isinstance(error, _LOST_RACES):
        return ExitCode.UNREACHABLE
    if isinstance(error, InvalidMessageError | RejectedDataError):  # the operator's data
        return ExitCode.USAGE
    # An unknown phase or pipeline is bad input, whichever way it comes back: raised by the
    # engine, or as the HTTP API's denial ``unknown_pipeline``.
    if isinstance(error, UnknownPipelineError) or getattr(error, "reason", None) == "unknown_pipeline":
        return ExitCode.USAGE
    status = getattr(error, "status_code", None)  # an HTTP API's answer
    if status in (401, 403):
        return ExitCode.USAGE
    if status == 404:
        return ExitCode.NOT_FOUND
    if isinstance(error, IllegalTransitionError | BadCommandError | PipelineStateError):
        return ExitCode.REFUSED
    return ExitCode.UNREACHABLE if _is_transport_error(error) else ExitCode.REFUSED


def expected(error: BaseException) -> bool:
    """Whether ``error`` is a failure an operator command reports on one line (anything
    else is a bug and keeps its traceback)."""
    return isinstance(
        error, OperatorError | PipelineStateError | OSError | TimeoutError
    ) or _is_transport_error(error)


def _is_transport_error(error: BaseException) -> bool:
    """Whether ``error`` is the Kafka client's or the HTTP client's (the broker or the
    service is down or refused the connection)."""
    return type(error).__module__.startswith(("aiokafka", "httpx"))


def one_line(error: BaseException) -> str:
    """``error``'s message on one line (newlines folded), never empty."""
    text = " ".join(str(error).split())
    return text or type(error).__name__


def in_range(option: str, value: float, low: float, high: float) -> None:
    """Raise the usage error of ``option`` unless ``value`` is a number from ``low`` to
    ``high`` (NaN and infinities are not): checked before anything reaches the store, whose
    driver would refuse it as a value of its own (and report it as a refusal, exit 1)."""
    if not low <= value <= high:  # false for NaN; an int of any size compares without overflow
        shown = repr(value) if len(repr(value)) <= 40 else f"{repr(value)[:37]}..."
        raise OperatorError(ExitCode.USAGE, f"{option} must be from {low:g} to {high:g}, got {shown}")
