"""The core benchmark: issue 2, point 10.

Four figures, each against a baseline measured in the same run:

1. ``outcome_e2e`` - phase outcomes handled end to end in memory (parse the envelope
   bytes, dedupe, load, decide, encode the outputs, commit to the in-memory store, relay
   to the in-memory bus) through :meth:`InMemoryRuntime.deliver`, in events/s;
2. ``decide_dispatch`` / ``decide_complete`` - one :func:`decide` call against one raw
   ``transitions`` trigger (and ``decide_vs_dict``, ``trigger_vs_dict`` against a dict lookup);
3. ``memory_idle_batch`` - bytes per idle batch with many batches in the store (and, for
   information, after one completed run and through the full service path);
4. ``cost_100k_vs_1k`` - cost per event with the large store against the small one.

The order matters: the small-store timings run before the large store exists and again
after it is freed (the garbage collector walks every live object, so a large store slows
the whole process, not just its own batches).
"""

from __future__ import annotations

import asyncio
import gc
import json
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace

from transitions import Machine

from pipeline_state import InMemoryRuntime, ManualClock, Profile
from pipeline_state._commands import Command
from pipeline_state._decide import decide
from pipeline_state._lifecycle import PHASE_LIFECYCLE
from pipeline_state.ports import BatchState
from pipeline_state.profiles.huleedu.events import parse_message

from ._util import Row, Sample, Stopwatch, Target, per_call_ns, traced
from ._workload import Delivery, OutcomeWorkload, Seeder, batch_ids, iter_batch_ids, outcomes

__all__ = ["FIGURES", "QUICK", "Config", "run"]

FIGURES: tuple[str, ...] = (
    "outcome_e2e",
    "decide_dispatch",
    "decide_complete",
    "decide_vs_dict",
    "trigger_vs_dict",
    "memory_idle_batch",
    "memory_after_run",
    "memory_service_path",
    "cost_100k_vs_1k",
)
"""Names of the figures :func:`run` reports, in order."""

Log = Callable[[str], None]


@dataclass(frozen=True)
class Config:
    """Sizes of one run; the defaults keep a run within about three minutes on two cores."""

    essays: int = 5
    micro_reps: int = 7
    decide_calls: int = 2_000
    trigger_calls: int = 20_000
    lookup_calls: int = 1_000_000
    e2e_reps: int = 5
    workload_batches: int = 1_000
    small_store: int = 1_000
    large_store: int = 100_000
    history_batches: int = 10_000
    service_batches: int = 2_000


QUICK = Config(
    micro_reps=3,
    decide_calls=200,
    trigger_calls=2_000,
    lookup_calls=50_000,
    e2e_reps=2,
    workload_batches=50,
    small_store=100,
    large_store=1_000,
    history_batches=100,
    service_batches=100,
)
"""Tiny sizes that only show the benchmark runs (figures are not meaningful)."""


# -- figure 2: one decision against one raw transitions trigger and a dict lookup ---------


class _Holder:
    """A plain object with a ``state`` attribute, never registered with any machine."""

    def __init__(self, state: str) -> None:
        self.state = state


def _phase_machine() -> Machine:
    """A bare ``transitions`` machine for the phase lifecycle, with no models."""
    return Machine(
        model=None,
        states=list(PHASE_LIFECYCLE.states),
        initial=PHASE_LIFECYCLE.initial,
        transitions=[
            {"trigger": t.trigger, "source": list(t.sources), "dest": t.dest}
            for t in PHASE_LIFECYCLE.transitions
        ],
        auto_transitions=False,
    )


def _command(delivery: Delivery, profile: Profile) -> Command:
    """The command the service hands ``decide``: the payload read as the profile's engine input."""
    envelope, value = profile.inbound.parse(*delivery)
    return Command(value, str(envelope.event_id), str(envelope.correlation_id))


def _representative_outcomes(seeder: Seeder, essays: int) -> tuple[BatchState, Command, BatchState, Command]:
    """(state, spellcheck outcome) that dispatches CJ, and (state, CJ outcome) that completes."""
    correlation_id = "7b1f3c52-34a4-4a55-9a8e-0d4f1f0e6a11"
    active = seeder.start_run(seeder.ready("decide-batch", essays), correlation_id)
    spell, cj = (
        (topic, _json(env))
        for topic, env in outcomes(seeder.envelopes, active, correlation_id, fail_one=False)
    )
    spell_cmd, cj_cmd = _command(spell, seeder.profile), _command(cj, seeder.profile)
    dispatched = decide(active, spell_cmd, profile=seeder.profile, now=seeder.now)
    completed = decide(dispatched.state, cj_cmd, profile=seeder.profile, now=seeder.now)
    if dispatched.state is None or completed.state is None or completed.state.active_run is not None:
        raise RuntimeError("the representative outcomes did not apply")
    return active, spell_cmd, dispatched.state, cj_cmd


def _json(envelope: dict[str, object]) -> bytes:
    return json.dumps(envelope).encode()


def decision_rows(config: Config, seeder: Seeder, log: Log) -> list[Row]:
    active, spell_cmd, dispatched, cj_cmd = _representative_outcomes(seeder, config.essays)
    profile, now = seeder.profile, seeder.now
    machine = _phase_machine()
    succeed = machine.events["succeed"]
    source = "dispatch_initiated"
    holder = _Holder(source)
    if not succeed.trigger(holder) or holder.state != "completed_successfully":
        raise RuntimeError("the raw transitions trigger did not move the holder")
    table = {(s, t.trigger): t.dest for t in PHASE_LIFECYCLE.transitions for s in t.sources}
    key = (source, "succeed")

    def trigger_loop(n: int) -> None:
        for _ in range(n):
            holder.state = source
            succeed.trigger(holder)

    def lookup_loop(n: int) -> str:
        dest = ""
        for _ in range(n):
            dest = table[key]
        return dest

    def empty_loop(n: int) -> None:
        for _ in range(n):
            pass

    def decide_loop(state: BatchState, command: Command) -> Callable[[int], None]:
        def loop(n: int) -> None:
            for _ in range(n):
                decide(state, command, profile=profile, now=now)

        return loop

    spell_loop, cj_loop = decide_loop(active, spell_cmd), decide_loop(dispatched, cj_cmd)
    plan: list[tuple[str, Callable[[int], object], int]] = [
        ("trigger", trigger_loop, config.trigger_calls),
        ("lookup", lookup_loop, config.lookup_calls),
        ("empty", empty_loop, config.lookup_calls),
        ("spell", spell_loop, config.decide_calls),
        ("cj", cj_loop, config.decide_calls),
    ]
    for _, loop, calls in plan:  # warm-up
        loop(max(1, calls // 10))
    samples: dict[str, list[float]] = {name: [] for name, _, _ in plan}
    watch = Stopwatch()
    log(f"decision: {config.micro_reps} interleaved repetitions")
    for _ in range(config.micro_reps):
        for name, loop, calls in plan:
            samples[name].append(per_call_ns(loop, calls, watch) / 1000)  # µs
    trig, look, empty = (Sample(tuple(samples[n])) for n in ("trigger", "lookup", "empty"))
    spell, cj = Sample(tuple(samples["spell"])), Sample(tuple(samples["cj"]))
    mean = Sample(tuple((a + b) / 2 for a, b in zip(samples["spell"], samples["cj"], strict=True)))

    def ratios(top: Sequence[float], bottom: Sequence[float]) -> float:
        return Sample(tuple(a / b for a, b in zip(top, bottom, strict=True))).median

    # Issue 12: each decide at most 1.5x one raw trigger (issue 2 asked for 5x).
    decide_target = Target("ratio", "<=", 1.5, "≤ 1.50x")
    trigger_text = "one raw transitions trigger: Machine(model=None) for the phase lifecycle, "
    trigger_text += "events['succeed'].trigger(obj) on a plain object (state reset each call)"
    loop_note = f"every per-call figure includes the loop itself (an empty loop costs {empty.median:.3f} µs)"
    ratio_note = "ratio: median of the per-repetition ratios (baseline and figure interleaved)"
    return [
        Row(
            "decide_dispatch",
            f"decide() on a spellcheck outcome that dispatches CJ ({config.essays} essays)",
            spell.median,
            "µs",
            trig.median,
            trigger_text,
            ratios(samples["spell"], samples["trigger"]),
            decide_target,
            spread=f"{spell.spread()} µs; baseline {trig.spread()} µs",
            notes=(ratio_note,),
            cpu_share=watch.cpu_share,
        ),
        Row(
            "decide_complete",
            "decide() on a CJ outcome that completes the run (completion event, notification, archive)",
            cj.median,
            "µs",
            trig.median,
            "the same raw transitions trigger",
            ratios(samples["cj"], samples["trigger"]),
            decide_target,
            spread=f"{cj.spread()} µs",
            cpu_share=watch.cpu_share,
        ),
        Row(
            "decide_vs_dict",
            "decide(), mean of the two outcomes above",
            mean.median,
            "µs",
            look.median,
            "one dict lookup of (state, trigger) -> dest",
            ratios(mean.values, samples["lookup"]),
            spread=f"{mean.spread()} µs",
            notes=(loop_note,),
        ),
        Row(
            "trigger_vs_dict",
            "one raw transitions trigger (the baseline of decide_*)",
            trig.median,
            "µs",
            look.median,
            "one dict lookup of (state, trigger) -> dest",
            ratios(samples["trigger"], samples["lookup"]),
        ),
    ]


# -- figures 1, 3 and 4: end to end, memory, cost against store size --------------------


def _runtime(seeder: Seeder) -> InMemoryRuntime:
    return InMemoryRuntime(seeder.profile, clock=ManualClock(seeder.now))


async def _seed_ready(rt: InMemoryRuntime, seeder: Seeder, ids: Iterable[str], essays: int) -> None:
    for batch_id in ids:
        await seeder.commit(rt.store, seeder.ready(batch_id, essays), None)


async def _workload(rt: InMemoryRuntime, seeder: Seeder, ids: Sequence[str], count: int) -> OutcomeWorkload:
    step = max(1, len(ids) // count)
    chosen = ids[::step][:count]
    states = [await rt.store.load(b) for b in chosen]
    return OutcomeWorkload(seeder, [s for s in states if s is not None])


async def _time_outcomes(
    rt: InMemoryRuntime, workload: OutcomeWorkload, reps: int, watch: Stopwatch, *, warmup: int = 1
) -> tuple[list[float], list[float]]:
    """Per repetition: ns per event end to end, and ns per event of parse_message alone."""
    e2e: list[float] = []
    parse: list[float] = []
    for rep in range(warmup + reps):
        deliveries = await workload.prepare(rt.store)
        gc.collect()
        emitted = 0
        start = watch.wall_ns
        with watch:
            for topic, raw in deliveries:
                emitted += len(await rt.deliver(topic, raw))
        elapsed = watch.wall_ns - start
        watch.items += len(deliveries)
        if emitted != workload.expected_messages:
            raise RuntimeError(f"expected {workload.expected_messages} messages, got {emitted}")
        await workload.check(rt.store)
        start = time.perf_counter_ns()
        for topic, raw in deliveries:
            parse_message(topic, raw)
        parsed = time.perf_counter_ns() - start
        if rep >= warmup:
            e2e.append(elapsed / len(deliveries))
            parse.append(parsed / len(deliveries))
    return e2e, parse


def _plain_batches(count: int, essays: int) -> dict[str, dict[str, object]]:
    """The memory baseline: the same data as bare dicts and tuples of fresh strings."""
    out: dict[str, dict[str, object]] = {}
    for batch_id in batch_ids(count):
        out[batch_id] = {
            "batch_id": batch_id,
            "status": "ready_for_pipeline_execution",
            "version": 2,
            "user_id": "teacher-1",
            "course_code": "ENG5",
            "essays": tuple((f"{batch_id}-e{i}", f"{batch_id}-e{i}-text") for i in range(essays)),
        }
    return out


async def store_rows(config: Config, seeder: Seeder, log: Log) -> list[Row]:
    essays = config.essays
    small_ids = batch_ids(config.small_store)
    small = _runtime(seeder)
    await _seed_ready(small, seeder, small_ids, essays)
    small_work = await _workload(small, seeder, small_ids, config.workload_batches)
    log(f"end to end: {small_work.events} outcome events x {config.e2e_reps}, {len(small_ids):,} batches")
    small_watch, large_watch = Stopwatch(), Stopwatch()
    small_e2e, parse = await _time_outcomes(small, small_work, config.e2e_reps, small_watch)

    log(f"memory: seeding {config.large_store:,} idle batches under tracemalloc")
    large = _runtime(seeder)
    large_ids = batch_ids(config.large_store)
    with traced() as idle:
        # Ids are made inside the traced block: the store keeps them.
        await _seed_ready(large, seeder, iter_batch_ids(config.large_store), essays)
    if large.store.batch_count() != config.large_store:
        raise RuntimeError("the large store does not hold every batch")
    idle_per_batch = idle.retained / config.large_store
    with traced() as plain_traced:
        plain = _plain_batches(config.large_store, essays)
    plain_per_batch = plain_traced.retained / config.large_store
    del plain
    large_work = await _workload(large, seeder, large_ids, config.workload_batches)
    log(f"cost: {large_work.events} outcome events x {config.e2e_reps}, {len(large_ids):,} batches")
    large_e2e, _ = await _time_outcomes(large, large_work, config.e2e_reps, large_watch)
    del large, large_work
    gc.collect()
    log("end to end: small store again, after the large one is freed")
    again, parse_again = await _time_outcomes(small, small_work, config.e2e_reps, small_watch, warmup=0)
    small_e2e += again
    parse += parse_again

    log(f"memory: {config.history_batches:,} batches after one completed run")
    with traced() as hist:
        hist_rt = await _seed_after_run(seeder, config.history_batches, essays)
    if hist_rt.store.batch_count() != config.history_batches:
        raise RuntimeError("the history store does not hold every batch")
    history_per_batch = hist.retained / config.history_batches

    log(f"memory: {config.service_batches:,} idle batches through the full runtime")
    service_rt = _runtime(seeder)
    deliveries = _setup_deliveries(seeder, config.service_batches, essays)
    with traced() as svc:
        for topic, raw in deliveries:
            await service_rt.deliver(topic, raw)
    if service_rt.store.batch_count() != config.service_batches:
        raise RuntimeError("the service store does not hold every batch")
    service_per_batch = svc.retained / config.service_batches

    e2e = Sample(tuple(small_e2e))
    large_sample = Sample(tuple(large_e2e))
    eps = Sample(tuple(1e9 / ns for ns in small_e2e))
    parse_eps = Sample(tuple(1e9 / ns for ns in parse))
    e2e_note = (
        f"= {e2e.median / 1000:.1f} µs per event; workload: {small_work.events:,} outcomes per repetition "
        f"on {config.workload_batches:,} batches (of {config.small_store:,}) with an active "
        f"cj_assessment run, {essays} essays each, every 4th with one essay failing spellcheck"
    )
    return [
        Row(
            "outcome_e2e",
            "phase outcomes handled end to end in memory: InMemoryRuntime.deliver(topic, raw bytes) "
            "= parse, dedupe, load, decide, encode, commit, relay to the bus",
            eps.median,
            "ev/s",
            parse_eps.median,
            "parse_message() alone on the same bytes (JSON + envelope + payload validation)",
            eps.median / parse_eps.median,
            # Issue 12: at least a quarter of the rate of parsing alone (issue 2: 5,000 ev/s).
            Target("ratio", ">=", 0.25, "≥ 0.25x"),
            spread=f"{eps.spread()} ev/s (small store before and after the large one)",
            notes=(e2e_note, _cpu_note(small_watch)),
            cpu_share=small_watch.cpu_share,
        ),
        Row(
            "memory_idle_batch",
            f"bytes retained per idle batch with {config.large_store:,} batches in an InMemoryStore "
            f"(guest, registered + provisioned to ready, {essays} essays, no history), tracemalloc",
            idle_per_batch,
            "B",
            plain_per_batch,
            "the same data as a dict of plain dicts/tuples of fresh strings",
            idle_per_batch / plain_per_batch,
            Target("value", "<=", 2048, "≤ 2,048 B"),
            notes=("states seeded with decide() and committed in one compare-and-set each (no inbox rows)",),
        ),
        Row(
            "memory_after_run",
            f"bytes retained per batch after one completed cj_assessment run "
            f"({config.history_batches:,} batches, run archived in history)",
            history_per_batch,
            "B",
            idle_per_batch,
            "memory_idle_batch",
            history_per_batch / idle_per_batch,
        ),
        Row(
            "memory_service_path",
            f"bytes retained per idle batch set up through InMemoryRuntime.deliver "
            f"({config.service_batches:,} batches): state + inbox rows + transition log + bus log",
            service_per_batch,
            "B",
            idle_per_batch,
            "memory_idle_batch",
            service_per_batch / idle_per_batch,
        ),
        Row(
            "cost_100k_vs_1k",
            f"µs per outcome event end to end with {config.large_store:,} batches in the store",
            large_sample.median / 1000,
            "µs",
            e2e.median / 1000,
            f"the same workload with {config.small_store:,} batches in the store (outcome_e2e)",
            large_sample.median / e2e.median,
            Target("ratio", "<=", 1.3, "≤ 1.30x"),
            spread=f"{Sample(tuple(v / 1000 for v in large_e2e)).spread()} µs",
            cpu_share=large_watch.cpu_share,
            notes=(_cpu_note(large_watch),),
        ),
    ]


def _cpu_note(watch: Stopwatch) -> str:
    per_item = watch.cpu_ns_per_item or 0.0
    rate = 1e9 / per_item if per_item else 0.0
    return (
        f"on CPU time (all repetitions and the warm-up; leaves out the time spent waiting "
        f"for a core, not the slowdown of a shared one): "
        f"{per_item / 1000:.1f} µs per event = {rate:,.0f} ev/s"
    )


async def _seed_after_run(seeder: Seeder, count: int, essays: int) -> InMemoryRuntime:
    rt = _runtime(seeder)
    for index, batch_id in enumerate(batch_ids(count, "hist")):
        correlation_id = str(uuid.uuid4())
        active = seeder.start_run(seeder.ready(batch_id, essays), correlation_id)
        done = seeder.finish_run(active, correlation_id, fail_one=index % 4 == 0)
        await seeder.commit(rt.store, done, None)
    return rt


def _setup_deliveries(seeder: Seeder, count: int, essays: int) -> list[Delivery]:
    env = seeder.envelopes
    out: list[Delivery] = []
    for batch_id in batch_ids(count, "svc"):
        for topic, envelope in (
            env.register(batch_id, items=essays),
            env.provisioned(batch_id, env.item_ids(batch_id, essays)),
        ):
            out.append((topic, _json(envelope)))
    return out


def run(config: Config, log: Log) -> list[Row]:
    """Measure every figure of the core benchmark; rows in :data:`FIGURES` order."""
    seeder = Seeder()
    decision = decision_rows(config, seeder, log)
    store = asyncio.run(store_rows(config, seeder, log))
    by_name = {row.figure: row for row in [*decision, *store]}
    return [by_name[name] for name in FIGURES]


def with_sizes(config: Config, **sizes: int) -> Config:
    """``config`` with some sizes changed (command-line overrides)."""
    return replace(config, **sizes)
