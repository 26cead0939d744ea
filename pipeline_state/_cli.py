"""The ``pipeline-state`` command line: ``demo``, ``diagram`` and ``paths`` here, and the
commands of installed packages, found through the ``pipeline_state.commands`` entry points
(:data:`COMMANDS_GROUP`): ``serve`` and the operator commands (``batch show``, ``runs
stalled``, ``outbox parked``, ``outbox republish``, ``dlq reinject``, ``run cancel``,
``phase retry``, ``batch archive``) come from the composition root,
:mod:`pipeline_state_service`. The core never imports an adapter.

Each subcommand lives in its own module and is imported only when used, so ``demo`` and
``diagram`` work without the optional adapter dependencies.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points
from typing import Any, NoReturn, Protocol

from . import __version__
from ._catalog import Catalog
from ._diagrams import lifecycle_mermaid, pipeline_mermaid
from ._lifecycle import LIFECYCLES
from .errors import DefinitionError, PipelineStateError, UnknownPipelineError
from .profiles import default_profile

__all__ = ["COMMANDS_GROUP", "CommandPlugin", "build_parser", "command_plugins", "main", "versioned"]

COMMANDS_GROUP = "pipeline_state.commands"
"""The entry-point group through which installed packages add subcommands (``serve`` and
the operator commands come from :mod:`pipeline_state_service` this way)."""


def _diagram(args: argparse.Namespace) -> int:
    try:
        return _draw(args)
    except (DefinitionError, UnknownPipelineError) as exc:  # a bad catalog or name: bad input
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _draw(args: argparse.Namespace) -> int:
    if args.what in LIFECYCLES:
        print(lifecycle_mermaid(LIFECYCLES[args.what], highlight=args.highlight or ()))
        return 0
    catalog = Catalog.from_file(args.catalog) if args.catalog else default_profile().catalog
    if args.what == "pipelines":
        for name in catalog.names:
            print(f"%% pipeline {' '.join(name.split())}\n{pipeline_mermaid(catalog.get(name))}")
        return 0
    print(pipeline_mermaid(catalog.get(args.what)))
    return 0


MAX_DEMO_BATCHES = 20
"""The most batches ``demo`` plays (either story)."""


def _demo(args: argparse.Namespace) -> int:
    if not 1 <= args.batches <= MAX_DEMO_BATCHES:
        print(
            f"error: --batches must be between 1 and {MAX_DEMO_BATCHES}, got {args.batches}", file=sys.stderr
        )
        return 2
    if args.profile is not None:
        from ._demo.any_profile import run_profile_demo

        return run_profile_demo(args.profile, seed=args.seed, batches=args.batches)
    from .profiles import run_default_demo

    code: int = run_default_demo(seed=args.seed, batches=args.batches, plain=args.plain)
    return code


def _paths(args: argparse.Namespace) -> int:
    from .testing.paths import DEFAULT_MAX_DEPTH, DEFAULT_MAX_STATES, paths_command

    if args.max_depth is not None and args.max_depth < 1:
        print("error: --max-depth must be >= 1", file=sys.stderr)
        return 2
    if args.max_states is not None and args.max_states < 1:
        print("error: --max-states must be >= 1", file=sys.stderr)
        return 2
    depth = DEFAULT_MAX_DEPTH if args.max_depth is None else args.max_depth
    states = DEFAULT_MAX_STATES if args.max_states is None else args.max_states
    profile = None
    if args.profile is not None:
        from .profiles import load_profile

        try:
            profile = load_profile(args.profile)
        except DefinitionError as exc:  # a bad spec is bad input (1 means a transition is unreachable)
            print(f"error: {exc}", file=sys.stderr)
            return 2
    return paths_command(
        sys.stdout,
        max_depth=depth,
        max_states=states,
        as_json=args.json,
        show_paths=args.show_paths,
        profile=profile,
    )


_DESCRIPTION = "Batch-processing pipelines as explicit state machines: play, draw, serve and operate them."
_EPILOG = (
    "Operator commands exit 0 when done (or already done), 1 when the engine refuses, 2 on bad "
    "usage or input, 3 when something is not found and 4 when the store or broker is unreachable."
)


class _Parser(argparse.ArgumentParser):
    """Usage errors on one line (``pipeline-state ...: error: ...``), exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")  # ExitCode.USAGE of the commands


def versioned(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``parser`` with ``--version`` (every subcommand has it; command plugins use this too)."""
    parser.add_argument("--version", action="version", version=f"pipeline-state {__version__}")
    return parser


class CommandPlugin(Protocol):
    """What a ``pipeline_state.commands`` entry point loads (a module or an object): it adds
    its subcommands (each parser with a ``func`` default returning the exit code) and gives
    the lines of the command-line reference page for them."""

    def add_commands(self, sub: Any) -> None: ...

    def reference_lines(self, parser: argparse.ArgumentParser) -> list[str]: ...


def command_plugins() -> list[CommandPlugin]:
    """The command plugins of the installed packages (entry-point group
    :data:`COMMANDS_GROUP`), in the order of their entry-point names. One that cannot be
    loaded (an extra it needs is missing) is left out: its commands are then unknown."""
    plugins: list[CommandPlugin] = []
    for entry in sorted(entry_points(group=COMMANDS_GROUP), key=lambda e: (e.name, e.value)):
        try:
            plugins.append(entry.load())
        except ImportError as exc:
            print(f"pipeline-state: commands of {entry.name!r} unavailable: {exc}", file=sys.stderr)
    return plugins


def build_parser() -> argparse.ArgumentParser:
    parser = versioned(_Parser(prog="pipeline-state", description=_DESCRIPTION, epilog=_EPILOG))
    sub = parser.add_subparsers(dest="command", required=True)

    demo = versioned(sub.add_parser("demo", help="play the whole platform in memory and show the flow"))
    demo.add_argument("--seed", type=int, default=7, help="seed of the simulated services' failures")
    demo.add_argument(
        "--batches", type=int, default=2, help=f"how many batches to run (1-{MAX_DEMO_BATCHES})"
    )
    demo.add_argument("--plain", action="store_true", help="plain text instead of rich tables")
    demo.add_argument(
        "--profile",
        metavar="SPEC",
        help="play any profile instead (FILE.py:NAME or MODULE:NAME: a Profile or a function returning one)",
    )
    demo.set_defaults(func=_demo)

    diagram = versioned(
        sub.add_parser("diagram", help="print a Mermaid diagram generated from the definitions")
    )
    diagram.add_argument("what", help="batch | run | phase | pipelines | <pipeline name>")
    diagram.add_argument("--highlight", nargs="*", help="states to highlight (lifecycles only)")
    diagram.add_argument("--catalog", help="a TOML or YAML catalog instead of the default profile's")
    diagram.set_defaults(func=_diagram)

    paths_help = "generate input paths through the engine; exit 1 naming any declared transition none reaches"
    paths = versioned(sub.add_parser("paths", help=paths_help))
    paths.add_argument("--max-depth", type=int, help="longest input sequence the search extends (default 24)")
    paths.add_argument(
        "--max-states",
        type=int,
        help="abstract states the search keeps before it stops (default 100000; a big catalog needs a bound)",
    )
    paths.add_argument("--json", action="store_true", help="print JSON instead of text")
    paths.add_argument(
        "--show-paths", action="store_true", help="print the shortest input sequence of each transition"
    )
    paths.add_argument(
        "--profile",
        metavar="SPEC",
        help="explore any profile instead (FILE.py:NAME or MODULE:NAME: a Profile or a function making one)",
    )
    paths.set_defaults(func=_paths)

    for plugin in command_plugins():
        plugin.add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except PipelineStateError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # the reader went away (``| head``): stop quietly, as a shell tool does
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # the interpreter's last flush must not raise again
        return 141
    return code


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
