"""CPU per outcome of what ``serve`` does, in process, on the memory store, SQLite and
PostgreSQL: ``python bench/serve_cpu.py [--backends memory,sqlite,postgres] [--batches N]
[--unit N] [--rounds R] [--profile BACKEND] [--once BACKEND [--skip]]`` (PostgreSQL from
``PIPELINE_STATE_TEST_POSTGRES``, a new schema per round).

The work of ``serve`` per inbound record without the broker, as ``serve`` wires it: the
service's :meth:`~pipeline_state.PipelineService.handle_many` in units of ``--unit`` (25)
messages, then the relay's passes, each message encoded into its Kafka record as
``serve``'s publisher encodes it (:class:`RecordSink`; the broker's acknowledgement is
immediate). On SQLite the store hands its committed rows to the relay
(``attach_relay``, as ``serve`` does by default): passes publish without claiming
(``claim=False, mark=False``) until nothing handed is left, then the published rows are
marked with one statement, and one claim pass picks up the rows left to the claim. The
memory store has no hand-off: one claiming pass per unit. The workload is the core
benchmark's (:mod:`bench._workload`): per batch a spellcheck outcome (which dispatches CJ)
and a CJ outcome (which completes the run and notifies).

The figure is CPU time (every thread of the process, :func:`time.process_time`) per outcome,
the median over ``--rounds`` interleaved rounds, each on a fresh store. ``--once BACKEND``
runs one round and prints nothing, for an instruction count no other load changes:
``valgrind --tool=cachegrind --cache-sim=no python bench/serve_cpu.py --once sqlite``
minus the same with ``--skip`` (everything but the deliveries), divided by the outcomes
(``2 x --batches``), is the work per outcome. ``--profile BACKEND`` prints the top of a
cProfile of one round's deliveries.
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
import cProfile  # noqa: E402
import gc  # noqa: E402
import io  # noqa: E402
import os  # noqa: E402
import pstats  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Sequence  # noqa: E402

from pipeline_state_kafka.codec import encode_message  # noqa: E402

from bench._workload import Delivery, OutcomeWorkload, Seeder, batch_ids, fresh_store  # noqa: E402
from bench.tracing_cost import Sink  # noqa: E402
from pipeline_state import ManualClock, PipelineService  # noqa: E402
from pipeline_state._relay import OutboxRelay  # noqa: E402
from pipeline_state.ports import OutboxMessage  # noqa: E402

BACKENDS = ("memory", "sqlite", "postgres")


class RecordSink(Sink):
    """The relay's publisher as ``serve``'s does its own part: each message encoded into its
    Kafka record (value, key, headers), then let go as if the broker had acknowledged it."""

    async def publish(self, messages: Sequence[OutboxMessage]) -> Sequence[BaseException | None]:
        for message in messages:
            encode_message(message)
        return await super().publish(messages)


async def _deliver(
    service: PipelineService, relay: OutboxRelay, deliveries: Sequence[Delivery], unit: int, hand_off: bool
) -> None:
    for start in range(0, len(deliveries), unit):
        chunk = deliveries[start : start + unit]
        for result in await service.handle_many(chunk, traces=[()] * len(chunk)):
            if isinstance(result, BaseException):
                raise result
        await after_unit(relay, hand_off)


async def after_unit(relay: OutboxRelay, hand_off: bool) -> None:
    """The relay's work after a unit of work, as ``serve`` does it: with the hand-off, passes
    that publish the handed rows without claiming, one statement marking them, and a claim
    pass when one is due; without it, claiming passes until nothing is left."""
    if not hand_off:
        await _drain(relay)
        return
    while relay.handed:
        await relay.run_once(claim=False, mark=False)
    await relay.flush_marks()
    if relay.claim_due:
        await _drain(relay)


async def _drain(relay: OutboxRelay) -> None:
    """Claiming passes until one publishes nothing."""
    while (await relay.run_once()).published:
        pass


async def one_round(
    backend: str,
    batches: int,
    unit: int,
    workdir: Path,
    name: str,
    *,
    skip: bool = False,
    profiler: cProfile.Profile | None = None,
    verbose: bool = True,
) -> float:
    """One round on a fresh store: CPU µs per outcome of the deliveries (0 with ``skip``)."""
    seeder = Seeder()
    store, close = await fresh_store(backend, workdir, name)
    try:
        workload = await OutcomeWorkload.seeded(seeder, store, batch_ids(batches, prefix=name), 5)
        deliveries = await workload.prepare(store)
        service = PipelineService(store, profile=seeder.profile, clock=ManualClock(seeder.now))
        sink = RecordSink()
        relay = OutboxRelay(store, sink, service.clock)
        hand_off = hasattr(store, "attach_relay")
        if hand_off:
            store.attach_relay(relay.hand_off, service.clock)
        if skip:
            return 0.0
        gc.collect()
        gc.freeze()  # as serve does before it consumes (unfrozen after the round)
        if profiler is not None:
            profiler.enable()
        started, main, times = time.process_time_ns(), time.thread_time_ns(), os.times()
        await _deliver(service, relay, deliveries, unit, hand_off)
        cpu = time.process_time_ns() - started
        gc.unfreeze()
        main = time.thread_time_ns() - main
        system = os.times().system - times.system
        if verbose:
            n = len(deliveries)
            print(
                f"  {backend}: {cpu / 1000 / n:.1f} µs per outcome: main thread {main / 1000 / n:.1f},"
                f" in the kernel {system * 1e6 / n:.1f}"
            )
        if profiler is not None:
            profiler.disable()
        await _drain(relay)  # whatever is left to the claim
        if sink.published != workload.expected_messages:
            raise RuntimeError(f"expected {workload.expected_messages} published, got {sink.published}")
        await workload.check(store)
        return cpu / 1000 / len(deliveries)
    finally:
        await close()


async def measure(backends: Sequence[str], batches: int, unit: int, rounds: int) -> dict[str, list[float]]:
    found: dict[str, list[float]] = {b: [] for b in backends}
    with tempfile.TemporaryDirectory(prefix="serve-cpu-") as tmp:
        for backend in backends:  # warm-up
            await one_round(backend, max(10, batches // 4), unit, Path(tmp), f"{backend}-warm")
        for index in range(rounds):
            order = list(backends) if index % 2 == 0 else list(reversed(backends))
            for backend in order:
                found[backend].append(
                    await one_round(backend, batches, unit, Path(tmp), f"{backend}-{index}")
                )
            print(f"round {index + 1}: " + ", ".join(f"{b} {found[b][-1]:.1f} µs" for b in backends))
    return found


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default="memory,sqlite")
    parser.add_argument("--batches", type=int, default=400)
    parser.add_argument("--unit", type=int, default=25)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--profile", choices=BACKENDS)
    parser.add_argument("--once", choices=BACKENDS)
    parser.add_argument("--skip", action="store_true", help="with --once: everything but the deliveries")
    args = parser.parse_args(argv)
    if args.once:
        with tempfile.TemporaryDirectory(prefix="serve-cpu-") as tmp:
            asyncio.run(one_round(args.once, args.batches, args.unit, Path(tmp), "once", skip=args.skip))
        return
    if args.profile:
        profiler = cProfile.Profile(time.thread_time_ns, 1e-9)  # this thread's CPU, not waits
        with tempfile.TemporaryDirectory(prefix="serve-cpu-") as tmp:
            asyncio.run(one_round(args.profile, args.batches, args.unit, Path(tmp), "p", profiler=profiler))
        text = io.StringIO()
        stats = pstats.Stats(profiler, stream=text)
        stats.sort_stats("tottime").print_stats(45)
        stats.sort_stats("cumulative").print_stats(60)
        print(text.getvalue())
        return
    found = asyncio.run(measure(args.backends.split(","), args.batches, args.unit, args.rounds))
    medians = {b: statistics.median(v) for b, v in found.items()}
    print("median CPU µs per outcome: " + ", ".join(f"{b} {m:.1f}" for b, m in medians.items()))
    for durable in ("sqlite", "postgres"):
        if "memory" in medians and durable in medians:
            print(f"{durable} / memory: {medians[durable] / medians['memory']:.2f}x")


if __name__ == "__main__":
    main()
