"""The Prometheus metrics' cost in process (issue 15, point 6): ``python bench/metrics_cost.py
[--quick] [--rounds R] [--batches N] [--unit N] [--backends memory,sqlite,postgres]
[--scrape-every N] [--once MODE [--skip]]``.

What ``serve`` does per inbound record, without the broker, as
``bench/tracing_cost.py`` measures it, but through the Kafka adapter's batch handler
(:func:`~pipeline_state_kafka.handlers.service_batch_handler`: ``handle_many`` in units of
``--unit`` messages, each result summarised for the consumer) and with the consumer's and
the relay's bookkeeping, in two modes:

* ``off``: no metrics (``serve`` without ``--metrics``);
* ``on``: what ``serve --metrics`` adds: a :class:`~pipeline_state_kafka.metrics.ServiceMetrics`
  with the store gauges' sampler (which reads the store at most every 10 s: timed against
  the outcomes handled at :data:`RATE` a second, so within a round it answers from its last
  reading, as in ``serve``; one reading's own cost is timed after the round and reported
  apart, with its share per outcome), the unit of work timed into the decision histogram, each
  record counted by topic and result (and its completions remembered for the completion
  latency), the relay's publisher wrapped in
  :class:`~pipeline_state_kafka.metrics.MeteredPublisher`, and a scrape of the whole
  exposition every ``--scrape-every`` outcomes (default 400: one scrape a second at 400
  outcomes/s, more scrapes per outcome than ``serve`` sees at its rates of 1,000 and more,
  and 15 times more than Prometheus's default interval of 15 s).

On the SQL stores the relay is attached as ``serve`` attaches it (committed rows handed over,
published without a claim, marked once per unit; see ``bench/serve_cpu.py``).

The modes run in ``--rounds`` interleaved rounds (their order alternates), each on a fresh
store with the same batches, after a collection and ``gc.freeze()`` as ``serve`` does; the
figure is CPU time of the process per outcome (:func:`time.process_time`), the median over
the rounds, and the ratio on/off the median of the rounds' ratios. ``--once MODE`` runs one
round of one mode and prints nothing, for an instruction count (``valgrind
--tool=cachegrind``) that no other load on the machine changes: ``--once on`` minus ``--once
off`` over the outcomes (2 per batch) is what the metrics add per outcome; ``--once off``
minus ``--once off --skip`` is the work they are added to.
"""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
if __package__ in (None, ""):
    sys.path.insert(0, str(_HERE.parent))

import argparse  # noqa: E402
import asyncio  # noqa: E402
import gc  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from dataclasses import dataclass, field, replace  # noqa: E402

from pipeline_state_kafka.gauges import StoreSampler  # noqa: E402
from pipeline_state_kafka.handlers import service_batch_handler  # noqa: E402
from pipeline_state_kafka.metrics import MeteredPublisher, ServiceMetrics  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from bench._util import Row, Target, headline_and_report  # noqa: E402
from bench._workload import OutcomeWorkload, Seeder, batch_ids, fresh_store  # noqa: E402
from bench.serve_cpu import after_unit  # noqa: E402
from bench.tracing_cost import Sink  # noqa: E402
from pipeline_state import ManualClock, PipelineService  # noqa: E402
from pipeline_state._relay import OutboxRelay  # noqa: E402
from pipeline_state.errors import PipelineStateError  # noqa: E402

__all__ = ["FIGURES", "QUICK", "Config", "main", "run", "run_async"]

FIGURES = ("metrics_cpu_per_outcome",)
BACKENDS = ("memory", "sqlite", "postgres")
MODES = ("off", "on")

Log = Callable[[str], None]


@dataclass(frozen=True)
class Config:
    batches: int = 400
    """Batches per round (two outcomes each)."""
    rounds: int = 9
    unit: int = 25
    essays: int = 5
    scrape_every: int = 400
    """Outcomes between two scrapes of the exposition (``on`` only)."""
    backends: tuple[str, ...] = ("memory", "sqlite")


QUICK = Config(batches=20, rounds=2, scrape_every=10)

RATE = 1_000.0
"""Outcomes a second that the store gauges' sampler is timed against: the order of ``serve``'s
rate on the durable stores. The sampler reads the store at most every :data:`READ_EVERY`
seconds (``serve``'s default), so at this rate once per 10,000 outcomes."""
READ_EVERY = 10.0
READINGS = 5
"""Forced readings of the store gauges timed after each ``on`` round (reported apart)."""


@dataclass
class Round:
    cpu_us: float
    counted: float = 0.0
    """``on``: the records ``pipeline_state_messages_total`` counted at the last scrape."""
    scrapes: int = 0
    reading_us: float = 0.0
    """``on``: CPU µs of one reading of the store gauges, measured after the round."""


async def one_round(
    cfg: Config, backend: str, workdir: Path, name: str, mode: str, *, skip: bool = False
) -> Round:
    """One mode of one round on a fresh store: CPU µs per outcome (``skip``: everything but
    the deliveries, for an instruction count of the set-up alone)."""
    seeder = Seeder()
    store, close = await fresh_store(backend, workdir, name)
    try:
        workload = await OutcomeWorkload.seeded(
            seeder, store, batch_ids(cfg.batches, prefix=name), cfg.essays
        )
        deliveries = await workload.prepare(store)
        service = PipelineService(store, profile=seeder.profile, clock=ManualClock(seeder.now))
        handler = service_batch_handler(service)
        sink = Sink()
        done = [0]  # outcomes handled: the sampler's clock, at RATE outcomes a second
        sampler = StoreSampler(store, store, min_interval=READ_EVERY, clock=lambda: done[0] / RATE)
        metrics = ServiceMetrics(sampler) if mode == "on" else None
        if metrics is not None:  # read at the scrape before this slice of serve's life
            await sampler.read()
        publisher = sink if metrics is None else MeteredPublisher(sink, metrics)
        relay = OutboxRelay(store, publisher, service.clock)
        hand_off = hasattr(store, "attach_relay")
        if hand_off:  # as serve does: committed rows go to the relay without a claim
            store.attach_relay(relay.hand_off, service.clock)
        found = Round(0.0)
        if skip:
            return found
        gc.collect()
        gc.freeze()  # as serve does before it consumes
        started = time.process_time_ns()
        since_scrape = 0
        for start in range(0, len(deliveries), cfg.unit):
            chunk = deliveries[start : start + cfg.unit]
            begun = time.monotonic()
            results = await handler(chunk, [()] * len(chunk))
            if metrics is not None:  # what the consumer does after a unit of work
                metrics.unit_of_work(time.monotonic() - begun)
            for (topic, _), result in zip(chunk, results, strict=True):
                if isinstance(result, PipelineStateError):
                    raise result
                if metrics is not None:
                    metrics.handled(topic, result, consumed_at=begun)
            await after_unit(relay, hand_off)
            since_scrape += len(chunk)
            done[0] += len(chunk)
            if metrics is not None and since_scrape >= cfg.scrape_every:
                since_scrape = 0
                await metrics.exposition()
                found.scrapes += 1
        cpu = time.process_time_ns() - started
        gc.unfreeze()
        await relay.drain()  # whatever is left to the claim
        if sink.published != workload.expected_messages:
            raise RuntimeError(f"expected {workload.expected_messages} published, got {sink.published}")
        await workload.check(store)
        if metrics is not None:
            text = (await metrics.exposition()).decode()
            found.counted = sum(
                sample.value
                for family in text_string_to_metric_families(text)
                if family.name == "pipeline_state_messages"
                for sample in family.samples
                if sample.name == "pipeline_state_messages_total"
            )
            if found.counted != len(deliveries):
                raise RuntimeError(f"the metrics counted {found.counted} records of {len(deliveries)}")
            forced = StoreSampler(store, store, min_interval=0)
            began = time.process_time_ns()
            for _ in range(READINGS):
                await forced.read()
            found.reading_us = (time.process_time_ns() - began) / 1000 / READINGS
        found.cpu_us = cpu / 1000 / len(deliveries)
        return found
    finally:
        await close()


@dataclass
class Results:
    off: list[float]
    on: list[float]
    scrapes: int = 0
    outcomes: int = 0
    readings: list[float] = field(default_factory=list)


async def measure(cfg: Config, backend: str, workdir: Path, log: Log) -> Results:
    found = Results([], [])
    warm = replace(cfg, batches=max(10, cfg.batches // 4))
    await one_round(warm, backend, workdir, f"{backend}-warm", "on")
    for index in range(cfg.rounds):
        order = MODES if index % 2 == 0 else MODES[::-1]
        for mode in order:
            done = await one_round(cfg, backend, workdir, f"{backend}-{index}-{mode}", mode)
            getattr(found, mode).append(done.cpu_us)
            if mode == "on":
                found.scrapes += done.scrapes
                found.outcomes += 2 * cfg.batches
                found.readings.append(done.reading_us)
        log(f"{backend} round {index + 1}: µs per outcome off {found.off[-1]:.1f}, on {found.on[-1]:.1f}")
    return found


def rows(found: dict[str, Results]) -> list[Row]:
    out = []
    for backend, res in found.items():
        ratios = [on / off for on, off in zip(res.on, res.off, strict=True)]
        out.append(
            Row(
                figure=f"metrics_cpu_per_outcome[{backend}]",
                description=(
                    f"CPU µs per outcome in process ({backend} store, the Kafka batch handler in units of 25 "
                    "+ relay), Prometheus metrics on: counters, histograms, store gauges, scraped"
                ),
                value=statistics.median(res.on),
                unit="µs",
                baseline=statistics.median(res.off),
                baseline_description="the same without metrics; median of interleaved rounds",
                ratio=statistics.median(ratios),
                target=Target("ratio", "<=", 1.05, "≤ 1.05x"),
                spread=f"n={len(ratios)}, ratios {min(ratios):.3f}..{max(ratios):.3f}",
                notes=(
                    "per-round ratios on/off: " + ", ".join(f"{r:.3f}" for r in ratios),
                    "off µs: " + ", ".join(f"{v:.1f}" for v in res.off),
                    "on µs: " + ", ".join(f"{v:.1f}" for v in res.on),
                    f"{res.scrapes} scrapes over {res.outcomes} outcomes",
                    f"one reading of the store gauges: {statistics.median(res.readings):.0f} µs of CPU "
                    f"(median of {len(res.readings) * READINGS}), at most one per {READ_EVERY:.0f} s: "
                    f"{statistics.median(res.readings) / (READ_EVERY * RATE):.2f} µs per outcome at "
                    f"{RATE:,.0f} outcomes/s",
                ),
            )
        )
    return out


async def run_async(cfg: Config, log: Log) -> list[Row]:
    found: dict[str, Results] = {}
    with tempfile.TemporaryDirectory(prefix="metrics-cost-") as tmp:
        for backend in cfg.backends:
            found[backend] = await measure(cfg, backend, Path(tmp), log)
    return rows(found)


def run(cfg: Config, log: Log) -> list[Row]:
    return asyncio.run(run_async(cfg, log))


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/metrics_cost.py", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: shows it runs, figures meaningless")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 9)")
    parser.add_argument("--batches", type=int, help="batches per round, two outcomes each (default 400)")
    parser.add_argument("--backends", help="memory,sqlite,postgres (default memory,sqlite)")
    parser.add_argument("--unit", type=int, help="messages per unit of work (default 25)")
    parser.add_argument("--scrape-every", type=int, help="outcomes between two scrapes (default 400)")
    parser.add_argument("--once", choices=MODES, help="one round of one mode on the first backend, no output")
    parser.add_argument("--skip", action="store_true", help="with --once: everything but the deliveries")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the figures as JSON")
    parser.add_argument("--fail-on-miss", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    cfg = QUICK if args.quick else Config()
    for name in ("rounds", "batches", "unit", "scrape_every"):
        if getattr(args, name):
            cfg = replace(cfg, **{name: getattr(args, name)})
    if args.backends:
        cfg = replace(cfg, backends=tuple(b.strip() for b in args.backends.split(",") if b.strip()))
    unknown = set(cfg.backends) - set(BACKENDS)
    if unknown:
        parser.error(f"unknown backend(s): {', '.join(sorted(unknown))}")
    if args.once:
        with tempfile.TemporaryDirectory(prefix="metrics-once-") as tmp:
            asyncio.run(one_round(cfg, cfg.backends[0], Path(tmp), "once", args.once, skip=args.skip))
        return 0
    return headline_and_report(
        "metrics_cost",
        "metrics cost in process (issue 15, point 6)",
        lambda: run(cfg, _log),
        quick=args.quick,
        json_path=args.json,
        fail_on_miss=args.fail_on_miss,
    )


if __name__ == "__main__":
    sys.exit(main())
