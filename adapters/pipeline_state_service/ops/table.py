"""The operator subcommands, as one table the command line is built from.

Each :class:`Subcommand` names its words (``("batch", "show")``), its help, how it adds its
arguments and the coroutine that runs it. The ``pipeline-state`` parser is built by walking
:data:`SUBCOMMANDS`; another package can add rows the same way (an entry point can later
yield :class:`Subcommand` values). Modules are imported only when their command runs.
"""

from __future__ import annotations

import argparse
import importlib
import os
from collections.abc import Callable, Coroutine
from typing import Any

import attrs

from .output import add_json_argument
from .remote import add_api_argument
from .session import add_actor_arguments, add_store_arguments

__all__ = ["GROUPS", "SUBCOMMANDS", "Subcommand"]

Configure = Callable[[argparse.ArgumentParser], None]


@attrs.frozen
class Subcommand:
    """One operator command: ``words`` on the command line, ``target`` the
    ``module:function`` (in :mod:`pipeline_state_service.ops`) it runs."""

    words: tuple[str, ...]
    help: str
    target: str
    configure: Configure
    aliases: tuple[tuple[str, ...], ...] = ()

    def runner(self) -> Callable[[argparse.Namespace], Coroutine[Any, Any, int]]:
        """The coroutine function that runs the command (its module imported now)."""
        module_name, _, function = self.target.partition(":")
        module = importlib.import_module(f"pipeline_state_service.ops.{module_name}")
        found: Callable[[argparse.Namespace], Coroutine[Any, Any, int]] = getattr(module, function)
        return found


def _reads(parser: argparse.ArgumentParser) -> None:
    add_store_arguments(parser)
    add_json_argument(parser)


def _acts(parser: argparse.ArgumentParser) -> None:
    _reads(parser)
    add_actor_arguments(parser)


def _batch_show(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("batch_id", metavar="BATCH", help="the batch id")
    parser.add_argument(
        "--log-limit",
        type=int,
        metavar="N",
        default=1000,
        help="at most this many transition log rows, the newest (default 1000)",
    )
    _reads(parser)


def _stalled(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--older-than",
        type=float,
        metavar="SECONDS",
        default=3600.0,
        help="seconds without progress (default 3600)",
    )
    parser.add_argument(
        "--limit", type=int, metavar="N", default=100, help="at most this many runs (default 100)"
    )
    _reads(parser)


def _parked(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--limit", type=int, metavar="N", default=100, help="at most this many rows (default 100)"
    )
    _reads(parser)


def _republish(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("event_ids", nargs="+", metavar="EVENT_ID", help="event ids of parked rows")
    _acts(parser)


def _cancel(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("batch_id", metavar="BATCH", help="the batch id")
    parser.add_argument(
        "--run", metavar="RUN", help="the run to cancel (default: the active run); refused if not active"
    )
    parser.add_argument(
        "--reason",
        metavar="TEXT",
        help="why, at most 2000 characters (noted on the run's cancel in the transition log)",
    )
    _acts(parser)
    add_api_argument(parser)


def _retry(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("batch_id", metavar="BATCH", help="the batch id")
    parser.add_argument("phase", metavar="PHASE", help="the phase to run again (a phase of the profile)")
    parser.add_argument(
        "--reason", metavar="TEXT", help="why, at most 2000 characters (recorded on the new run)"
    )
    _acts(parser)
    add_api_argument(parser)


def _archive(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("batch_id", metavar="BATCH", help="the batch id")
    _acts(parser)


def _reinject(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--kafka",
        metavar="HOST:PORT",
        default=os.environ.get("PIPELINE_STATE_KAFKA"),
        help="bootstrap servers, HOST:PORT (default $PIPELINE_STATE_KAFKA)",
    )
    parser.add_argument(
        "--topic", required=True, metavar="TOPIC", help="the contract topic whose .DLQ to read"
    )
    parser.add_argument(
        "--topic-prefix",
        metavar="PREFIX",
        default=os.environ.get("PIPELINE_STATE_TOPIC_PREFIX", ""),
        help="put before the topic name, as serve does (default $PIPELINE_STATE_TOPIC_PREFIX)",
    )
    parser.add_argument(
        "--limit", type=int, metavar="N", help="re-inject at most this many letters (duplicates aside)"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        default=10.0,
        help="seconds to wait for the broker, 0.001 to 3600 (default 10)",
    )
    _reads(parser)
    add_actor_arguments(parser, event_id=False)


GROUPS: dict[str, str] = {
    "batch": "inspect or archive a batch",
    "runs": "list runs across batches",
    "outbox": "list and re-deliver parked outbox rows",
    "dlq": "re-inject dead-lettered records",
    "run": "act on a batch's active run",
    "phase": "act on one phase of a batch",
}
"""The help of each first word of :data:`SUBCOMMANDS`."""

SUBCOMMANDS: tuple[Subcommand, ...] = (
    Subcommand(
        ("batch", "show"),
        "a batch: state, active run, history and transition log",
        "views:show_batch",
        _batch_show,
    ),
    Subcommand(
        ("runs", "stalled"),
        "list active runs without progress, oldest first",
        "views:stalled_runs",
        _stalled,
        aliases=(("stalled",),),
    ),
    Subcommand(("outbox", "parked"), "list parked outbox rows, oldest first", "outbox:list_parked", _parked),
    Subcommand(("outbox", "republish"), "deliver parked outbox rows again", "outbox:republish", _republish),
    Subcommand(
        ("dlq", "reinject"),
        "re-inject the dead letters of a topic (TOPIC.DLQ) through the engine",
        "dlq:reinject",
        _reinject,
    ),
    Subcommand(("run", "cancel"), "cancel the active run of a batch", "actions:cancel_run", _cancel),
    Subcommand(("phase", "retry"), "run one phase of a batch again", "actions:retry_phase", _retry),
    Subcommand(("batch", "archive"), "archive a ready batch (terminal)", "actions:archive_batch", _archive),
)
"""Every operator subcommand, in the order ``--help`` lists them."""
