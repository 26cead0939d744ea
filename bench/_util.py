"""Measuring and reporting helpers shared by the benchmark suites.

Timing uses :func:`time.perf_counter_ns`; every figure is the median of several
repetitions taken after a warm-up. Memory uses :mod:`tracemalloc`: the bytes still
allocated after building something, minus the bytes allocated before, after a full
garbage collection on both sides. A :class:`Row` is one line of the printed table.
"""

from __future__ import annotations

import gc
import json
import os
import platform
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

__all__ = [
    "BUSY_SHARE",
    "Row",
    "Sample",
    "Stopwatch",
    "Target",
    "Traced",
    "environment",
    "headline_and_report",
    "per_call_ns",
    "postgres_schema",
    "render_table",
    "report",
    "rows_to_json",
    "traced",
]


BUSY_SHARE = 0.9
"""Below this CPU share (CPU time / wall time while timing) the run warns that it was disturbed."""


@dataclass(frozen=True)
class Sample:
    """Repeated measurements of one quantity (any unit); the median is the figure."""

    values: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def low(self) -> float:
        return min(self.values)

    @property
    def high(self) -> float:
        return max(self.values)

    def spread(self) -> str:
        """``n=R, min..max`` in the unit of the values."""
        return f"n={len(self.values)}, {_num(self.low)}..{_num(self.high)}"


class Stopwatch:
    """Accumulates wall time (:func:`time.perf_counter_ns`) and this process's CPU time over
    the blocks it times. :attr:`cpu_share` near 1.0 means the process had a core all along;
    lower means other processes took the CPU and the wall-clock figures are inflated."""

    def __init__(self) -> None:
        self.wall_ns = 0
        self.cpu_ns = 0
        self.items = 0
        self._started = (0, 0)

    def __enter__(self) -> Stopwatch:
        self._started = (time.perf_counter_ns(), time.process_time_ns())
        return self

    def __exit__(self, *exc: object) -> None:
        wall, cpu = self._started
        self.wall_ns += time.perf_counter_ns() - wall
        self.cpu_ns += time.process_time_ns() - cpu

    @property
    def cpu_share(self) -> float | None:
        return self.cpu_ns / self.wall_ns if self.wall_ns else None

    @property
    def cpu_ns_per_item(self) -> float | None:
        """CPU time per counted item (``items`` is counted by the caller)."""
        return self.cpu_ns / self.items if self.items else None


def per_call_ns(loop: Callable[[int], object], calls: int, watch: Stopwatch | None = None) -> float:
    """Wall nanoseconds per call of ``loop(calls)``, a function running ``calls`` iterations.

    Loop overhead is included; the suites print it separately so it can be judged.
    """
    watch = watch or Stopwatch()
    before = watch.wall_ns
    with watch:
        loop(calls)
    return (watch.wall_ns - before) / calls


@dataclass
class Traced:
    """Bytes retained by what ran inside :func:`traced` (filled in when the block exits)."""

    retained: int = 0


@contextmanager
def traced() -> Iterator[Traced]:
    """Trace allocations while the block runs; report what is still allocated at the end.

    Objects made before the block and freed inside it do not count; objects made inside
    and still alive at the end do. Tracing slows allocation down several times: never
    time anything inside this block.
    """
    result = Traced()
    already = tracemalloc.is_tracing()
    gc.collect()
    if not already:
        tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    try:
        yield result
    finally:
        gc.collect()
        result.retained = tracemalloc.get_traced_memory()[0] - before
        if not already:
            tracemalloc.stop()


@dataclass(frozen=True)
class Target:
    """A bound on a row's value or ratio, e.g. ``Target("value", ">=", 5000, "≥ 5,000 ev/s")``."""

    on: Literal["value", "ratio"]
    op: Literal[">=", "<="]
    bound: float
    text: str

    def met(self, value: float, ratio: float | None) -> bool:
        subject = value if self.on == "value" else ratio
        if subject is None:
            return False
        return subject >= self.bound if self.op == ">=" else subject <= self.bound


@dataclass(frozen=True)
class Row:
    """One figure: a value, optionally a baseline measured in the same run and their ratio."""

    figure: str
    description: str
    value: float
    unit: str
    baseline: float | None = None
    baseline_description: str = ""
    ratio: float | None = None
    target: Target | None = None
    spread: str = ""
    notes: tuple[str, ...] = field(default=())
    cpu_share: float | None = None

    @property
    def result(self) -> str:
        if self.target is None:
            return "info"
        return "PASS" if self.target.met(self.value, self.ratio) else "MISS"


def _num(value: float) -> str:
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _with_unit(value: float | None, unit: str) -> str:
    return "—" if value is None else f"{_num(value)} {unit}"


def render_table(rows: Sequence[Row]) -> str:
    """The figures as a fixed-width table, then what each figure and baseline is."""
    header = ("figure", "value", "baseline", "ratio", "target", "result")
    cells = [
        (
            row.figure,
            _with_unit(row.value, row.unit),
            _with_unit(row.baseline, row.unit),
            "—" if row.ratio is None else f"{row.ratio:.2f}x",
            "—" if row.target is None else row.target.text,
            row.result,
        )
        for row in rows
    ]
    widths = [max(len(line[i]) for line in [header, *cells]) for i in range(len(header))]

    def line(values: Sequence[str]) -> str:
        pairs = enumerate(zip(values, widths, strict=True))
        return "  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in pairs)

    out = [line(header), "  ".join("-" * w for w in widths), *(line(c) for c in cells), ""]
    for row in rows:
        out.append(f"{row.figure}: {row.description}")
        if row.baseline is not None:
            out.append(f"    baseline: {row.baseline_description}")
        if row.spread:
            out.append(f"    repetitions: {row.spread}")
        if row.cpu_share is not None:
            out.append(f"    CPU share while timing: {row.cpu_share:.2f}")
        out.extend(f"    {note}" for note in row.notes)
    busy = [row.figure for row in rows if row.cpu_share is not None and row.cpu_share < BUSY_SHARE]
    if busy:
        out += [
            "",
            f"WARNING: the machine was busy while timing {', '.join(busy)} (CPU share below "
            f"{BUSY_SHARE:.2f}): other processes took the CPU, so those timings are inflated. "
            "Run again on a quiet machine.",
        ]
    return "\n".join(out)


def rows_to_json(rows: Sequence[Row], env: dict[str, object]) -> str:
    """The figures and the environment as JSON, for keeping results between runs."""
    payload = {
        "environment": env,
        "figures": [{**asdict(row), "result": row.result} for row in rows],
    }
    return json.dumps(payload, indent=2, ensure_ascii=False)


def environment() -> dict[str, object]:
    """What the figures were measured on."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        usable = os.cpu_count() or 0
    try:
        load = tuple(round(x, 2) for x in os.getloadavg())
    except OSError:  # pragma: no cover - not on Unix
        load = ()
    return {
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(terse=True),
        "cpu_count": os.cpu_count(),
        "usable_cores": usable,
        "load_average": load,
    }


def report(
    title: str,
    measure: Callable[[], Sequence[Row]],
    env: dict[str, object],
    *,
    quick: bool,
    json_path: Path | None,
    fail_on_miss: bool,
) -> int:
    """Run ``measure``, print its table under ``title`` with the elapsed time, write the JSON
    figures when asked, and give the exit code (1 only for a miss with ``fail_on_miss``)."""
    started = time.perf_counter()
    rows = measure()
    print(f"\n{title}\n")
    print(render_table(rows))
    elapsed = time.perf_counter() - started
    print(f"\nmeasured in {elapsed:.0f} s; load average now {environment()['load_average']}")
    if json_path is not None:
        json_path.write_text(rows_to_json(rows, {**env, "quick": quick, "seconds": round(elapsed, 1)}))
    missed = [row.figure for row in rows if row.result == "MISS"]
    return 1 if fail_on_miss and missed else 0


def headline_and_report(
    name: str,
    title: str,
    measure: Callable[[], Sequence[Row]],
    *,
    quick: bool,
    json_path: Path | None,
    fail_on_miss: bool,
) -> int:
    """Print the suite's first line (``pipeline-state <name>``, Python, cores, load average),
    then :func:`report` ``measure``'s table under ``title``."""
    env = environment()
    print(
        f"pipeline-state {name} - Python {env['python']}, {env['cpu_count']} cores, "
        f"load average {env['load_average']}" + (" - QUICK MODE, figures not meaningful" if quick else "")
    )
    return report(title, measure, env, quick=quick, json_path=json_path, fail_on_miss=fail_on_miss)


async def postgres_schema(url: str, action: str, schema: str) -> None:
    """Create (``action`` ``"create"``) or drop (anything else) the PostgreSQL ``schema`` at ``url``."""
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            if action == "create":
                await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
            else:
                await conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    finally:
        await engine.dispose()
