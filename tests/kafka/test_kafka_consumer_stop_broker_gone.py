"""Stopping a consumer whose broker is gone. Was a defect (found by a failure of
test_kafka_broker_loss.py in a full run): aiokafka's ``stop()`` cancels the fetch requests
in flight and awaits them, and a request cancelled in its retry back-off (its broker
unreachable) raises its ``CancelledError`` out of ``stop()``, as if the caller had been
cancelled: the testing kit's ``Collector.stop`` (and the dead-letter reader's cleanup)
passed it on, past ``except Exception``, and ended the caller's task."""

from __future__ import annotations

import asyncio

from pipeline_state_kafka import ensure_topics
from pipeline_state_kafka.testing import Collector, LocalBroker

TOPICS = ["stop.a", "stop.b", "stop.c"]


async def test_collectors_stop_quietly_once_their_broker_is_gone(own_broker: LocalBroker) -> None:
    await ensure_topics(own_broker.bootstrap, TOPICS)
    collectors = [Collector(own_broker.bootstrap, TOPICS) for _ in range(4)]
    for collector in collectors:
        await collector.start()
    own_broker.stop()
    for collector in collectors:  # each stops while its fetches fail and back off
        await asyncio.sleep(0.35)
        await collector.stop()
    # The caller was never cancelled: it goes on.
    current = asyncio.current_task()
    assert current is not None
    assert current.cancelling() == 0
