"""Run the benchmarks and print their figures: ``python bench/run.py [SUITE] [options]``.

Without a suite, or with ``core``, it runs the in-process core benchmark: the Python
version and core count, then a table (figure, value, baseline measured in the same run,
ratio, target, PASS/MISS/info) and what each figure means; progress goes to stderr. Any
other suite name runs ``bench/<name>.py`` (e.g. ``kafka``, ``http``) with the remaining
options, as its own ``main`` defines them. The exit status is 0 unless ``--fail-on-miss``
is given and a target was missed: timings are never assertions of the test suite.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from collections.abc import Sequence
from pathlib import Path

# Run as a script, this folder is sys.path[0] and bench/http.py would shadow the stdlib
# ``http`` (prometheus-client imports it): use the repository root instead.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
if __package__ in (None, ""):
    sys.path.insert(0, str(_HERE.parent))

from bench import core  # noqa: E402
from bench._util import environment, report  # noqa: E402

__all__ = ["main", "suites"]

_HERE = Path(__file__).resolve().parent
_NOT_SUITES = {"__init__", "run", "core"}


def suites() -> list[str]:
    """``core`` and the other suites found in ``bench/`` (modules not starting with ``_``)."""
    found = sorted(
        p.stem for p in _HERE.glob("*.py") if not p.stem.startswith("_") and p.stem not in _NOT_SUITES
    )
    return ["core", *found]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bench/run.py", description=__doc__.splitlines()[0])
    parser.add_argument("suite", nargs="?", choices=["core"], default="core", help="the core suite")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: shows it runs, figures meaningless")
    parser.add_argument("--large-store", type=int, help="batches in the large store (default 100,000)")
    parser.add_argument("--essays", type=int, help="essays per batch (default 5)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the figures as JSON")
    parser.add_argument("--fail-on-miss", action="store_true", help="exit 1 when a target is missed")
    parser.epilog = f"other suites: {', '.join(suites()[1:]) or 'none'} (python bench/run.py SUITE --help)"
    return parser


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _run_other(name: str, argv: Sequence[str]) -> int:
    module = importlib.import_module(f"bench.{name}")
    entry = getattr(module, "main", None)
    if not callable(entry):
        print(f"bench/{name}.py has no main(argv)", file=sys.stderr)
        return 2
    result = entry(list(argv))
    return int(result or 0)


def main(argv: Sequence[str] | None = None) -> int:
    args_in = list(sys.argv[1:] if argv is None else argv)
    if args_in and not args_in[0].startswith("-") and args_in[0] != "core":
        if args_in[0] not in suites():
            _parser().error(f"unknown suite {args_in[0]!r}; known: {', '.join(suites())}")
        return _run_other(args_in[0], args_in[1:])
    args = _parser().parse_args(args_in)
    config = core.QUICK if args.quick else core.Config()
    overrides = {
        name: value
        for name, value in (("large_store", args.large_store), ("essays", args.essays))
        if value is not None
    }
    config = core.with_sizes(config, **overrides)
    env = environment()
    print(
        f"pipeline-state benchmarks - Python {env['python']} ({env['implementation']}), "
        f"{env['cpu_count']} cores ({env['usable_cores']} usable), {env['platform']}, "
        f"load average {env['load_average']}"
        + (" - QUICK MODE, figures not meaningful" if args.quick else "")
    )
    return report(
        "core (issue 2, point 10)",
        lambda: core.run(config, _log),
        env,
        quick=args.quick,
        json_path=args.json,
        fail_on_miss=args.fail_on_miss,
    )


if __name__ == "__main__":
    raise SystemExit(main())
