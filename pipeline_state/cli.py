"""The ``pipeline-state`` command line: ``demo``, ``diagram`` and ``serve``.

Each subcommand lives in its own module and is imported only when used, so ``demo`` and
``diagram`` work without the optional adapter dependencies.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .catalog import Catalog
from .diagrams import lifecycle_mermaid, pipeline_mermaid
from .errors import PipelineStateError
from .lifecycle import LIFECYCLES
from .profile import huleedu_profile

__all__ = ["main"]


def _diagram(args: argparse.Namespace) -> int:
    if args.what in LIFECYCLES:
        print(lifecycle_mermaid(LIFECYCLES[args.what], highlight=args.highlight or ()))
        return 0
    catalog = Catalog.from_file(args.catalog) if args.catalog else huleedu_profile().catalog
    if args.what == "pipelines":
        for name in catalog.names:
            print(f"%% pipeline {name}\n{pipeline_mermaid(catalog.get(name))}")
        return 0
    print(pipeline_mermaid(catalog.get(args.what)))
    return 0


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    code: int = run_demo(seed=args.seed, batches=args.batches, plain=args.plain)
    return code


def _serve(args: argparse.Namespace) -> int:
    try:
        from pipeline_state_kafka.serve import serve_main
    except ImportError as exc:  # the kafka/sql extras are not installed
        hint = "pip install 'pipeline-state[all]'"
        print(f"'serve' needs the kafka and sql extras: {hint} ({exc})", file=sys.stderr)
        return 2
    code: int = serve_main(args)
    return code


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pipeline-state", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="play the whole platform in memory and show the flow")
    demo.add_argument("--seed", type=int, default=7, help="seed of the simulated services' failures")
    demo.add_argument("--batches", type=int, default=2, help="how many batches to run (1-20)")
    demo.add_argument("--plain", action="store_true", help="plain text instead of rich tables")
    demo.set_defaults(func=_demo)

    diagram = sub.add_parser("diagram", help="print a Mermaid diagram generated from the definitions")
    diagram.add_argument("what", help="batch | run | phase | pipelines | <pipeline name>")
    diagram.add_argument("--highlight", nargs="*", help="states to highlight (lifecycles only)")
    diagram.add_argument("--catalog", help="a TOML or YAML catalog instead of the HuleEdu profile")
    diagram.set_defaults(func=_diagram)

    serve = sub.add_parser("serve", help="run the Kafka consumer and outbox relay")
    serve.add_argument("--kafka", required=True, help="bootstrap servers, HOST:PORT")
    serve.add_argument("--store", default="sqlite+aiosqlite:///pipeline_state.db", help="SQLAlchemy URL")
    serve.add_argument("--http", help="also serve the HTTP API on HOST:PORT")
    serve.add_argument("--group-id", default="pipeline-state", help="Kafka consumer group")
    serve.add_argument("--consumers", nargs="*", default=[], help="extra consumers to run (results)")
    serve.set_defaults(func=_serve)
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
