"""``run cancel`` and ``phase retry`` through a running service's HTTP API (``--api URL``).

For a deployment whose store the operator cannot reach (or an in-memory one), the action
goes to the service's own routes with the public token (``$PIPELINE_STATE_API_TOKEN``, never
a command-line argument). The service runs the same command through its engine; the
``Idempotency-Key`` is derived like the event id of the store route (the action, the batch
and the run it acts on), so a repeat is answered with what the first did. The service keys
a request on that key and its body, which holds the operator and the reason: a repeat by
another operator or with another reason is another request there (refused once the run has
ended), where the store route answers it as a duplicate.

``--api`` is checked before anything is sent: an ``http(s)`` URL with a host and a port from
1 to 65535, else a usage error (exit 2).
"""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import AsyncIterator
from typing import Any

from .exits import ExitCode, OperatorError
from .keys import cancel_key, cancel_target, check_active, retry_key, retry_stage
from .results import ActionOutcome
from .session import deployment

__all__ = ["API_ENV", "TOKEN_ENV", "add_api_argument", "api_url", "cancel_via_api", "retry_via_api"]

API_ENV = "PIPELINE_STATE_API"
"""The environment variable read when ``--api`` is not given."""

TOKEN_ENV = "PIPELINE_STATE_API_TOKEN"
"""The environment variable holding the bearer token of the API's public scope."""


def add_api_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--api",
        metavar="URL",
        default=os.environ.get(API_ENV),
        help=f"act through the running service's HTTP API instead of the store (default ${API_ENV}; "
        f"token in ${TOKEN_ENV})",
    )


@contextlib.asynccontextmanager
async def _client(args: argparse.Namespace) -> AsyncIterator[Any]:
    try:
        from pipeline_state_http import PipelineStateClient
    except ImportError as exc:
        raise OperatorError(
            ExitCode.USAGE, f"--api needs the http extra: pip install 'pipeline-state[http]' ({exc})"
        ) from exc
    from pipeline_state_http.settings import BEARER_TOKEN_RULE, is_bearer_token

    token = os.environ.get(TOKEN_ENV) or None  # set but empty: no token, as unset
    if token is not None and not is_bearer_token(token):
        # Never the value: it is the secret (a trailing newline is the usual slip).
        raise OperatorError(
            ExitCode.USAGE, f"${TOKEN_ENV} is not a bearer token: {BEARER_TOKEN_RULE} (value not shown)"
        )
    async with PipelineStateClient(api_url(args.api), token=token) as client:
        yield client


_MAX_PORT = 65535
"""The largest TCP port."""


def api_url(given: str) -> str:
    """``given`` (``--api``) when it is an ``http(s)`` URL with a host and a usable port;
    else a usage error, before any connection (a port the socket layer cannot take would
    otherwise escape as a traceback, a URL httpx cannot parse look like an outage)."""
    import httpx

    try:
        url = httpx.URL(given)
        host, port = url.host, url.port  # both decode: a bad IDNA label raises here
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise OperatorError(ExitCode.USAGE, f"--api is not a URL: {exc}") from exc
    if url.scheme not in ("http", "https") or not host:
        # Not the URL itself: it may carry a password (``https://user:password@host``).
        got = f"a URL with scheme {url.scheme!r}" if url.scheme else "a URL with no scheme"
        if url.scheme in ("http", "https"):
            got = "a URL with no host"
        raise OperatorError(ExitCode.USAGE, f"--api must be an http(s) URL with a host, got {got}")
    if port is not None and not 0 < port <= _MAX_PORT:
        raise OperatorError(ExitCode.USAGE, f"--api: the port must be from 1 to {_MAX_PORT}, got {port}")
    return given


def _outcome(
    action: str, args: argparse.Namespace, key: str, actor: str, run_id: str | None
) -> ActionOutcome:
    return ActionOutcome(
        action=action,
        batch_id=args.batch_id,
        event_id=key,
        requested_by=actor,
        result="accepted",
        run_id=run_id,
    )


async def cancel_via_api(args: argparse.Namespace, actor: str) -> ActionOutcome:
    """Cancel the active run (or ``--run``, which must be it) through ``POST .../cancel``."""
    async with _client(args) as client:
        snapshot = await client.get_batch(args.batch_id)
        latest = snapshot.active_run or (snapshot.history[-1] if snapshot.history else None)
        target = cancel_target(args.batch_id, args.run, None if latest is None else latest.run_id)
        active = snapshot.active_run
        if active is not None:  # without one, the service answers a repeat or refuses
            check_active(args.batch_id, target, active.run_id)
        key = cancel_key(args.event_id, args.batch_id, args.run, target)
        # The run it means travels too: if another run became active since the check above,
        # the service refuses the cancel rather than cancel that one.
        answer = await client.cancel(
            args.batch_id, user_id=actor, reason=args.reason, run_id=target, idempotency_key=key
        )
    return _outcome("run cancel", args, key, actor, answer.run_id)


async def retry_via_api(args: argparse.Namespace, actor: str) -> ActionOutcome:
    """Retry a phase through ``POST .../retry`` (a denial raises and exits 1)."""
    async with _client(args) as client:
        snapshot = await client.get_batch(args.batch_id)
        finished = snapshot.history[-1].run_id if snapshot.history else None
        status = deployment(args).profile.state_names.read(snapshot.status)  # the engine's name
        key = retry_key(args.event_id, args.batch_id, args.phase, finished, retry_stage(status))
        answer = await client.retry_phase(
            args.batch_id,
            args.phase,
            user_id=actor,
            retry_reason=args.reason,
            after_runs=len(snapshot.history),
            idempotency_key=key,
        )
    return _outcome("phase retry", args, key, actor, answer.run_id)
