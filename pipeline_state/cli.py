"""The ``pipeline-state`` command line: ``demo``, ``diagram``, ``paths``, ``serve`` and ``stalled``.

Each subcommand lives in its own module and is imported only when used, so ``demo`` and
``diagram`` work without the optional adapter dependencies.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

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
    if args.profile is not None:
        from .demo.any_profile import run_profile_demo

        return run_profile_demo(args.profile, seed=args.seed, batches=args.batches)
    from .demo import run_demo

    code: int = run_demo(seed=args.seed, batches=args.batches, plain=args.plain)
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


async def _stalled_runs(url: str, older_than: float, limit: int) -> list[Any]:
    from pipeline_state_kafka.stores import open_store

    opened = await open_store(url)
    try:
        runs: list[Any] = await opened.store.stalled_runs(datetime.now(UTC), older_than, limit=limit)
        return runs
    finally:
        await opened.close()


def _stalled(args: argparse.Namespace) -> int:
    try:
        import pipeline_state_kafka.stores  # noqa: F401 - the adapters' store opener
    except ImportError as exc:  # the adapters are not installed
        print(f"'stalled' needs the sql extra: pip install 'pipeline-state[all]' ({exc})", file=sys.stderr)
        return 2
    if args.older_than < 0:
        print("error: --older-than must be >= 0", file=sys.stderr)
        return 2
    runs = asyncio.run(_stalled_runs(args.store, args.older_than, args.limit))
    if args.json:
        rows = [
            {
                "batch_id": r.batch_id,
                "run_id": r.run_id,
                "pipeline": r.pipeline_name,
                "accepted_at": r.accepted_at.isoformat(),
                "last_change_at": r.last_change_at.isoformat(),
                "active_phases": list(r.active_phases),
                "parked": [
                    {"event_id": p.message.event_id, "topic": p.message.topic, "last_error": p.last_error}
                    for p in r.parked
                ],
            }
            for r in runs
        ]
        print(json.dumps(rows, indent=2))
        return 0
    if not runs:
        print(f"no run without progress for more than {args.older_than:g}s")
        return 0
    for r in runs:
        parked = f", {len(r.parked)} parked outbox row(s)" if r.parked else ""
        print(
            f"{r.batch_id}  run {r.run_id}  {r.pipeline_name}  last change {r.last_change_at.isoformat()}"
            f"  open: {', '.join(r.active_phases) or '-'}{parked}"
        )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pipeline-state", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="play the whole platform in memory and show the flow")
    demo.add_argument("--seed", type=int, default=7, help="seed of the simulated services' failures")
    demo.add_argument("--batches", type=int, default=2, help="how many batches to run (1-20)")
    demo.add_argument("--plain", action="store_true", help="plain text instead of rich tables")
    demo.add_argument(
        "--profile",
        metavar="SPEC",
        help="play any profile instead (FILE.py:NAME or MODULE:NAME: a Profile or a function returning one)",
    )
    demo.set_defaults(func=_demo)

    diagram = sub.add_parser("diagram", help="print a Mermaid diagram generated from the definitions")
    diagram.add_argument("what", help="batch | run | phase | pipelines | <pipeline name>")
    diagram.add_argument("--highlight", nargs="*", help="states to highlight (lifecycles only)")
    diagram.add_argument("--catalog", help="a TOML or YAML catalog instead of the HuleEdu profile")
    diagram.set_defaults(func=_diagram)

    paths = sub.add_parser(
        "paths",
        help="generate input paths through the engine; exit 1 naming any declared transition none reaches",
    )
    paths.add_argument("--max-depth", type=int, help="longest input sequence the search extends (default 24)")
    paths.add_argument("--json", action="store_true", help="print JSON instead of text")
    paths.add_argument(
        "--show-paths", action="store_true", help="print the shortest input sequence of each transition"
    )
    paths.set_defaults(func=_paths)

    serve = sub.add_parser("serve", help="run the Kafka consumer and outbox relay")
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

    stalled = sub.add_parser("stalled", help="list active runs without progress, oldest first")
    stalled.add_argument("--store", required=True, help="SQLAlchemy URL of the store (as for serve)")
    stalled.add_argument(
        "--older-than", type=float, default=3600.0, help="seconds without progress (default 3600)"
    )
    stalled.add_argument("--limit", type=int, default=100, help="at most this many runs (default 100)")
    stalled.add_argument("--json", action="store_true", help="print JSON instead of text")
    stalled.set_defaults(func=_stalled)
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
