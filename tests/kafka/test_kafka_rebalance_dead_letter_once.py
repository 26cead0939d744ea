"""A rebalance while another lane retries writes no second dead letter for one record.

A poison record and a good record of another batch share a partition (the good one first,
in another lane). The store is down for a moment: the good record's lane is retried, the
poison record's lane dead-letters it, and the partition's offset stays behind the good
record. The consumer remembers the dead-lettered position (``_parked``) so the refetch does
not write a second letter - but a rebalance (any member joining or leaving the group; with
the eager protocol every partition is revoked and, most often, handed back) makes it forget
the positions of the revoked partitions while the offset commit still sits behind the poison
record. When the partition came back the poison record was fetched again and dead-lettered
again, although no process died: was a defect (found by an attack on the Kafka intake). The
consumer now keeps those positions across a rebalance; they are forgotten once a fetch of
their partition shows the commit past them.

adapters/pipeline_state_kafka/README.md: "A dead letter is written once per record, also
while another record of its partition is retried; it can be written twice if the process
dies between writing it and committing the offset." Each copy is counted in
``dead_lettered`` and listed for the operator as another poison record.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence

from intake_kit import FakeRecord, LogConsumer, drain, keys_in_different_lanes, new_consumer
from pipeline_state_kafka._kafka import TopicPartition

from pipeline_state import InMemoryStore, PipelineService
from pipeline_state.profiles.huleedu.events import Topic
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes

REGISTER = Topic.BATCH_REGISTER.value


class RebalancingLog(LogConsumer):
    """Before its second fetch the group rebalances (every partition revoked, then assigned
    back to this member, which resumes from the committed offsets) and the store comes back."""

    def __init__(self, stop: asyncio.Event, store: InMemoryStore) -> None:
        super().__init__(stop)
        self.store = store
        self.calls = 0

    async def getmany(
        self, *partitions: TopicPartition, timeout_ms: int = 0, max_records: int | None = None
    ) -> Mapping[TopicPartition, Sequence[FakeRecord]]:
        self.calls += 1
        if self.calls == 2:
            parts = list(self.logs)
            await self.listener.on_partitions_revoked(parts)
            for tp in parts:  # a partition assigned resumes from its committed offset
                self.positions[tp] = self.committed.get(tp, 0)
            await self.listener.on_partitions_assigned(parts)
            self.store.available = True  # the database is back
        return await super().getmany(*partitions, timeout_ms=timeout_ms, max_records=max_records)


async def test_a_rebalance_while_another_lane_retries_does_not_write_a_second_letter() -> None:
    env = HuleEduEnvelopes()
    good_key, bad_key = keys_in_different_lanes()
    store = InMemoryStore()
    stop = asyncio.Event()
    source = RebalancingLog(stop, store)
    source.append(REGISTER, json.dumps(env.register(good_key, items=2)[1]).encode(), key=good_key.encode())
    source.append(REGISTER, b"{this is not json", key=bad_key.encode())
    consumer, _, producer = new_consumer(source, PipelineService(store), partition_concurrency=4)
    store.available = False  # the database goes away for a moment
    await drain(consumer, source)

    assert await store.load(good_key) is not None  # the good record applied after the outage
    letters = [topic for topic, *_ in producer.sent]
    assert letters == [f"{REGISTER}.DLQ"], (
        f"one poison record, no process died, {len(letters)} dead letters: {letters}"
    )
