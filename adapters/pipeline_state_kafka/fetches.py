"""Fetches in flight: how the consumer handles one fetch while the next is already running.

A fetch's records are split by key into lanes (:func:`lane_buckets`); a lane is identified by
its bucket, the key's hash modulo the lane count, so a key's records are in the same bucket
in every fetch. The next fetch may start before the previous one is finished: each of its
lanes waits for the same bucket of the previous fetch (:attr:`Fetch.finished`) and runs only
if that lane handled all its records, so a key's records are still handled one after the
other, in fetch order, while other keys go on. Fetches settle in the order they were made
(offsets commit in order); a fetch that leaves records unhandled has the partitions of them
sought back, and a fetch that was made before that seek took effect has nothing to commit or
seek on those partitions (:func:`stale`): its records there come again from the sought
offset.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Mapping, Sequence

import attrs

from ._kafka import RecordLike, TopicPartition

__all__ = ["Fetch", "Settled", "lane_buckets", "stale"]


def lane_buckets(records: Sequence[RecordLike], count: int) -> dict[int, list[RecordLike]]:
    """``records`` split into lanes by key, each keeping their order, keyed by bucket (the
    key's CRC-32 modulo ``count``): a key's records share a bucket in every fetch."""
    if count <= 1:
        return {0: list(records)} if records else {}
    split: dict[int, list[RecordLike]] = {}
    for record in records:
        split.setdefault(zlib.crc32(record.key or b"") % count, []).append(record)
    return dict(sorted(split.items()))


@attrs.frozen
class Settled:
    """How a fetch ended: whether every record was handled, whether a record must be tried
    again after a backoff, and the partitions it sought back (to their first unhandled
    record)."""

    complete: bool
    retry: bool
    seek: Mapping[TopicPartition, int]


@attrs.define(eq=False)
class Fetch:
    """One fetch in flight: its records by partition, its lanes by bucket, one future per
    lane that tells the next fetch's lane whether it may go on, and the task that handles
    the lanes and settles the fetch."""

    batch: Mapping[TopicPartition, Sequence[RecordLike]]
    lanes: dict[int, list[RecordLike]]
    finished: dict[int, asyncio.Future[bool]]
    task: asyncio.Task[Settled] | None = None

    @classmethod
    def of(
        cls, batch: Mapping[TopicPartition, Sequence[RecordLike]], lanes: dict[int, list[RecordLike]]
    ) -> Fetch:
        loop = asyncio.get_running_loop()
        return cls(batch, lanes, {bucket: loop.create_future() for bucket in lanes})

    def after(self, bucket: int) -> asyncio.Future[bool] | None:
        """The future of this fetch's lane in ``bucket``, for the same lane of the next fetch."""
        return self.finished.get(bucket)

    def finish(self, bucket: int, complete: bool) -> None:
        future = self.finished[bucket]
        if not future.done():
            future.set_result(complete)

    def abandon(self) -> None:
        """Tell every lane of the next fetch not yet told that this fetch's lane stopped."""
        for bucket in self.finished:
            self.finish(bucket, False)


def stale(
    batch: Mapping[TopicPartition, Sequence[RecordLike]], sought: Mapping[TopicPartition, int]
) -> set[TopicPartition]:
    """The partitions of ``batch`` whose records were fetched before an earlier fetch sought
    the partition back (they begin after the sought offset): the seek stands, and these
    records come again from it."""
    return {tp for tp, rs in batch.items() if rs and tp in sought and rs[0].offset > sought[tp]}
