"""Driver errors translated into the library's error tree, at the adapter boundary.

* connection refused, connection lost, timeouts, ``database is locked`` and other
  operational errors → :class:`~pipeline_state.errors.StoreUnavailableError` (transient);
* PostgreSQL serialization failures and deadlocks → :class:`ConcurrencyConflictError`
  (the service retries from a fresh read);
* data the database refuses as invalid (SQLSTATE class ``22``, data exception: a NUL byte,
  a value too long for its column, an untranslatable character; ``23502``/``23514``, a
  NOT NULL or CHECK violation; any ``DataError``) →
  :class:`~pipeline_state.errors.RejectedDataError`: bad input, never an outage;
* anything else from the driver → :class:`~pipeline_state.errors.StoreError`; the store
  answers the outbox's unique event id refusing a row (:func:`outbox_event_taken`) that
  the same inbound event wrote before as a
  :class:`~pipeline_state.errors.DuplicateEventError` of that event.

The original exception is kept as ``__cause__`` (``raise ... from exc``).

The adapter's own error joins the library's tree::

    PipelineStateError
    └── SqlSettingsError (also a ValueError)   a setting of the SQL adapter is unusable
"""

from __future__ import annotations

from sqlalchemy import exc as sa_exc

from pipeline_state.errors import (
    ConcurrencyConflictError,
    PipelineStateError,
    RejectedDataError,
    StoreError,
    StoreUnavailableError,
)

__all__ = ["DRIVER_ERRORS", "SqlSettingsError", "outbox_event_taken", "run_position_taken", "translate"]


class SqlSettingsError(PipelineStateError, ValueError):
    """A setting of the SQL adapter (a ``PIPELINE_STATE_*`` variable or an argument of
    :class:`~pipeline_state_sql.settings.Settings`) has an unusable value; the message names
    the variable."""


DRIVER_ERRORS: tuple[type[BaseException], ...] = (sa_exc.SQLAlchemyError, OSError, TimeoutError)
"""What :func:`translate` handles; anything else propagates unchanged."""

_RETRYABLE_SQLSTATES = frozenset({"40001", "40P01"})  # serialization failure, deadlock detected
_REJECTED_SQLSTATES = frozenset({"23502", "23514"})  # not-null violation, check violation

# SQLite reports everything from "no such table" to "database is locked" as an
# OperationalError; only these mean the database itself is (for now) out of reach.
_SQLITE_UNAVAILABLE = (
    "database is locked",
    "database table is locked",
    "unable to open database file",
    "disk i/o error",
    "database or disk is full",
)


def _sqlstate(error: BaseException) -> str | None:
    orig = getattr(error, "orig", None)
    for candidate in (orig, getattr(orig, "__cause__", None)):
        state = getattr(candidate, "sqlstate", None) or getattr(candidate, "pgcode", None)
        if isinstance(state, str):
            return state
    return None


def translate(error: BaseException, *, batch_id: str | None = None) -> StoreError | RejectedDataError:
    """The library error for a driver error (to raise ``from error``)."""
    if isinstance(error, StoreError | RejectedDataError):
        return error
    where = f" (batch {batch_id!r})" if batch_id else ""
    state = _sqlstate(error)
    if state in _RETRYABLE_SQLSTATES and batch_id is not None:
        return ConcurrencyConflictError(batch_id, None)
    if _rejected(error, state):
        return RejectedDataError(_reason(error), batch_id=batch_id)
    if isinstance(error, OSError | TimeoutError):
        reason = str(error) or type(error).__name__  # a bare TimeoutError says nothing
        return StoreUnavailableError(f"the database cannot be reached{where}: {reason}")
    if isinstance(error, sa_exc.DBAPIError) and _unavailable(error):
        return StoreUnavailableError(f"the database is unavailable{where}: {_first_line(error)}")
    if isinstance(error, sa_exc.TimeoutError | sa_exc.DisconnectionError):
        return StoreUnavailableError(f"the database is unavailable{where}: {_first_line(error)}")
    return StoreError(f"the database rejected an operation{where}: {_first_line(error)}")


def outbox_event_taken(error: BaseException) -> bool:
    """Whether ``error`` is the outbox's unique event id refusing a row: the message was
    written before, by an earlier handling of the same inbound event (whose inbox entry a
    purge may have forgotten since; emitted event ids derive from the inbound one)."""
    return _constraint_refused(error, "uq_outbox_event_id", "outbox.event_id")


def _constraint_refused(error: BaseException, name: str, sqlite_columns: str) -> bool:
    """Whether ``error`` is the unique constraint ``name`` refusing a row (PostgreSQL names
    the constraint; SQLite lists its columns, ``sqlite_columns``)."""
    if not isinstance(error, sa_exc.IntegrityError):
        return False
    orig = error.orig
    for candidate in (orig, getattr(orig, "__cause__", None)):
        if getattr(candidate, "constraint_name", None) == name:
            return True
    return sqlite_columns in str(orig) or name in str(orig)


def run_position_taken(error: BaseException) -> bool:
    """Whether ``error`` is the ``runs`` table's primary key refusing an archived run: its
    position (``seq``, from the batch row's count of archived runs) is taken, so the row
    counts fewer runs than the table holds."""
    return _constraint_refused(error, "pk_runs", "runs.batch_id, runs.seq")


def _rejected(error: BaseException, state: str | None) -> bool:
    if state is not None and (state.startswith("22") or state in _REJECTED_SQLSTATES):
        return True
    return isinstance(error, sa_exc.DataError)


def _reason(error: BaseException) -> str:
    """The driver's own message (without SQLAlchemy's wrapping and the statement)."""
    orig = getattr(error, "orig", None)
    text = str(orig if orig is not None else error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _unavailable(error: sa_exc.DBAPIError) -> bool:
    if error.connection_invalidated:
        return True
    if not isinstance(error, sa_exc.OperationalError | sa_exc.InterfaceError):
        return False
    module = type(error.orig).__module__ if error.orig is not None else ""
    if "sqlite" in module:
        message = str(error.orig).lower()
        return any(text in message for text in _SQLITE_UNAVAILABLE)
    return True


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
