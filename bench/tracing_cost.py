"""Tracing's cost in process (issue 15, point 6): ``python bench/tracing_cost.py [--quick]
[--rounds R] [--batches N] [--unit N] [--backends memory,sqlite,postgres] [--split | --breakdown |
--profile BACKEND | --once MODE]``.

What ``serve`` does per inbound record, without the broker: the service's
:meth:`~pipeline_state.PipelineService.handle_many` in units of ``--unit`` (25) messages, as
the Kafka consumer hands them over (each with its empty trace-context headers), then the
outbox relay publishing what the unit emitted to a transport that accepts everything.
The workload is the core benchmark's: per batch a spellcheck outcome (which dispatches CJ)
and a CJ outcome (which completes the run and notifies), so 2.5 spans per outcome with
tracing on (its ``process`` span, 1.5 ``publish`` spans).

Two modes, in the same process, in ``--rounds`` interleaved rounds (the order of the two
alternates between rounds), each round on a fresh store seeded with the same batches:

* ``off``: no tracer provider installed (what ``serve`` runs without ``OTEL_*``);
* ``on``: the SDK as ``serve`` installs it (a batch span processor, every span sampled)
  with an exporter that counts each exported batch and lets it go, as a network exporter
  lets it go once sent. The processor is flushed inside the timed block, so the export
  thread's work is counted.

Each round starts as ``serve`` starts consuming: garbage collected, then what exists frozen
(``gc.freeze()``, unfrozen after the round), so collections visit only the round's objects.

The figure is CPU time (:func:`time.process_time`: every thread of this process, none of the
time spent waiting for a core) per outcome, the median over the rounds, and the ratio
on/off is the median of the rounds' ratios. CPU time of one process doing a fixed amount of
work moves by a few per cent on a shared machine, where the end-to-end figures of
``bench/kafka.py`` (three processes and a broker on the same cores) move by tens: this is the
figure that resolves 5 % (on a quiet machine: under a load of 8 on two cores its rounds
moved by 20 % too).

Where the time goes: ``--split`` measures four modes the same way (no SDK; the SDK with a
sampler that records nothing, so only the library's work around placeholder spans and the
propagation of the trace context; every span recorded, no span processor; recorded and
exported); ``--breakdown`` times each piece alone (an SDK span, an attribute, the batch
processor and exporter, each library helper); ``--profile BACKEND`` runs one traced round
under :mod:`cProfile` and prints what tracing calls per outcome. ``--once MODE`` runs one
round of one mode and prints nothing, for an instruction count that no other load on the
machine changes: ``valgrind --tool=cachegrind --cache-sim=no python bench/tracing_cost.py
--once on --batches 150 --backends memory`` minus the same with ``--once off``, divided by
the 300 outcomes, is the work tracing adds per outcome.

Switching the SDK on and off in one process sets OpenTelemetry's global provider directly
(the API lets code set it only once); nothing else here depends on the API's internals.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this folder is sys.path[0] and bench/http.py would shadow the stdlib
# ``http``: use the repository root instead, so ``bench`` is a package.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
if __package__ in (None, ""):
    sys.path.insert(0, str(_HERE.parent))

import argparse  # noqa: E402
import asyncio  # noqa: E402
import contextlib  # noqa: E402
import cProfile  # noqa: E402
import gc  # noqa: E402
import io  # noqa: E402
import pstats  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Iterator, Sequence  # noqa: E402
from dataclasses import dataclass, field, replace  # noqa: E402

from opentelemetry import trace  # noqa: E402
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult  # noqa: E402
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF  # noqa: E402

from bench._util import Row, Target, headline_and_report  # noqa: E402
from bench._workload import Delivery, OutcomeWorkload, Seeder, batch_ids, fresh_store  # noqa: E402
from pipeline_state import HandleResult, ManualClock, PipelineService  # noqa: E402
from pipeline_state._memory import InMemoryStore  # noqa: E402
from pipeline_state._relay import OutboxRelay  # noqa: E402
from pipeline_state.ports import OutboxMessage  # noqa: E402

__all__ = ["FIGURES", "QUICK", "Config", "main", "rows", "run"]

FIGURES = ("tracing_cpu_per_outcome",)

Log = Callable[[str], None]


@dataclass(frozen=True)
class Config:
    batches: int = 400
    """Batches per round (two outcomes each)."""
    rounds: int = 9
    unit: int = 25
    essays: int = 5
    backends: tuple[str, ...] = ("memory", "sqlite")
    profile: str | None = None


QUICK = Config(batches=20, rounds=2)


class CountingExporter(SpanExporter):
    """Counts the spans and attributes exported, keeps nothing."""

    def __init__(self) -> None:
        self.spans = 0
        self.attributes = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans += len(spans)
        self.attributes += sum(len(s.attributes or ()) for s in spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


class Sink:
    """A transport that accepts every message at once (the relay's publisher)."""

    def __init__(self) -> None:
        self.published = 0

    async def publish(self, messages: Sequence[OutboxMessage]) -> Sequence[BaseException | None]:
        self.published += len(messages)
        return [None] * len(messages)


@contextlib.contextmanager
def sdk_installed(provider: TracerProvider | None) -> Iterator[None]:
    """``provider`` as OpenTelemetry's global tracer provider for the body (``None``: none)."""
    before = trace._TRACER_PROVIDER
    trace._TRACER_PROVIDER = provider
    try:
        yield
    finally:
        trace._TRACER_PROVIDER = before


@dataclass
class Round:
    cpu_us: float
    spans: int = 0
    attributes: int = 0


@dataclass
class Results:
    off: list[float] = field(default_factory=list)
    on: list[float] = field(default_factory=list)
    spans: int = 0
    attributes: int = 0
    outcomes: int = 0


MODES = ("off", "unsampled", "unexported", "on")
"""``off``: no SDK; ``unsampled``: the SDK with a sampler that records nothing (the library's
work around placeholder spans); ``unexported``: every span recorded, no span processor;
``on``: every span recorded and exported through a batch span processor."""


def _provider(mode: str, exporter: SpanExporter) -> TracerProvider | None:
    if mode == "off":
        return None
    if mode == "unsampled":
        return TracerProvider(sampler=ALWAYS_OFF)
    provider = TracerProvider()
    if mode == "on":
        provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


async def one_round(cfg: Config, backend: str, workdir: Path, name: str, traced: bool | str) -> Round:
    """One mode of one round on a fresh store: CPU µs per outcome (and, traced, what was
    exported); ``traced``: ``True`` (``on``), ``False`` (``off``) or one of :data:`MODES`."""
    mode = traced if isinstance(traced, str) else ("on" if traced else "off")
    seeder = Seeder()
    store, close = await fresh_store(backend, workdir, name)
    try:
        workload = await OutcomeWorkload.seeded(
            seeder, store, batch_ids(cfg.batches, prefix=name), cfg.essays
        )
        deliveries = await workload.prepare(store)
        service = PipelineService(store, profile=seeder.profile, clock=ManualClock(seeder.now))
        sink = Sink()
        relay = OutboxRelay(store, sink, service.clock)
        exporter = CountingExporter()
        provider = _provider(mode, exporter)
        with sdk_installed(provider):
            gc.collect()
            gc.freeze()  # as serve does before it consumes
            started = time.process_time_ns()
            await _deliver(service, relay, deliveries, cfg.unit)
            if provider is not None:
                provider.force_flush()
            cpu = time.process_time_ns() - started
            gc.unfreeze()
        if provider is not None:
            provider.shutdown()
        if sink.published != workload.expected_messages:
            raise RuntimeError(f"expected {workload.expected_messages} published, got {sink.published}")
        await workload.check(store)
        return Round(cpu / 1000 / len(deliveries), exporter.spans, exporter.attributes)
    finally:
        await close()


async def _deliver(
    service: PipelineService, relay: OutboxRelay, deliveries: Sequence[Delivery], unit: int
) -> None:
    for start in range(0, len(deliveries), unit):
        chunk = deliveries[start : start + unit]
        results = await service.handle_many(chunk, traces=[()] * len(chunk))
        for result in results:
            if isinstance(result, BaseException):
                raise result
        await relay.drain()


async def measure(cfg: Config, backend: str, workdir: Path, log: Log) -> Results:
    results = Results()
    await one_round(
        replace(cfg, batches=max(10, cfg.batches // 4)), backend, workdir, f"{backend}-warm", True
    )
    for index in range(cfg.rounds):
        order = (False, True) if index % 2 == 0 else (True, False)
        for traced in order:
            done = await one_round(cfg, backend, workdir, f"{backend}-{index}-{int(traced)}", traced)
            (results.on if traced else results.off).append(done.cpu_us)
            if traced:
                results.spans += done.spans
                results.attributes += done.attributes
                results.outcomes += 2 * cfg.batches
        log(f"{backend} round {index + 1}: µs per outcome off {results.off[-1]:.1f}, on {results.on[-1]:.1f}")
    return results


async def split(cfg: Config, backend: str, workdir: Path, log: Log) -> dict[str, float]:
    """Median CPU µs per outcome of each of :data:`MODES`, interleaved rounds (rotated order)."""
    found: dict[str, list[float]] = {mode: [] for mode in MODES}
    for index in range(cfg.rounds):
        order = MODES[index % len(MODES) :] + MODES[: index % len(MODES)]
        for mode in order:
            done = await one_round(cfg, backend, workdir, f"{backend}-{index}-{mode}", mode)
            found[mode].append(done.cpu_us)
        log(f"{backend} round {index + 1}: " + ", ".join(f"{m} {found[m][-1]:.1f}" for m in MODES))
    return {mode: statistics.median(values) for mode, values in found.items()}


def _listed(values: Sequence[float]) -> str:
    return ", ".join(f"{v:.1f}" for v in values)


def rows(found: dict[str, Results]) -> list[Row]:
    out = []
    for backend, res in found.items():
        ratios = [on / off for on, off in zip(res.on, res.off, strict=True)]
        per_round = ", ".join(f"{r:.3f}" for r in ratios)
        out.append(
            Row(
                figure=f"tracing_cpu_per_outcome[{backend}]",
                description=(
                    f"CPU µs per outcome in process ({backend} store, handle_many in units of 25 + relay), "
                    "tracing on: SDK, batch span processor, every span sampled, exported and let go"
                ),
                value=statistics.median(res.on),
                unit="µs",
                baseline=statistics.median(res.off),
                baseline_description="the same, no tracer provider; median of interleaved rounds",
                ratio=statistics.median(ratios),
                target=Target("ratio", "<=", 1.05, "≤ 1.05x"),
                spread=f"n={len(ratios)}, ratios {min(ratios):.3f}..{max(ratios):.3f}",
                notes=(
                    f"per-round ratios on/off: {per_round}",
                    f"off µs: {_listed(res.off)}; on µs: {_listed(res.on)}",
                    f"per outcome: {res.spans / max(1, res.outcomes):.2f} spans, "
                    f"{res.attributes / max(1, res.outcomes):.1f} attributes exported",
                ),
            )
        )
    return out


async def run_async(cfg: Config, log: Log) -> list[Row]:
    found: dict[str, Results] = {}
    with tempfile.TemporaryDirectory(prefix="tracing-cost-") as tmp:
        for backend in cfg.backends:
            found[backend] = await measure(cfg, backend, Path(tmp), log)
    return rows(found)


def run(cfg: Config, log: Log) -> list[Row]:
    return asyncio.run(run_async(cfg, log))


def profile(cfg: Config, backend: str) -> str:
    """One traced round under cProfile: calls per outcome of the tracing functions, the top
    of the profile by own time."""

    async def go() -> None:
        with tempfile.TemporaryDirectory(prefix="tracing-profile-") as tmp:
            await one_round(cfg, backend, Path(tmp), "profiled", True)

    profiler = cProfile.Profile()
    profiler.enable()
    asyncio.run(go())
    profiler.disable()
    stats = pstats.Stats(profiler)
    outcomes = 2 * cfg.batches
    watched = (
        "start_span",
        "attach",
        "detach",
        "set_span_in_context",
        "get_current_span",
        "set_attributes",
        "set_attribute",
        "_clean_attribute",
        "is_recording",
        "end",
        "evolve",
    )
    lines = [f"calls per outcome ({outcomes} outcomes, {backend}, traced; the set-up is profiled too):"]
    per_name: dict[str, int] = {}
    for (filename, _, name), (_, ncalls, *_rest) in stats.stats.items():  # type: ignore[attr-defined]
        if name in watched and ("opentelemetry" in filename or "pipeline_state" in filename):
            per_name[name] = per_name.get(name, 0) + ncalls
    lines += [f"  {name}: {count / outcomes:.2f}" for name, count in sorted(per_name.items())]
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(35)
    return "\n".join(lines) + "\n" + text.getvalue()


def _cpu_us(action: Callable[[], object], calls: int, after: Callable[[], object] | None = None) -> float:
    """CPU µs per call of ``action`` (median of 5 runs of ``calls``; ``after`` inside the timing)."""
    runs = []
    for _ in range(5):
        started = time.process_time_ns()
        for _ in range(calls):
            action()
        if after is not None:
            after()
        runs.append((time.process_time_ns() - started) / calls / 1000)
    return statistics.median(runs)


async def _sample_result(seeder: Seeder) -> tuple[str, HandleResult]:
    """A real spellcheck outcome's result (the workload's first message), untraced."""
    store = InMemoryStore()
    ready = seeder.ready("sample", 5)
    await seeder.commit(store, ready, None)
    deliveries = await OutcomeWorkload(seeder, [ready]).prepare(store)
    service = PipelineService(store, profile=seeder.profile, clock=ManualClock(seeder.now))
    topic, raw = deliveries[0]
    return topic, await service.handle_message(topic, raw)


def breakdown(calls: int = 20_000) -> list[tuple[str, float, str]]:
    """What one outcome's tracing is made of, each piece timed alone (CPU µs per call):
    the SDK's span (with no processor, then through the batch processor and an exporter
    that lets the spans go), an attribute, and each of the library's helpers."""
    from opentelemetry.context import Context

    from pipeline_state._tracing import (
        carrier_of,
        continued,
        current_trace_context,
        entered,
        for_publish,
        result_attributes,
        with_span_ids,
    )

    topic, result = asyncio.run(_sample_result(Seeder()))
    attributes = result_attributes(topic, result)
    message = result.messages[0]
    bare = TracerProvider()
    batched = TracerProvider()
    batched.add_span_processor(BatchSpanProcessor(CountingExporter()))
    out: list[tuple[str, float, str]] = []
    with sdk_installed(bare):
        tracer = bare.get_tracer("bench")
        parent = Context()
        out.append(
            ("SDK span, no processor", _cpu_us(lambda: tracer.start_span("p", parent).end(), calls), "sdk")
        )
        span_with = _cpu_us(lambda: tracer.start_span("p", parent, attributes=attributes).end(), calls)
    per_attribute = (span_with - out[0][1]) / len(attributes)
    out.append((f"SDK attribute (the {len(attributes)} of a process span, each)", per_attribute, "sdk"))
    with sdk_installed(batched):
        tracer = batched.get_tracer("bench")
        through = _cpu_us(lambda: tracer.start_span("p", parent).end(), calls, batched.force_flush)
    out.append(("SDK batch processor + exporter, per span", through - out[0][1], "sdk"))
    with sdk_installed(bare):
        span = tracer_span = bare.get_tracer("bench").start_span("p")
        tracer_span.end()
        context = message.trace_context or carrier_of(span)

        def in_span() -> None:
            with entered(span):
                current_trace_context()

        out.append(("continued: read a traceparent", _cpu_us(lambda: continued(context), calls), "library"))
        out.append(("carrier_of: write a traceparent", _cpu_us(lambda: carrier_of(span), calls), "library"))
        out.append(("entered + current_trace_context", _cpu_us(in_span, calls), "library"))
        out.append(("result_attributes", _cpu_us(lambda: result_attributes(topic, result), calls), "library"))
        out.append(("with_span_ids", _cpu_us(lambda: with_span_ids(span, result), calls), "library"))
        out.append(("for_publish", _cpu_us(lambda: for_publish(message, span), calls), "library"))
    batched.shutdown()
    return out


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/tracing_cost.py", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: shows it runs, figures meaningless")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 9)")
    parser.add_argument("--batches", type=int, help="batches per round, two outcomes each (default 400)")
    parser.add_argument("--backends", help="memory,sqlite,postgres (default memory,sqlite)")
    parser.add_argument("--unit", type=int, help="messages per handle_many call (default 25)")
    parser.add_argument("--profile", metavar="BACKEND", help="profile one traced round instead")
    parser.add_argument("--breakdown", action="store_true", help="time each piece of a span alone instead")
    parser.add_argument(
        "--once",
        choices=MODES,
        help="run one round of one mode on the first backend and print nothing (to count its "
        "instructions: valgrind --tool=cachegrind --cache-sim=no python bench/tracing_cost.py --once on)",
    )
    parser.add_argument(
        "--split",
        action="store_true",
        help="measure the modes off, unsampled, unexported, on in interleaved rounds instead",
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the figures as JSON")
    parser.add_argument("--fail-on-miss", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    cfg = QUICK if args.quick else Config()
    if args.rounds:
        cfg = replace(cfg, rounds=args.rounds)
    if args.batches:
        cfg = replace(cfg, batches=args.batches)
    if args.unit:
        cfg = replace(cfg, unit=args.unit)
    if args.backends:
        cfg = replace(cfg, backends=tuple(b.strip() for b in args.backends.split(",") if b.strip()))
    unknown = set(cfg.backends) - {"memory", "sqlite", "postgres"}
    if unknown:
        parser.error(f"unknown backend(s): {', '.join(sorted(unknown))}")
    if args.profile:
        print(profile(cfg, args.profile))
        return 0
    if args.once:
        with tempfile.TemporaryDirectory(prefix="tracing-once-") as tmp:
            asyncio.run(one_round(cfg, cfg.backends[0], Path(tmp), "once", args.once))
        return 0
    if args.split:
        for backend in cfg.backends:
            with tempfile.TemporaryDirectory(prefix="tracing-split-") as tmp:
                medians = asyncio.run(split(cfg, backend, Path(tmp), _log))
            off = medians["off"]
            print(f"{backend}: " + ", ".join(f"{m} {v:.1f} µs (+{v - off:.1f})" for m, v in medians.items()))
        return 0
    if args.breakdown:
        for name, us, kind in breakdown(2_000 if args.quick else 20_000):
            print(f"{kind:8s} {us:7.2f} µs  {name}")
        return 0
    return headline_and_report(
        "tracing_cost",
        "tracing cost in process (issue 15, point 6)",
        lambda: run(cfg, _log),
        quick=args.quick,
        json_path=args.json,
        fail_on_miss=args.fail_on_miss,
    )


if __name__ == "__main__":
    sys.exit(main())
