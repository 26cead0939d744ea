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
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import attrs

from pipeline_state._commands import Command, OperatorCommand
from pipeline_state._decide import derive_id
from pipeline_state._intake import DEFAULT_LIMITS, IntakeLimits
from pipeline_state._profile import Profile
from pipeline_state._service import HandleResult, PipelineService
from pipeline_state._wire import MAX_ID_LENGTH
from pipeline_state.errors import DefinitionError, StoreUnavailableError
from pipeline_state.profiles.huleedu.profile import huleedu_profile
from pipeline_state_service.stores import shown_url

from .exits import ExitCode, OperatorError

__all__ = [
    "OPERATOR_ENV",
    "SCHEMA_ENV",
    "STORE_ENV",
    "Deployment",
    "action_event_id",
    "add_actor_arguments",
    "add_store_arguments",
    "deployment",
    "open_service",
    "operator_name",
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
        help="idempotency key of this action (default: derived from the action and its arguments)",
    )


def operator_name(given: str | None) -> str:
    """Who asks: ``given``, else ``$PIPELINE_STATE_OPERATOR``, else the login name."""
    name = given if given is not None else os.environ.get(OPERATOR_ENV)
    if name is None:
        try:
            name = getpass.getuser()
        except (OSError, KeyError):  # no login name (a container without a passwd entry)
            name = "unknown"
    name = name.strip()
    if not name or len(name) > MAX_ID_LENGTH or "\x00" in name:
        raise OperatorError(ExitCode.USAGE, f"--as must be 1 to {MAX_ID_LENGTH} characters, without NUL")
    return name


def action_event_id(given: str | None, action: str, *parts: str) -> str:
    """``given`` (``--event-id``, checked), else a UUID derived from ``action`` and ``parts``:
    the same action on the same arguments always gets the same id, so the inbox makes a
    repeat a duplicate."""
    if given is not None:
        if not given.strip() or len(given) > MAX_ID_LENGTH or "\x00" in given:
            raise OperatorError(
                ExitCode.USAGE, f"--event-id must be 1 to {MAX_ID_LENGTH} characters, without NUL"
            )
        return given
    return derive_id(_EVENT_NAMESPACE, action, *parts)


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
    migrated like ``serve`` does; other databases are used as they are.
    """
    url: str | None = args.store
    if not url:
        raise OperatorError(ExitCode.USAGE, f"--store is required (or set ${STORE_ENV})")
    settings = deployment(args) if settings is None else settings
    try:
        from pipeline_state_sql import open_store
    except ImportError as exc:
        raise OperatorError(
            ExitCode.USAGE, f"operator commands need the sql extra: pip install 'pipeline-state[sql]' ({exc})"
        ) from exc
    path = _sqlite_file(url)
    if path is not None and not path.is_file():
        raise OperatorError(ExitCode.UNREACHABLE, f"no SQLite store at {path}")
    try:
        store = await open_store(url, upgrade=path is not None, schema=args.schema)
    except StoreUnavailableError:
        raise
    except (OSError, TimeoutError) as exc:
        raise StoreUnavailableError(f"cannot open the store: {exc}") from exc
    try:
        yield PipelineService(store, profile=settings.profile, limits=settings.limits)
    finally:
        await store.close()


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
