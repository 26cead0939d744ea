"""Play the whole education platform in memory, as ``pipeline-state demo`` does.

    python examples/platform_demo.py            # rich output, seed 7, two batches
    python examples/platform_demo.py --plain --seed 3 --batches 4

The demo checks its own story and exits non-zero if the runtime broke a rule.
"""

from __future__ import annotations

import argparse

from pipeline_state.profiles.huleedu.demo import run_demo


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--batches", type=int, default=2)
    parser.add_argument("--plain", action="store_true", help="no colours, ASCII only")
    args = parser.parse_args()
    return run_demo(seed=args.seed, batches=args.batches, plain=args.plain)


if __name__ == "__main__":
    raise SystemExit(main())
