"""What every store-backed operator command shares: the store it opens, the service it runs
commands through, who asks, and the event id that makes a repeated command a duplicate.

The SQL adapter is imported only here and only when a command runs, so ``pipeline-state
demo`` and ``diagram`` work without the ``sql`` extra.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import os
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from pipeline_state._commands import Command, OperatorCommand
from pipeline_state._decide import derive_id
from pipeline_state._decide.text import free_text_problem
from pipeline_state._intake import DEFAULT_LIMITS, IntakeLimits
from pipeline_state._profile import Profile
from pipeline_state._service import HandleResult, PipelineService
from pipeline_state._wire import MAX_ID_LENGTH, is_id_text
from pipeline_state.errors import DefinitionError, StoreError, StoreUnavailableError
from pipeline_state.profiles.huleedu.profile import huleedu_profile
from pipeline_state_service.stores import shown_url

from .exits import ExitCode, OperatorError, one_line

if TYPE_CHECKING:
    from pipeline_state_sql import SqlStore

__all__ = [
    "MAX_REASON_LENGTH",
    "OPERATOR_ENV",
    "SCHEMA_ENV",
    "STORE_ENV",
    "Deployment",
    "action_event_id",
    "add_actor_arguments",
    "add_store_arguments",
    "check_id_argument",
    "check_id_arguments",
    "deployment",
    "open_service",
    "operator_name",
    "reason_text",
    "run_command",
]

STORE_ENV = "PIPELINE_STATE_STORE"
"""The environment variable read when ``--store`` is not given."""

SCHEMA_ENV = "PIPELINE_STATE_STORE_SCHEMA"
"""The environment variable read when ``--schema`` is not given (serve reads it too)."""

OPERATOR_ENV = "PIPELINE_STATE_OPERATOR"
"""The environment variable read when ``--as`` is not given (before the login name)."""

_EVENT_NAMESPACE = "operator"


def add_store_arguments(parser: argparse.ArgumentParser) -> None:
    """``--store URL`` (default ``$PIPELINE_STATE_STORE``), ``--schema`` and ``--profile``."""
    parser.add_argument(
        "--store",
        metavar="URL",
        default=os.environ.get(STORE_ENV),
        help=f"SQLAlchemy URL of the store, as for serve (default ${STORE_ENV})",
    )
    parser.add_argument(
        "--schema",
        metavar="NAME",
        default=os.environ.get(SCHEMA_ENV),
        help=f"PostgreSQL schema of the store, as for serve (default ${SCHEMA_ENV})",
    )
    parser.add_argument(
        "--profile",
        metavar="SPEC",
        help="the profile serve runs (FILE.py:NAME or MODULE:NAME; default $PIPELINE_STATE_PROFILE, "
        "else HuleEdu's), with serve's settings from the environment",
    )


def add_actor_arguments(parser: argparse.ArgumentParser, *, event_id: bool = True) -> None:
    """``--as NAME`` (who asks) and, with ``event_id``, ``--event-id`` (the idempotency key)."""
    parser.add_argument(
        "--as",
        dest="actor",
        metavar="NAME",
        help=f"who asks, recorded on the transition log (default ${OPERATOR_ENV} or the login name)",
    )
    if not event_id:
        return
    parser.add_argument(
        "--event-id",
        metavar="ID",
        help=(
            "idempotency key of this action, scoped to the action and its arguments "
            "(default: derived from the action and its arguments)"
        ),
    )


def check_id_argument(option: str, value: str) -> str:
    """``value`` when it is an id by the wire's rule (:func:`~pipeline_state._wire.is_id_text`,
    which the HTTP API's ``user_id`` follows too) and not blank: 1 to 200 characters, no
    control character (NUL, line breaks, escape sequences), no bidirectional embedding,
    override or isolate and no lone surrogate. Otherwise a usage error: printed by ``batch
    show``, such a name could forge a line of the transition log or turn the text after it
    around."""
    if not value.strip() or not is_id_text(value):
        raise OperatorError(
            ExitCode.USAGE,
            f"{option} must be 1 to {MAX_ID_LENGTH} characters, without control characters "
            "(NUL, line breaks, escapes) or bidirectional controls",
        )
    return value


_ID_ARGUMENTS = (("batch_id", "BATCH"), ("run", "--run"), ("event_ids", "EVENT_ID"))
"""The id arguments of the operator commands (attribute, as the command line names it)."""


def check_id_arguments(args: argparse.Namespace) -> None:
    """Refuse a malformed id among the command's arguments as bad input (exit 2), before
    anything is looked up: an id the wire could not carry names nothing, and must not be
    answered "not found" (exit 3) or reach the store or an event id's derivation."""
    for attribute, option in _ID_ARGUMENTS:
        value = getattr(args, attribute, None)
        for each in value if isinstance(value, list) else () if value is None else (value,):
            check_id_argument(option, each)


def operator_name(given: str | None) -> str:
    """Who asks: ``given``, else ``$PIPELINE_STATE_OPERATOR``, else the login name (an id by
    the wire's rule, see :func:`check_id_argument`)."""
    name = given if given is not None else os.environ.get(OPERATOR_ENV) or None  # empty: unset
    if name is None:
        try:
            name = getpass.getuser()
        except (OSError, KeyError):  # no login name (a container without a passwd entry)
            name = "unknown"
    return check_id_argument("--as", name.strip())


MAX_REASON_LENGTH = 2000
"""The longest ``--reason`` of ``run cancel`` and ``phase retry``: the HTTP API's bound on the
same text (``CancelBody.reason`` and ``RetryPhaseBody.retry_reason`` in
:mod:`pipeline_state_http.schemas`; a test checks that both agree). It is not imported from
there, so the store route needs no HTTP extra. A retry's reason stays in the batch's history
for good."""


def reason_text(given: str | None) -> str | None:
    """``--reason`` when the HTTP API would take it too: free text of at most
    :data:`MAX_REASON_LENGTH` characters (no NUL, no lone surrogate; line breaks allowed);
    else a usage error."""
    if given is not None and (problem := free_text_problem(given, MAX_REASON_LENGTH)) is not None:
        raise OperatorError(ExitCode.USAGE, f"--reason {problem}")
    return given


def action_event_id(
    given: str | None, action: str, scope: Sequence[str], derived: Sequence[str] | None = None
) -> str:
    """The event id (idempotency key) of ``action``: the same action on the same arguments
    always gets the same id, so the inbox makes a repeat a duplicate.

    ``scope`` is what the command line names (the batch, a phase, a run, rows). With
    ``given`` (``--event-id KEY``, an id by the wire's rule) the id is derived from
    ``action``, ``scope`` and KEY: the same KEY given for another batch or another action is
    another action, never a duplicate of this one. Without it, the id is derived from
    ``action`` and ``derived`` (default: ``scope``), which adds to ``scope`` what the action
    depends on in the batch (the run it cancels, the last finished run, ...)."""
    if given is not None:
        key = check_id_argument("--event-id", given)
        return derive_id(_EVENT_NAMESPACE, action, *scope, "event-id", key)
    return derive_id(_EVENT_NAMESPACE, action, *(scope if derived is None else derived))


@attrs.frozen
class Deployment:
    """What ``serve`` reads from the environment that an operator command must share: the
    profile (its phase deadlines, re-sends and correlation rule) and the intake limits."""

    profile: Profile
    limits: IntakeLimits = DEFAULT_LIMITS


def deployment(args: argparse.Namespace) -> Deployment:
    """The profile (``--profile``, else ``$PIPELINE_STATE_PROFILE``, else HuleEdu's) and the
    intake limits as ``serve`` builds them from the same flag and environment (phase
    deadlines, re-sends, correlation rule, message bounds); without the Kafka adapter, which
    owns those settings, the profile as loaded and the default limits."""
    spec: str | None = getattr(args, "profile", None)
    try:
        from pipeline_state_service.settings import ServeSettings, SettingsError
    except ImportError:
        return Deployment(_loaded(spec) if spec else huleedu_profile())
    # serve's settings need a bootstrap address; an operator command never contacts it.
    kafka = os.environ.get("PIPELINE_STATE_KAFKA") or "localhost:9092"
    try:
        settings = ServeSettings.from_args(argparse.Namespace(kafka=kafka, profile=spec))
    except SettingsError as exc:
        raise OperatorError(ExitCode.USAGE, f"serve's settings: {exc}") from exc
    return Deployment(settings.profile(), settings.intake_limits())


def _loaded(spec: str) -> Profile:
    from pipeline_state.profiles import load_profile

    try:
        return load_profile(spec)
    except DefinitionError as exc:
        raise OperatorError(ExitCode.USAGE, f"--profile: {exc}") from exc


def _sqlite_file(url: str) -> Path | None:
    """The file of a SQLite URL (``None`` for other databases and in-memory SQLite)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as exc:  # ValueError: a port that is not a number
        raise OperatorError(ExitCode.USAGE, f"--store: not a database URL: {shown_url(url)}") from exc
    if not parsed.drivername.startswith("sqlite"):
        return None
    database = parsed.database or ""
    if database in ("", ":memory:") or database.startswith("file:"):
        return None
    return Path(database)


@contextlib.asynccontextmanager
async def open_service(
    args: argparse.Namespace, *, settings: Deployment | None = None
) -> AsyncIterator[PipelineService]:
    """A :class:`PipelineService` on the store ``args.store`` names, closed afterwards.

    A SQLite file must exist (an operator command never creates an empty store) and is
    migrated like ``serve`` does; other databases are used as they are, once they are found
    at this release's schema revision (see ``_open_store``).
    """
    url: str | None = args.store
    if not url:
        raise OperatorError(ExitCode.USAGE, f"--store is required (or set ${STORE_ENV})")
    settings = deployment(args) if settings is None else settings
    store = await _open_store(url, args.schema)
    try:
        yield PipelineService(store, profile=settings.profile, limits=settings.limits)
    finally:
        await store.close()


async def _open_store(url: str, schema: str | None) -> SqlStore:
    """The SQL store at ``url``: an existing SQLite file is migrated first (unless
    ``$PIPELINE_STATE_STORE_UPGRADE`` says migrations are a separate step, as for ``serve``),
    any other database checked to be at this release's schema revision, as ``serve`` checks a
    store it does not migrate: a schema never migrated, or migrated by a newer release, is
    refused before anything is written.

    A URL or ``--schema`` the SQL adapter cannot use is a usage error (exit 2); a store that
    cannot be reached, or is no store of this release (not a database, no such database or
    role, another revision), exits 4 with one line."""
    try:
        from pipeline_state_sql import SqlSettingsError, open_store
        from pipeline_state_sql.migrate import check_revision
        from pipeline_state_sql.settings import Settings as SqlSettings
    except ImportError as exc:
        raise OperatorError(
            ExitCode.USAGE, f"operator commands need the sql extra: pip install 'pipeline-state[sql]' ({exc})"
        ) from exc
    path = _sqlite_file(url)
    if path is not None and not path.is_file():
        raise OperatorError(ExitCode.UNREACHABLE, f"no SQLite store at {path}")
    try:
        # serve's setting: where migrations are a deployment step, a SQLite file is checked too.
        upgrade = path is not None and SqlSettings().store_upgrade
    except SqlSettingsError as exc:
        raise OperatorError(ExitCode.USAGE, f"serve's settings: {one_line(exc)}") from exc
    try:
        store = await open_store(url, upgrade=upgrade, schema=schema)
    except (SqlSettingsError, ValueError) as exc:  # the URL, its driver, --schema on SQLite
        raise OperatorError(ExitCode.USAGE, one_line(exc)) from exc
    except StoreUnavailableError:
        raise
    except (OSError, TimeoutError) as exc:
        raise StoreUnavailableError(f"cannot open the store: {exc}") from exc
    except StoreError as exc:  # not a database, a failed migration
        raise _unusable(url, schema, exc) from exc
    if upgrade:
        return store
    try:
        await check_revision(store.engine)
    except BaseException as exc:
        await store.close()
        if isinstance(exc, StoreError) and not isinstance(exc, StoreUnavailableError):
            raise _unusable(url, schema, exc) from exc
        if isinstance(exc, TypeError | ValueError):
            # The first connection: the driver refuses an option of the URL's query
            # (``?sslmode=`` is libpq's spelling, asyncpg takes ``ssl``) or cannot read it.
            refused = f"the store URL {shown_url(url)} has an option the driver refuses: {one_line(exc)}"
            raise OperatorError(ExitCode.USAGE, refused) from exc
        raise
    return store


def _unusable(url: str, schema: str | None, error: StoreError) -> OperatorError:
    """The error of a store that answers but cannot be used (exit 4), in the database's own
    words when it has them (the driver's message, without SQLAlchemy's wrapping)."""
    where = shown_url(url) + (f" (schema {schema})" if schema else "")
    cause = getattr(error.__cause__, "orig", None) or error
    return OperatorError(ExitCode.UNREACHABLE, f"cannot use the store {where}: {one_line(cause)}")


async def run_command(
    service: PipelineService,
    payload: OperatorCommand,
    *,
    event_id: str,
    actor: str,
    correlation_id: str | None,
) -> HandleResult:
    """Run ``payload`` through the service (inbox, ``decide``, transition log) as ``actor``.
    Without ``correlation_id`` one is derived from ``event_id`` (a repeat carries the same)."""
    correlation = correlation_id or derive_id(event_id, "correlation")
    command = Command(payload, event_id, correlation, requested_by=actor)
    return await service.handle(command, topic=f"operator.{type(payload).__name__}")


def store_call(store: Any, name: str) -> Any:
    """The store's optional read ``name`` (history, transitions); a store without it cannot
    serve the command."""
    method = getattr(store, name, None)
    if method is None:
        raise OperatorError(ExitCode.USAGE, f"this store cannot list {name.replace('_', ' ')}")
    return method
