"""Helpers of the proof tests of issue 11 (backlog, crash matrix, broker loss, correlation):
worker services played by the test, records produced with chosen timestamps, per-test
PostgreSQL schemas, and the checks every proof ends with (one completion per run, one
command per phase, nothing dead-lettered).

Everything talks to a real broker on 127.0.0.1 and to real stores; nothing is mocked.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from typing import Any

import asyncpg
import attrs
from pipeline_state_kafka import ProducerLike
from pipeline_state_kafka.dlq import dlq_topic
from pipeline_state_kafka.testing import Collected, Collector
from pipeline_state_service import OpenedStore, ServeSettings
from sqlalchemy.engine import make_url

from pipeline_state import BatchStatus, PipelineService
from pipeline_state.ports import BatchState
from pipeline_state.profiles.huleedu.catalog import HULEEDU_CATALOG
from pipeline_state.profiles.huleedu.events import INBOUND_TOPICS, OUTBOUND_TOPICS, Topic
from pipeline_state.profiles.huleedu.profile import huleedu_profile
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes
from tests.optional import unavailable

__all__ = [
    "DEFAULT_POSTGRES",
    "DLQ_TOPICS",
    "PHASE_OF_TOPIC",
    "PHASE_TOPICS",
    "WATCHED_TOPICS",
    "Stamped",
    "Workers",
    "assert_all_ready",
    "assert_nothing_dead_lettered",
    "assert_one_command_per_phase",
    "assert_one_completion_per_batch",
    "completed",
    "completions_by_batch",
    "inbox_results",
    "load_states",
    "postgres_schema",
    "postgres_url",
    "produce_stamped",
    "short_deadlines",
    "stamp",
    "wait_completed",
]

log = logging.getLogger("tests.proof")

DEFAULT_POSTGRES = "postgresql+asyncpg://root@127.0.0.1:5432/test"

PHASE_OF_TOPIC: Mapping[str, str] = {
    Topic.SPELLCHECK.value: "spellcheck",
    Topic.NLP.value: "nlp",
    Topic.CJ_ASSESSMENT.value: "cj_assessment",
    Topic.AI_FEEDBACK.value: "ai_feedback",
}
"""The phase command topics and the phase each one starts."""

PHASE_TOPICS: tuple[str, ...] = tuple(PHASE_OF_TOPIC)
DLQ_TOPICS: tuple[str, ...] = tuple(dlq_topic(t) for t in INBOUND_TOPICS)
"""The dead-letter topics of every inbound topic (contract names, without prefix)."""

WATCHED_TOPICS: tuple[str, ...] = (*OUTBOUND_TOPICS, *DLQ_TOPICS)

Delivery = tuple[str, dict[str, Any]]
Stamped = tuple[str, dict[str, Any], int]
"""``(topic, envelope, timestamp_ms)``: a delivery with the record timestamp to give it."""


# -- phase deadlines ------------------------------------------------------------------------


def short_deadlines(
    settings: ServeSettings, seconds: float, *, resends: int
) -> Callable[[OpenedStore], PipelineService]:
    """A ``ServiceRunner`` service factory: the shipped HuleEdu profile with every phase's
    deadline ``seconds`` and ``resends`` re-sends of an overdue command before the phase
    fails (the profile's own options, for an in-process runner)."""
    profile = huleedu_profile(
        deadlines=dict.fromkeys(HULEEDU_CATALOG.phases, seconds),
        default_deadline_seconds=seconds,
        max_resends=resends,
    )
    window = getattr(settings, "waiting_window_seconds", None)

    def factory(opened: OpenedStore) -> PipelineService:
        if window is None:
            return PipelineService(opened.store, profile=profile)
        return PipelineService(opened.store, profile=profile, waiting_window_seconds=window)

    return factory


# -- producing ----------------------------------------------------------------------------


def stamp(deliveries: Iterable[Delivery], *, start_ms: int | None = None, step_ms: int = 1) -> list[Stamped]:
    """``deliveries`` with increasing record timestamps, in the order given (logical time)."""
    at = int(time.time() * 1000) if start_ms is None else start_ms
    return [(topic, envelope, at + i * step_ms) for i, (topic, envelope) in enumerate(deliveries)]


async def produce_stamped(
    producer: ProducerLike, records: Sequence[Stamped], *, topic_prefix: str, key_field: str = "batch_id"
) -> None:
    """Produce ``records`` in the order given (keyed by ``data[key_field]``), each with its own
    record timestamp, and wait until all are acknowledged."""
    untyped: Any = producer  # ProducerLike does not declare aiokafka's timestamp_ms
    futures = []
    for topic, envelope, timestamp_ms in records:
        key = envelope.get("data", {}).get(key_field)
        futures.append(
            await untyped.send(
                f"{topic_prefix}{topic}",
                json.dumps(envelope).encode(),
                None if key is None else str(key).encode(),
                timestamp_ms=timestamp_ms,
            )
        )
    for future in futures:
        await future


# -- the worker services ------------------------------------------------------------------


def _essay_ids(record: Collected) -> list[str]:
    return [str(e["essay_id"]) for e in record.data.get("essays_to_process") or ()]


class Workers:
    """Plays the worker services: reads every phase command from its topic (every copy, at
    least once) and answers it with an ``ELSBatchPhaseOutcomeV1`` carrying the command's
    correlation id (or ``correlation(command)``), every essay processed, ``delay()`` seconds
    after reading it.

    ``answer(record)`` decides per command copy: ``True`` answers at once, ``False`` holds it
    (see :meth:`release`). Every copy is kept in :attr:`commands`. After a broker loss call
    :meth:`reconnect` (the topics and their offsets are new). Sends that fail (broker down)
    are retried until they succeed or the workers stop.
    """

    def __init__(
        self,
        bootstrap: str,
        prefix: str,
        producer: ProducerLike,
        *,
        env: HuleEduEnvelopes | None = None,
        answer: Callable[[Collected], bool] | None = None,
        correlation: Callable[[Collected], str] | None = None,
        delay: Callable[[], float] | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.prefix = prefix
        self.producer = producer
        self.env = env or HuleEduEnvelopes(source_service="proof-workers")
        self.answer = answer or (lambda _record: True)
        self.correlation = correlation or (lambda record: str(record.envelope.get("correlation_id")))
        self.delay = delay or (lambda: 0.0)
        self.commands: list[Collected] = []
        """Every command copy read, in arrival order (across reconnects)."""
        self.held: list[Collected] = []
        self.answered: list[tuple[Collected, str]] = []
        """``(command, outcome event id)`` of every outcome sent."""
        self._collector: Collector | None = None
        self._seen = 0
        self._queue: list[tuple[float, Collected]] = []
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    async def __aenter__(self) -> Workers:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        await self._connect()
        self._task = asyncio.create_task(self._pump())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._collector is not None:
            await self._collector.stop()
            self._collector = None

    async def reconnect(self) -> None:
        """Read the (re-created) command topics from their beginning again."""
        old, self._collector = self._collector, None
        if old is not None:
            with contextlib.suppress(Exception):
                await old.stop()
        await self._connect()

    async def _connect(self) -> None:
        collector = Collector(self.bootstrap, PHASE_TOPICS, topic_prefix=self.prefix)
        await collector.start()
        self._seen = 0
        self._collector = collector

    def release(self, predicate: Callable[[Collected], bool] = lambda _r: True, *, held: bool = True) -> int:
        """From now on also answer the commands that match ``predicate`` (the ``answer`` rule
        becomes ``answer or predicate``); with ``held``, answer the matching commands held so
        far too. Returns how many held commands were released."""
        before = self.answer
        self.answer = lambda r: before(r) or predicate(r)
        if not held:
            return 0
        released = [r for r in self.held if predicate(r)]
        self.held = [r for r in self.held if not predicate(r)]
        now = time.monotonic()
        self._queue.extend((now, r) for r in released)
        self._wake.set()
        return len(released)

    def copies(self, phase: str | None = None, batch_id: str | None = None) -> list[Collected]:
        """Command copies read so far, optionally of one phase and/or batch."""
        return [
            r
            for r in self.commands
            if (phase is None or PHASE_OF_TOPIC[r.topic] == phase)
            and (batch_id is None or r.data.get("batch_id") == batch_id)
        ]

    async def _pump(self) -> None:
        while True:
            collector = self._collector
            if collector is not None:
                fresh = collector.records[self._seen :]
                self._seen += len(fresh)
                for record in fresh:
                    self.commands.append(record)
                    if self.answer(record):
                        self._queue.append((time.monotonic() + self.delay(), record))
                    else:
                        self.held.append(record)
            self._queue.sort(key=lambda item: item[0])
            while self._queue and self._queue[0][0] <= time.monotonic():
                record = self._queue[0][1]
                try:
                    await self._send_outcome(record)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # broker down: try again shortly
                    log.info("worker could not answer yet: %s: %s", type(exc).__name__, exc)
                    await asyncio.sleep(0.5)
                    break
                self._queue.pop(0)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=0.05)

    async def _send_outcome(self, command: Collected) -> None:
        batch_id = str(command.data["batch_id"])
        phase = PHASE_OF_TOPIC[command.topic]
        topic, envelope = self.env.outcome(
            batch_id, phase, self.correlation(command), processed=_essay_ids(command)
        )
        future = await self.producer.send(
            f"{self.prefix}{topic}", json.dumps(envelope).encode(), batch_id.encode()
        )
        await asyncio.wait_for(asyncio.shield(future), timeout=15)  # type: ignore[arg-type]
        self.answered.append((command, envelope["event_id"]))


# -- checks -------------------------------------------------------------------------------


def completions_by_batch(out: Collector) -> dict[str, set[str]]:
    """Distinct completion event ids per batch id."""
    found: dict[str, set[str]] = defaultdict(set)
    for record in out.on(Topic.PIPELINE_COMPLETED):
        found[str(record.data.get("batch_id"))].add(str(record.event_id))
    return dict(found)


def completed(out: Collector, batch_ids: Iterable[str]) -> bool:
    """Every batch of ``batch_ids`` has at least one completion."""
    found = completions_by_batch(out)
    return all(b in found for b in batch_ids)


async def wait_completed(
    out: Collector, batch_ids: Iterable[str], *, within: float, allow_denied: bool = False
) -> None:
    """Wait (bounded) until every batch of ``batch_ids`` has a completion; fails at once when
    a record is dead-lettered or (unless ``allow_denied``) a request is denied."""
    wanted = list(batch_ids)

    def done(c: Collector) -> bool:
        assert_nothing_dead_lettered(c)
        if not allow_denied:
            denied = c.on(Topic.PIPELINE_DENIED)
            assert not denied, "denied: " + "; ".join(
                f"{r.key} {r.data.get('denial_reason')}" for r in denied[:10]
            )
        return completed(c, wanted)

    try:
        await out.wait_for(done, within=within, what=f"{len(wanted)} completions")
    except TimeoutError as exc:
        missing = sorted(set(wanted) - set(completions_by_batch(out)))
        raise TimeoutError(f"{exc}; {len(missing)} without one: {missing[:10]}") from None


def assert_one_completion_per_batch(
    out: Collector, batch_ids: Iterable[str], *, final_status: str | None = "completed_successfully"
) -> dict[str, Collected]:
    """Each batch has exactly one distinct completion event id (copies of it are allowed) and
    one run id; returns the completion of each batch."""
    wanted = set(batch_ids)
    by_batch = completions_by_batch(out)
    missing = sorted(wanted - set(by_batch))
    assert not missing, f"{len(missing)} batches without a completion: {missing[:10]}"
    several = {b: ids for b, ids in by_batch.items() if b in wanted and len(ids) != 1}
    assert not several, f"batches with several completion event ids: {several}"
    first: dict[str, Collected] = {}
    runs: dict[str, set[str]] = defaultdict(set)
    for record in out.on(Topic.PIPELINE_COMPLETED):
        batch_id = str(record.data.get("batch_id"))
        first.setdefault(batch_id, record)
        runs[batch_id].add(str(record.data.get("run_id")))
    assert all(len(runs[b]) == 1 for b in wanted), {b: runs[b] for b in wanted if len(runs[b]) != 1}
    if final_status is not None:
        wrong = {b: first[b].data.get("final_status") for b in wanted}
        wrong = {b: s for b, s in wrong.items() if s != final_status}
        assert not wrong, f"runs that did not end {final_status}: {wrong}"
    return {b: first[b] for b in wanted}


def assert_one_command_per_phase(
    records: Iterable[Collected], batch_ids: Iterable[str], phases: Sequence[str]
) -> None:
    """Each batch got exactly one distinct command event id for each phase of ``phases``
    (copies of the same event id, from an at-least-once relay, are allowed)."""
    ids: dict[tuple[str, str], set[str]] = defaultdict(set)
    for record in records:
        if record.topic in PHASE_OF_TOPIC:
            ids[(str(record.data.get("batch_id")), PHASE_OF_TOPIC[record.topic])].add(str(record.event_id))
    wrong = {
        (b, p): sorted(ids.get((b, p), set()))
        for b in batch_ids
        for p in phases
        if len(ids.get((b, p), set())) != 1
    }
    assert not wrong, f"(batch, phase) pairs without exactly one command event id: {wrong}"


def assert_nothing_dead_lettered(out: Collector) -> None:
    dead = [r for r in out.records if r.topic in DLQ_TOPICS]
    assert not dead, "dead-lettered: " + "; ".join(
        f"{r.topic} {r.key} {r.headers.get('dlq_reason')}" for r in dead[:10]
    )


async def load_states(
    store_url: str, batch_ids: Iterable[str], *, schema: str | None = None
) -> dict[str, BatchState | None]:
    """The stored state of each batch with its archived runs (``history``, as
    ``PipelineService.get_batch`` shows it), read through a store of its own (SQL stores only)."""
    from pipeline_state_sql import open_store

    store = await open_store(store_url, schema=schema, upgrade=False)
    try:
        states: dict[str, BatchState | None] = {}
        for b in batch_ids:
            state = await store.load(b)
            history = tuple(await store.history(b))
            assert state is None or len(history) == state.past.count, (b, len(history))
            states[b] = None if state is None else attrs.evolve(state, history=history)
        return states
    finally:
        await store.close()


async def inbox_results(
    store_url: str, event_ids: Iterable[str], *, schema: str | None = None
) -> dict[str, str | None]:
    """The recorded result of each inbound event id (``None``: never handled), read through
    a store of its own (SQL stores only)."""
    from pipeline_state_sql import open_store

    store = await open_store(store_url, schema=schema, upgrade=False)
    try:
        results: dict[str, str | None] = {}
        for event_id in event_ids:
            entry = await store.inbox_entry(event_id)
            results[event_id] = None if entry is None else entry.result
        return results
    finally:
        await store.close()


def assert_all_ready(states: Mapping[str, BatchState | None], *, runs: int = 1) -> None:
    """Every batch is back to ``ready_for_pipeline_execution`` with ``runs`` archived runs."""
    wrong = {
        b: (None if s is None else (s.status.value, s.active_run is not None, s.past.count))
        for b, s in states.items()
        if s is None
        or s.status is not BatchStatus.READY_FOR_PIPELINE_EXECUTION
        or s.active_run is not None
        or s.past.count != runs
    }
    assert not wrong, f"batches not ready with {runs} archived run(s): {wrong}"


# -- PostgreSQL ---------------------------------------------------------------------------


def postgres_url() -> str:
    """The test server's URL (``PIPELINE_STATE_TEST_POSTGRES``); skips when it cannot be
    reached, except under ``CI=true`` where that is a failure."""
    url = os.environ.get("PIPELINE_STATE_TEST_POSTGRES", DEFAULT_POSTGRES)
    problem = _probe_sync(url)
    if problem is not None:
        message = f"PostgreSQL at {url} is not reachable ({problem})"
        unavailable(message)
    return url


def _driver_dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _probe_sync(url: str) -> str | None:
    async def probe() -> str | None:
        try:
            conn = await asyncpg.connect(_driver_dsn(url), timeout=5)
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            return f"{type(exc).__name__}: {exc}"
        await conn.close()
        return None

    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, probe()).result(timeout=30)


async def _execute(url: str, sql: str) -> None:
    conn = await asyncpg.connect(_driver_dsn(url), timeout=10)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def postgres_schema(url: str) -> AsyncIterator[str]:
    """A fresh schema of this test only, dropped afterwards."""
    schema = f"ps_proof_{uuid.uuid4().hex[:12]}"
    await _execute(url, f'CREATE SCHEMA "{schema}"')
    try:
        yield schema
    finally:
        await _execute(url, f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
