"""The ``pipeline-state`` command line: ``demo``, ``diagram``, ``paths``, ``serve`` and the
operator commands (``batch show``, ``runs stalled``, ``outbox parked``, ``outbox republish``,
``dlq reinject``, ``run cancel``, ``phase retry``, ``batch archive``).

Each subcommand lives in its own module and is imported only when used, so ``demo`` and
``diagram`` work without the optional adapter dependencies. The operator commands are
built from one table (:data:`pipeline_state.ops.SUBCOMMANDS`); their exit codes are those of
:class:`pipeline_state.ops.ExitCode`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NoReturn

from . import __version__
from .catalog import Catalog
from .diagrams import lifecycle_mermaid, pipeline_mermaid
from .errors import PipelineStateError
from .lifecycle import LIFECYCLES
from .ops import SUBCOMMANDS, ExitCode, Subcommand
from .ops.exits import exit_code_of, expected, one_line
from .ops.output import error_line
from .ops.table import GROUPS
from .profiles import default_profile

__all__ = ["main"]


def _diagram(args: argparse.Namespace) -> int:
    if args.what in LIFECYCLES:
        print(lifecycle_mermaid(LIFECYCLES[args.what], highlight=args.highlight or ()))
        return 0
    catalog = Catalog.from_file(args.catalog) if args.catalog else default_profile().catalog
    if args.what == "pipelines":
        for name in catalog.names:
            print(f"%% pipeline {name}\n{pipeline_mermaid(catalog.get(name))}")
        return 0
    print(pipeline_mermaid(catalog.get(args.what)))
    return 0


def _demo(args: argparse.Namespace) -> int:
    if args.profile is not None:
        from .demo.any_profile import run_profile_demo

        return run_profile_demo(args.profile, seed=args.seed, batches=args.batches)
    from .profiles import run_default_demo

    code: int = run_default_demo(seed=args.seed, batches=args.batches, plain=args.plain)
    return code


def _paths(args: argparse.Namespace) -> int:
    from .testing.paths import DEFAULT_MAX_DEPTH, paths_command

    if args.max_depth is not None and args.max_depth < 1:
        print("error: --max-depth must be >= 1", file=sys.stderr)
        return 2
    depth = DEFAULT_MAX_DEPTH if args.max_depth is None else args.max_depth
    return paths_command(sys.stdout, max_depth=depth, as_json=args.json, show_paths=args.show_paths)


def _serve(args: argparse.Namespace) -> int:
    try:
        from pipeline_state_kafka.serve import serve_main
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
    exit code and one line on standard error (see :mod:`pipeline_state.ops.exits`)."""

    def run(args: argparse.Namespace) -> int:
        try:
            with _quiet_libraries():
                return int(asyncio.run(command.runner()(args)))
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


_DESCRIPTION = "Batch-processing pipelines as explicit state machines: play, draw, serve and operate them."
_EPILOG = (
    "Operator commands exit 0 when done (or already done), 1 when the engine refuses, 2 on bad "
    "usage or input, 3 when something is not found and 4 when the store or broker is unreachable."
)


class _Parser(argparse.ArgumentParser):
    """Usage errors on one line (``pipeline-state ...: error: ...``), exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(ExitCode.USAGE, f"{self.prog}: error: {message} (see --help)\n")


def _versioned(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--version", action="version", version=f"pipeline-state {__version__}")
    return parser


def _add_operator_commands(sub: Any) -> None:
    """Add the rows of :data:`~pipeline_state.ops.SUBCOMMANDS` (and their aliases) to ``sub``."""
    groups: dict[str, Any] = {}
    for command in SUBCOMMANDS:
        for words in (command.words, *command.aliases):
            *group_words, leaf = words
            target = sub
            for word in group_words:
                if word not in groups:
                    group = _versioned(sub.add_parser(word, help=GROUPS.get(word, f"{word} commands")))
                    groups[word] = group.add_subparsers(dest=f"{word}_command", required=True)
                target = groups[word]
            parser = _versioned(target.add_parser(leaf, help=command.help, description=command.help))
            command.configure(parser)
            parser.set_defaults(func=_operator(command))


def build_parser() -> argparse.ArgumentParser:
    parser = _versioned(_Parser(prog="pipeline-state", description=_DESCRIPTION, epilog=_EPILOG))
    sub = parser.add_subparsers(dest="command", required=True)

    demo = _versioned(sub.add_parser("demo", help="play the whole platform in memory and show the flow"))
    demo.add_argument("--seed", type=int, default=7, help="seed of the simulated services' failures")
    demo.add_argument("--batches", type=int, default=2, help="how many batches to run (1-20)")
    demo.add_argument("--plain", action="store_true", help="plain text instead of rich tables")
    demo.add_argument(
        "--profile",
        metavar="SPEC",
        help="play any profile instead (FILE.py:NAME or MODULE:NAME: a Profile or a function returning one)",
    )
    demo.set_defaults(func=_demo)

    diagram = _versioned(
        sub.add_parser("diagram", help="print a Mermaid diagram generated from the definitions")
    )
    diagram.add_argument("what", help="batch | run | phase | pipelines | <pipeline name>")
    diagram.add_argument("--highlight", nargs="*", help="states to highlight (lifecycles only)")
    diagram.add_argument("--catalog", help="a TOML or YAML catalog instead of the HuleEdu profile")
    diagram.set_defaults(func=_diagram)

    paths_help = "generate input paths through the engine; exit 1 naming any declared transition none reaches"
    paths = _versioned(sub.add_parser("paths", help=paths_help))
    paths.add_argument("--max-depth", type=int, help="longest input sequence the search extends (default 24)")
    paths.add_argument("--json", action="store_true", help="print JSON instead of text")
    paths.add_argument(
        "--show-paths", action="store_true", help="print the shortest input sequence of each transition"
    )
    paths.set_defaults(func=_paths)

    serve = _versioned(sub.add_parser("serve", help="run the Kafka consumer and outbox relay"))
    serve.add_argument("--kafka", required=True, help="bootstrap servers, HOST:PORT")
    serve.add_argument("--store", default="sqlite+aiosqlite:///pipeline_state.db", help="SQLAlchemy URL")
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

    _add_operator_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except PipelineStateError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
