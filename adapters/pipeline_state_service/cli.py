"""The commands this package adds to ``pipeline-state``: ``serve`` and the operator commands.

The core's command line (:mod:`pipeline_state._cli`) finds this module through the
``pipeline_state.commands`` entry point and calls :func:`add_commands`; it never imports an
adapter. Nothing here imports an adapter either until a command runs, so ``demo`` and
``diagram`` work without the optional dependencies.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
from collections.abc import Callable, Iterator
from typing import Any

from pipeline_state._cli import versioned

from .ops import SUBCOMMANDS, ExitCode, Subcommand
from .ops.exits import exit_code_of, expected, one_line
from .ops.output import error_line
from .ops.table import GROUPS

__all__ = ["add_commands", "reference_lines"]


def _serve(args: argparse.Namespace) -> int:
    try:
        from .serve import serve_main
    except ImportError as exc:  # the kafka/sql extras are not installed
        hint = "pip install 'pipeline-state[all]'"
        print(f"'serve' needs the kafka and sql extras: {hint} ({exc})", file=sys.stderr)
        return 2
    code: int = serve_main(args)
    return code


@contextlib.contextmanager
def _quiet_libraries() -> Iterator[None]:
    """No log lines of the libraries (the driver's retries, say) while an operator command
    runs: it reports its outcome on standard output and its error on one line."""
    root = logging.getLogger()
    silent = logging.NullHandler()
    root.addHandler(silent)
    try:
        yield
    finally:
        root.removeHandler(silent)


def _operator(command: Subcommand) -> Callable[[argparse.Namespace], int]:
    """The ``func`` of an operator subcommand: run its coroutine, and turn an error into its
    exit code and one line on standard error (see :mod:`pipeline_state_service.ops.exits`)."""

    def run(args: argparse.Namespace) -> int:
        try:
            from .ops.session import check_id_arguments  # imported when a command runs

            check_id_arguments(args)
            with _quiet_libraries():
                return int(asyncio.run(command.runner()(args)))
        except BrokenPipeError:  # stdout closed (``| head``): pipeline_state._cli.main stops quietly
            raise
        except ImportError as exc:  # an extra is not installed
            error_line(
                f"'{' '.join(command.words)}' needs the adapters: pip install 'pipeline-state[all]' ({exc})"
            )
            return ExitCode.USAGE
        except Exception as exc:
            if not expected(exc):
                raise
            error_line(one_line(exc))
            return exit_code_of(exc)

    return run


def _add_serve(sub: Any) -> None:
    serve = versioned(sub.add_parser("serve", help="run the Kafka consumer and outbox relay"))
    serve.add_argument("--kafka", help="bootstrap servers, HOST:PORT (default: PIPELINE_STATE_KAFKA)")
    serve.add_argument(
        "--store",
        help="memory:// or a SQLAlchemy URL (default: PIPELINE_STATE_STORE, "
        "else sqlite+aiosqlite:///pipeline_state.db)",
    )
    serve.add_argument("--http", help="also serve the HTTP API on HOST:PORT")
    serve.add_argument("--group-id", default="pipeline-state", help="Kafka consumer group")
    serve.add_argument("--consumers", nargs="*", default=[], help="extra consumers to run (results)")
    serve.add_argument(
        "--profile",
        help="the profile to serve, FILE.py:NAME or MODULE:NAME (default: the shipped HuleEdu profile)",
    )
    serve.add_argument(
        "--insecure-no-auth",
        action="store_true",
        help="with --http: serve without tokens (loopback addresses only, local development)",
    )
    serve.set_defaults(func=_serve)


def _add_operator_commands(sub: Any) -> None:
    """Add the rows of :data:`~pipeline_state_service.ops.SUBCOMMANDS` (and their aliases)."""
    groups: dict[str, Any] = {}
    for command in SUBCOMMANDS:
        for words in (command.words, *command.aliases):
            *group_words, leaf = words
            target = sub
            for word in group_words:
                if word not in groups:
                    group = versioned(sub.add_parser(word, help=GROUPS.get(word, f"{word} commands")))
                    groups[word] = group.add_subparsers(dest=f"{word}_command", required=True)
                target = groups[word]
            parser = versioned(target.add_parser(leaf, help=command.help, description=command.help))
            command.configure(parser)
            parser.set_defaults(func=_operator(command))


def add_commands(sub: Any) -> None:
    """Add ``serve`` and the operator commands to the subparsers ``sub`` of ``pipeline-state``."""
    _add_serve(sub)
    _add_operator_commands(sub)


def reference_lines(parser: argparse.ArgumentParser) -> list[str]:
    """The command-line reference page's lines (``docs/reference/cli.md``) for ``parser``."""
    from .ops.reference import cli_reference_lines

    return cli_reference_lines(parser)
