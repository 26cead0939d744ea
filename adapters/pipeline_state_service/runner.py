"""The orchestrator process: consumer, outbox relay, deadline sweeper and HTTP in one loop.

:class:`ServiceRunner` wires a :class:`~pipeline_state._service.PipelineService` over an
opened store to Kafka and runs until its stop event is set. Shutdown goes in this order:
stop fetching (the consumer finishes the unit of work in hand and commits its offsets),
stop the sweeper and the HTTP server, then flush the relay (bounded) and close the producer
and the store. Embedders and tests run it in-process; ``serve`` runs it from the CLI.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from datetime import timedelta
from typing import Any

import attrs
from pipeline_state_kafka import KafkaError, ProducerLike
from pipeline_state_kafka import open as open_kafka
from pipeline_state_kafka._kafka import RecordLike, new_admin
from pipeline_state_kafka.consumer import DEFAULT_PARTITION_CONCURRENCY, ConsumerSettings, InboundConsumer
from pipeline_state_kafka.dlq import (
    DeadLetterWriter,
    ParkedFact,
    WaitedTooLongError,
    dlq_topic,
    effective_limit,
)
from pipeline_state_kafka.errors import NeverAppliesError
from pipeline_state_kafka.gauges import StoreSampler
from pipeline_state_kafka.handlers import Handled, service_batch_handler, service_handler
from pipeline_state_kafka.metrics import MeteredPublisher, ServiceMetrics
from pipeline_state_kafka.policy import Verdict, classify_send_error
from pipeline_state_kafka.publisher import KafkaPublisher, create_producer
from pipeline_state_kafka.stats import ServiceStats
from pipeline_state_kafka.topics import ensure_topics, service_topics

from pipeline_state._announced import announced_events
from pipeline_state._clock import SystemClock
from pipeline_state._relay import OutboxRelay
from pipeline_state._service import ExpiredFact, PipelineService
from pipeline_state.ports import Outbox, PurgingStore
from pipeline_state.profiles.huleedu.events import OUTBOUND_TOPICS

from .extensions import ConsumerPlugin, ServeContext, resolve_consumer
from .relay_runner import RelayRunner, tcp_probe
from .retention import purge_store_periodically
from .settings import ServeSettings
from .stores import OpenedStore, open_store
from .web import build_http_app, serve_http

__all__ = ["ServiceRunner"]

log = logging.getLogger("pipeline_state_kafka.service")


async def _quietly(close: Callable[[], Awaitable[None]]) -> None:
    """Run one step of the shutdown; a failing step does not stop the next ones."""
    with contextlib.suppress(Exception):
        await close()


def _with_lanes(settings: ConsumerSettings, store: object) -> ConsumerSettings:
    """``settings`` with the lanes of a fetch fitted to ``store`` when they were not set: one
    lane on a store whose database runs one write transaction at a time (SQLite), where
    more lanes only queue for the writer, each committing on its own."""
    if settings.partition_concurrency is not None:
        return settings
    writers = getattr(store, "concurrent_writers", None)
    if writers is None:
        return settings
    return attrs.evolve(settings, partition_concurrency=max(1, min(writers, DEFAULT_PARTITION_CONCURRENCY)))


class ServiceRunner:
    """Runs the orchestrator described by ``settings``.

    ``store`` may be given already opened (tests, embedders); otherwise
    ``settings.store_url`` is opened and closed by :meth:`run`. ``ready`` is set once the
    producer is connected, topics exist and the consumer has its first assignment.
    Extra consumers (``settings.consumers``) are built before the topics are created, so
    their topics and dead-letter topics are created too.
    """

    def __init__(
        self,
        settings: ServeSettings,
        *,
        store: OpenedStore | None = None,
        service_factory: Callable[[OpenedStore], PipelineService] | None = None,
    ) -> None:
        self.settings = settings
        self.stats = ServiceStats()
        self.ready = asyncio.Event()
        self.opened: OpenedStore | None = store
        self.service: PipelineService | None = None
        self.relay: RelayRunner | None = None
        self.consumer: InboundConsumer | None = None
        """The consumer of the service's inbound topics, once started."""
        self.extra_consumers: dict[str, InboundConsumer] = {}
        """The consumers of ``settings.consumers`` by name, once started."""
        self.metrics: ServiceMetrics | None = None
        """The Prometheus metrics (``settings.metrics``), once the store is open."""
        self._relays: list[RelayRunner] = []
        self._own_store = store is None
        self._service_factory = service_factory or (
            lambda opened: PipelineService(
                opened.store,
                profile=settings.profile(),
                waiting_window_seconds=settings.waiting_window_seconds,
                limits=settings.intake_limits(),
            )
        )
        self._cleanups: list[Callable[[], Awaitable[None]]] = []
        self.plugins: dict[str, ConsumerPlugin] = {}
        """The extra consumers of ``--consumers``, by name, once started."""
        self.dlq_max_message_bytes = settings.dlq_max_message_bytes
        """The dead-letter size limit in effect (checked against the broker's at start)."""

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set, then shut down in order (see the module docstring)."""
        settings = self.settings
        opened = self.opened or await open_store(settings.store_url, **settings.store_options())
        self.opened = opened
        async with contextlib.AsyncExitStack() as resources:
            if self._own_store:
                resources.push_async_callback(_quietly, opened.close)  # closed last
            transport = await resources.enter_async_context(
                open_kafka(
                    settings.kafka_settings(),
                    producer=settings.producer_settings(),
                    stop=stop,
                )
            )
            try:
                if transport.started:
                    await self._run_started(stop, opened, transport.producer)
            finally:
                for cleanup in self._cleanups:  # before the producer and the store
                    await _quietly(cleanup)
                self._cleanups.clear()

    async def _dead_letter_producer(self) -> ProducerLike:
        """A producer of its own for dead letters, sized to the DLQ limit checked against the
        broker's (see :meth:`_check_dlq_limit`), so a large letter never waits behind, or
        blocks, the relay's messages."""
        limit = await self._check_dlq_limit()
        self.dlq_max_message_bytes = limit
        dlq = create_producer(
            attrs.evolve(
                self.settings.producer_settings(),
                max_request_size=limit,
                client_id=f"{self.settings.producer_settings().client_id}.dlq",
            )
        )
        self._cleanups.insert(0, dlq.stop)
        await dlq.start()
        return dlq

    async def _check_dlq_limit(self) -> int:
        """The DLQ size limit to use: ``dlq_max_message_bytes``, lowered to the broker's
        ``message.max.bytes`` (or a DLQ topic's ``max.message.bytes``) when those are smaller.
        A broker that does not answer DescribeConfigs keeps the configured limit (logged)."""
        settings = self.settings
        configured = settings.dlq_max_message_bytes
        topics = [dlq_topic(f"{settings.topic_prefix}{t}") for t in self._inbound_topics()]
        admin = new_admin(settings.kafka, request_timeout_ms=5_000)
        try:
            await asyncio.wait_for(admin.start(), timeout=10)
            limits = await asyncio.wait_for(admin.message_limits(topics), timeout=10)
        except Exception as exc:
            log.info(
                "dead-letter size limit: the broker's limit could not be read (%s: %s); "
                "keeping PIPELINE_STATE_DLQ_MAX_MESSAGE_BYTES=%s",
                type(exc).__name__,
                exc,
                configured,
            )
            return configured
        finally:
            with contextlib.suppress(Exception):
                await admin.close()
        if not limits:
            log.info("dead-letter size limit: the broker reports no limit; keeping %s bytes", configured)
            return configured
        limit = effective_limit(configured, limits)
        reported = ", ".join(f"{k}={v}" for k, v in sorted(limits.items()))
        if limit < configured:
            log.warning(
                "dead-letter size limit lowered from %s to the broker's %s bytes (%s)",
                configured,
                limit,
                reported,
            )
        else:
            log.info("dead-letter size limit: %s bytes, within the broker's (%s)", configured, reported)
        return limit

    async def _run_started(self, stop: asyncio.Event, opened: OpenedStore, producer: ProducerLike) -> None:
        settings = self.settings
        service = self._service_factory(opened)
        self.service = service
        metrics = self.metrics = (
            ServiceMetrics(
                StoreSampler(opened.store, opened.outbox, min_interval=settings.metrics_store_seconds)
            )
            if settings.metrics
            else None
        )
        context = ServeContext(
            settings.store_url, opened.store, opened.outbox, service, settings.topic_prefix, settings
        )
        self.plugins.clear()
        self.extra_consumers.clear()
        for name in settings.consumers:
            plugin = await resolve_consumer(name)(context)
            if plugin.close is not None:
                self._cleanups.insert(0, plugin.close)  # closed before the orchestrator's store
            self.plugins[name] = plugin
        if settings.create_topics:
            await self._create_topics()
        relay = self._relay(opened.outbox, producer)
        self.relay = relay
        dlq_producer = await self._dead_letter_producer()
        consumer = self.consumer = InboundConsumer(
            _with_lanes(
                attrs.evolve(settings.consumer_settings(), topics=service.profile.inbound.names),
                opened.store,
            ),
            service_handler(service),
            self._dead_letters(dlq_producer, settings.group_id),
            stats=self.stats,
            on_handled=self._wake_relay,
            batch_handler=service_batch_handler(service),
            metrics=metrics,
        )
        intake: list[Coroutine[Any, Any, None]] = [consumer.run(stop)]
        relays = self._relays = [relay]
        for name, plugin in self.plugins.items():
            extra, extra_relay = self._extra_consumer(name, plugin, context, producer, dlq_producer)
            intake.append(extra.run(stop))
            intake.extend(task(stop) for task in plugin.tasks)
            if extra_relay is not None:
                relays.append(extra_relay)
        if settings.sweep_seconds > 0:
            intake.append(self._sweep(stop, service, dlq_producer))
        if settings.purge_seconds > 0 and isinstance(opened.store, PurgingStore):
            retention = settings.retention()
            if not retention.keeps_everything:
                intake.append(
                    purge_store_periodically(
                        opened.store, retention, service.clock, settings.purge_seconds, stop
                    )
                )
        if settings.http is not None:
            results = self.plugins.get("results")
            app = build_http_app(
                service, results=getattr(results and results.state, "store", None), metrics=metrics
            )
            if app is not None:
                intake.append(serve_http(app, settings.http[0], settings.http[1], stop))
        relay_stop = asyncio.Event()
        relay_tasks = (
            [asyncio.create_task(r.run(relay_stop), name="relay") for r in relays]
            if settings.relay_enabled
            else []
        )
        if relay_tasks:
            self._attach(opened.outbox, relay)
        intake_tasks = [asyncio.create_task(c) for c in intake]
        ready = asyncio.create_task(self._mark_ready(consumer, stop))
        try:
            done, _ = await asyncio.wait(intake_tasks, return_when=asyncio.FIRST_EXCEPTION)
            failed = [t for t in done if not t.cancelled() and t.exception() is not None]
            if failed:
                stop.set()  # one part failed: stop the others cleanly, then report it
            await asyncio.gather(*intake_tasks, return_exceptions=True)
            if failed:
                raise failed[0].exception()  # type: ignore[misc]
        finally:
            ready.cancel()
            self._detach(opened.outbox)
            relay_stop.set()
            await asyncio.gather(*relay_tasks, return_exceptions=True)
            log.info("stopped", extra=self.stats.as_dict())

    def _attach(self, outbox: Outbox, runner: RelayRunner) -> None:
        """Have the store hand the rows its commits write to ``runner`` in memory (when it
        can: the SQL store), so they go out without a claim (see
        :mod:`pipeline_state._relay`)."""
        attach = getattr(outbox, "attach_relay", None)
        if attach is not None and self.settings.relay_hand_off:
            attach(runner.hand_off, runner.relay.clock, accepting=runner.relay.accepting)
            runner.hand_offs = True

    def _detach(self, outbox: Outbox) -> None:
        detach = getattr(outbox, "detach_relay", None)
        if detach is not None:
            detach()

    def _relay(self, outbox: Outbox, producer: ProducerLike) -> RelayRunner:
        settings = self.settings
        publisher = KafkaPublisher(producer, topic_prefix=settings.topic_prefix)
        relay = OutboxRelay(
            outbox,
            publisher if self.metrics is None else MeteredPublisher(publisher, self.metrics),
            SystemClock(),
            batch_size=settings.relay_batch_size,
            max_attempts=settings.relay_max_attempts,
            lease_seconds=getattr(outbox, "lease", timedelta(seconds=30)).total_seconds(),
            # The Kafka publisher keeps the order of one call's messages per key: a key's
            # handed-off rows need not go one acknowledged wave at a time.
            rows_per_key=settings.relay_batch_size,
        )
        return RelayRunner(
            relay,
            idle_seconds=settings.relay_idle_seconds,
            linger_seconds=settings.relay_linger_seconds,
            flush_timeout_seconds=settings.shutdown_seconds,
            stats=self.stats,
            probe=tcp_probe(settings.kafka),
        )

    def _dead_letters(self, producer: ProducerLike, group_id: str) -> DeadLetterWriter:
        return DeadLetterWriter(producer, group_id=group_id, max_message_bytes=self.dlq_max_message_bytes)

    def _extra_consumer(
        self,
        name: str,
        plugin: ConsumerPlugin,
        context: ServeContext,
        producer: ProducerLike,
        dlq_producer: ProducerLike,
    ) -> tuple[InboundConsumer, RelayRunner | None]:
        settings = _with_lanes(
            attrs.evolve(
                self.settings.consumer_settings(),
                topics=plugin.topics,
                group_id=f"{self.settings.group_id}.{name}",
            ),
            plugin.outbox,  # the store the plugin writes (its lanes queue for its writers)
        )
        consumer = self.extra_consumers[name] = InboundConsumer(
            settings,
            plugin.handler,
            self._dead_letters(dlq_producer, settings.group_id),
            stats=self.stats,
            on_handled=self._wake_relay,
            name=name,
            metrics=self.metrics,
        )
        relay = None
        if plugin.outbox is not None and plugin.outbox is not context.outbox:
            relay = self._relay(plugin.outbox, producer)
        return consumer, relay

    def _inbound_topics(self) -> tuple[str, ...]:
        """The topics the orchestrator consumes: its profile's inbound topics."""
        profile = self.service.profile if self.service is not None else self.settings.profile()
        return profile.inbound.names

    def _outbound_topics(self) -> tuple[str, ...]:
        """The topics the orchestrator writes: its profile's commands and announced events
        (and, for the shipped profile, every outbound topic of its contract)."""
        profile = self.service.profile if self.service is not None else self.settings.profile()
        commands = [spec.topic for spec in profile.phase_commands.values()]
        if profile.group_matching is not None:
            commands.append(profile.group_matching.topic)
        events = [a.topic for a in announced_events(profile.name, profile.outbound)]
        contract = OUTBOUND_TOPICS if self.settings.profile_spec is None else ()
        return tuple(dict.fromkeys([*contract, *commands, *events]))

    async def _create_topics(self) -> None:
        settings = self.settings
        consumed = [*self._inbound_topics(), *(t for plugin in self.plugins.values() for t in plugin.topics)]
        topics = service_topics(
            settings.topic_prefix, inbound=dict.fromkeys(consumed), outbound=self._outbound_topics()
        )
        try:
            await ensure_topics(
                settings.kafka,
                topics,
                partitions=settings.topic_partitions,
                replication_factor=settings.replication_factor,
            )
        except (KafkaError, OSError) as exc:
            log.warning("could not create topics (continuing): %s: %s", type(exc).__name__, exc)

    def _wake_relay(self, record: RecordLike, handled: Handled) -> None:
        if handled.emitted:
            for relay in self._relays:
                relay.wake()

    async def _sweep(self, stop: asyncio.Event, service: PipelineService, dlq: ProducerLike) -> None:
        """Every ``sweep_seconds``: fail overdue phases, then re-attempt waiting facts and
        dead-letter those that waited longer than the waiting window. A failed pass is
        logged and tried again at the next period; nothing stops the sweeper."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.settings.sweep_seconds)
            if stop.is_set():
                break
            try:
                results = await service.expire_overdue()
            except Exception as exc:
                log.warning("deadline sweep failed: %s: %s", type(exc).__name__, exc)
                results = []
            if results:
                self.stats.expired += len(results)
                log.info("deadline sweep expired %s batch(es)", len(results))
                if any(r.messages for r in results):
                    self._wake_relays()
            await self._sweep_waiting(service, dlq)

    async def _sweep_waiting(self, service: PipelineService, dlq: ProducerLike) -> None:
        sweep_waiting = getattr(service, "sweep_waiting", None)
        if sweep_waiting is None:
            return
        writer = self._dead_letters(dlq, self.settings.group_id)
        prefix = self.settings.topic_prefix

        async def dead_letter(expired: ExpiredFact) -> None:
            fact = expired.fact
            parked = ParkedFact(f"{prefix}{fact.topic}", fact.batch_id.encode(), fact.raw)
            kind = NeverAppliesError if expired.never_applies else WaitedTooLongError
            error = kind(expired.reason, waits_for=fact.waits_for, event_id=fact.event_id)
            try:
                await writer.send(parked, error)
            except Exception as exc:
                if classify_send_error(exc) is Verdict.RETRY:
                    raise  # the fact keeps waiting; the next sweep tries again
                await writer.send(parked, error, minimal=True)
            if self.metrics is not None:
                self.metrics.dead_lettered(fact.topic, type(error).__name__)
            log.warning(
                "dead-lettered a fact that %s: %s",
                "could never apply" if expired.never_applies else "waited too long",
                expired.reason,
                extra={
                    "topic": fact.topic,
                    "event_id": fact.event_id,
                    "batch_id": fact.batch_id,
                    "waits_for": fact.waits_for,
                },
            )

        try:
            sweep = await sweep_waiting(dead_letter)
        except Exception as exc:
            log.warning("waiting sweep failed (retried next period): %s: %s", type(exc).__name__, exc)
            return
        if sweep.dead_lettered:
            self.stats.waiting_dead_lettered += sweep.dead_lettered
            self.stats.dead_lettered += sweep.dead_lettered
        if sweep.resumed or sweep.denied:
            log.info("waiting sweep: %s resumed, %s denied", sweep.resumed, sweep.denied)
            self._wake_relays()

    def _wake_relays(self) -> None:
        for relay in self._relays:
            relay.wake()

    async def _mark_ready(self, consumer: InboundConsumer, stop: asyncio.Event) -> None:
        waiter = asyncio.create_task(consumer.ready.wait())
        stopper = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            stopper.cancel()
        if consumer.ready.is_set():
            self.ready.set()
            log.info(
                "ready",
                extra={
                    "group_id": self.settings.group_id,
                    "topic_prefix": self.settings.topic_prefix,
                    "lanes": consumer.settings.lanes,
                },
            )
