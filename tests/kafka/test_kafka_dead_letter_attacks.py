"""Found by an attack on the Kafka adapter and ``serve`` as a consumer: poison records, dead
letters and their replay, against a real Kafka-protocol broker (the session broker of
``conftest.py``).

The promise: a poison record is dead-lettered exactly once with a reason and never blocks
its partition; replaying a dead letter after its cause was fixed applies it once; hostile
headers and keys never stop ``serve``. The tests whose docstring says "Was a defect"
failed before their fix; the other held.
"""

from __future__ import annotations

import json
from typing import Any

import attrs
import pytest
from intake_kit import keys_in_different_lanes
from kafka_harness import fast_settings, running, wait_status, wait_until
from pipeline_state_kafka import ProducerLike, ProducerSettings, create_producer, dlq_topic
from pipeline_state_kafka.testing import Collector, LocalBroker
from pipeline_state_service import OpenedStore

from pipeline_state import BatchStatus, InMemoryStore
from pipeline_state.profiles.huleedu.events import OUTBOUND_TOPICS, Topic
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes

pytestmark = pytest.mark.kafka

REGISTER = Topic.BATCH_REGISTER.value
PROVISIONED = Topic.CONTENT_PROVISIONED.value
OUTCOME = Topic.PHASE_OUTCOME.value
REQUEST = Topic.PIPELINE_REQUEST.value


def _bytes(delivery: tuple[str, dict[str, Any]]) -> bytes:
    return json.dumps(delivery[1]).encode()


async def test_a_poison_record_is_dead_lettered_once_while_another_lane_retries(
    broker: LocalBroker, prefix: str, producer: ProducerLike
) -> None:
    """Was a defect (fixed): a poison record and a good record of another batch share a
    partition (the good one first). The store is down for a moment (a database restart):
    the good record's lane fails transiently and is retried, while the poison record's lane
    dead-letters it. The partition's offset can only be committed up to the good record, so
    every retry fetches
    the poison record again and writes ANOTHER dead letter: one bad record becomes a copy
    in ``<topic>.DLQ`` per retry of the outage (at ``retry_max_seconds`` = 5 s by default,
    720 copies an hour), each re-injectable, each counted in ``dead_lettered``.

    The adapter README promises "parks the raw message on ``<topic>.DLQ`` with the reason
    and goes on", and the only documented way to get two letters is a crash between writing
    the letter and committing the offset. The consumer now remembers the positions it
    dead-lettered until a commit covers them, and writes no second letter."""
    env = HuleEduEnvelopes()
    good_key, bad_key = keys_in_different_lanes()
    memory = InMemoryStore()
    opened = OpenedStore(memory, memory)
    settings = fast_settings(broker.bootstrap, prefix)  # memory store: 4 lanes
    topic = f"{prefix}{REGISTER}"
    async with (
        running(settings, store=opened) as runner,
        Collector(broker.bootstrap, [dlq_topic(REGISTER)], topic_prefix=prefix) as dlq,
        Collector(broker.bootstrap, OUTBOUND_TOPICS, topic_prefix=prefix) as out,
    ):
        memory.available = False  # the database goes away for a moment
        good = env.register(good_key, items=2)
        await producer.send_and_wait(topic, _bytes(good), good_key.encode(), partition=0)
        await producer.send_and_wait(topic, b"{this is not json", bad_key.encode(), partition=0)
        await dlq.wait_for(lambda c: len(c.records) >= 1, what="the poison record's dead letter")
        await wait_until(lambda: runner.stats.retries >= 4, what="retries while the store is down")
        memory.available = True
        await out.wait_for(lambda c: bool(c.on(Topic.ESSAYS_REGISTERED)), what="the good registration")
        await wait_until(lambda: runner.stats.handled >= 1, what="the registration handled")
        # Let any further fetch of the partition settle.
        await wait_until(lambda: runner.stats.offset_commits >= 1, what="an offset commit")
        letters = list(dlq.records)
        dead_lettered = runner.stats.dead_lettered
    assert all(letter.raw == b"{this is not json" for letter in letters)
    assert (len(letters), dead_lettered) == (1, 1), (
        f"one poison record was dead-lettered {len(letters)} times (stats.dead_lettered="
        f"{dead_lettered}) while another lane of its partition was retried; offsets of the "
        f"letters: {[letter.headers.get('dlq_original_offset') for letter in letters]}"
    )


async def test_a_waited_fact_replayed_to_its_topic_as_documented_applies(
    broker: LocalBroker, prefix: str, producer: ProducerLike
) -> None:
    """Was a defect (fixed): a provisioning event for a batch that is not registered waits,
    then is dead-lettered
    (``WaitedTooLongError``, ``dlq_waited_for=batch_registration``). The operator fixes the
    cause (registers the batch) and replays the letter as the Kafka adapter's README says
    ("produce its key and value back to ``dlq_original_topic``"; docs/operations.md:
    "unknown batch ... register the batch, then replay"; "Replaying a dead letter after the
    fix is safe: the inbox ignores anything already processed").

    What happened: the sweeper closed the fact's event id in the inbox as
    ``dead_lettered:batch_registration``, so the replayed record was a ``duplicate`` and was
    dropped: the batch never got its content. Only ``dlq reinject`` knew to derive a fresh
    id. The service now handles a replay of a dead-lettered fact under the id ``dlq
    reinject`` derives (:mod:`pipeline_state._replay`), whichever way it came back."""
    env = HuleEduEnvelopes()
    batch = "replayed-w1"
    provisioning = env.provisioned(batch, env.item_ids(batch, 2))
    settings = attrs.evolve(
        fast_settings(broker.bootstrap, prefix), sweep_seconds=0.2, waiting_window_seconds=2.0
    )
    async with (
        running(settings) as runner,
        Collector(broker.bootstrap, [dlq_topic(PROVISIONED)], topic_prefix=prefix) as dlq,
        Collector(broker.bootstrap, OUTBOUND_TOPICS, topic_prefix=prefix) as out,
    ):
        await producer.send_and_wait(f"{prefix}{PROVISIONED}", _bytes(provisioning), batch.encode())
        await dlq.wait_for(lambda c: len(c.records) == 1, within=30, what="the expired fact's letter")
        (letter,) = dlq.records
        assert letter.headers["dlq_error_type"] == "WaitedTooLongError"
        # The fix: the batch is registered now.
        await producer.send_and_wait(
            f"{prefix}{REGISTER}", _bytes(env.register(batch, items=2)), batch.encode()
        )
        await out.wait_for(lambda c: bool(c.on(Topic.ESSAYS_REGISTERED)), what="the registration")
        before = runner.stats.handled
        # The documented replay: its key and value back to dlq_original_topic.
        assert letter.raw is not None
        assert letter.key is not None
        await producer.send_and_wait(letter.headers["dlq_original_topic"], letter.raw, letter.key.encode())
        await wait_until(lambda: runner.stats.handled > before, what="the replayed record handled")
        try:
            await wait_status(runner, batch, BatchStatus.READY_FOR_PIPELINE_EXECUTION, within=5)
        except TimeoutError:
            assert runner.opened is not None
            state = await runner.opened.store.load(batch)
            entry = await runner.opened.store.inbox_entry(provisioning[1]["event_id"])  # type: ignore[attr-defined]
            pytest.fail(
                "the replayed dead letter was not applied: batch status "
                f"{state.status.value if state else None}, duplicates counted "
                f"{runner.stats.duplicates}, inbox entry of its event id: "
                f"{entry.result if entry else None}"
            )
        # A second replay of the same letter is a duplicate: nothing applies twice.
        duplicates, handled = runner.stats.duplicates, runner.stats.handled
        await producer.send_and_wait(letter.headers["dlq_original_topic"], letter.raw, letter.key.encode())
        await wait_until(lambda: runner.stats.handled > handled, what="the second replay handled")
        assert runner.stats.duplicates == duplicates + 1


async def test_a_poison_fact_consumed_before_its_registration_is_dead_lettered(
    broker: LocalBroker, prefix: str, producer: ProducerLike
) -> None:
    """Was a defect (fixed): a provisioning naming three items for a batch registered with
    two can never apply. Consumed after the registration it is dead-lettered at once
    (``ItemMismatchError``); consumed *before* it, it waited, was re-attempted when the
    registration applied, and ended as ``rejected:ItemMismatchError`` in the inbox with no
    letter at all (found by an attack on the Kafka intake). Now the waiting sweep letters it
    (``NeverAppliesError``, naming the error), long before the waiting window ends."""
    env = HuleEduEnvelopes()
    batch = "poison-early"
    provisioning = env.provisioned(batch, env.item_ids(batch, 3))
    settings = attrs.evolve(fast_settings(broker.bootstrap, prefix), sweep_seconds=0.2)
    assert settings.waiting_window_seconds >= 60  # the letter cannot come from the window
    async with (
        running(settings) as runner,
        Collector(broker.bootstrap, [dlq_topic(PROVISIONED)], topic_prefix=prefix) as dlq,
    ):
        await producer.send_and_wait(f"{prefix}{PROVISIONED}", _bytes(provisioning), batch.encode())
        await wait_until(lambda: runner.stats.deferred == 1, what="the provisioning to wait")
        await producer.send_and_wait(
            f"{prefix}{REGISTER}", _bytes(env.register(batch, items=2)), batch.encode()
        )
        await dlq.wait_for(lambda c: len(c.records) == 1, within=30, what="the poison fact's letter")
        (letter,) = dlq.records
        assert letter.raw == _bytes(provisioning)
        assert letter.headers["dlq_error_type"] == "NeverAppliesError"
        assert "ItemMismatchError" in letter.headers["dlq_reason"]
        assert letter.headers["dlq_waited_for"].startswith("never_applies:ItemMismatchError")
        assert letter.headers["dlq_event_id"] == provisioning[1]["event_id"]
        await wait_until(lambda: runner.stats.waiting_dead_lettered == 1, what="the sweep to count it")
        assert runner.opened is not None
        assert await runner.opened.store.count_waiting() == 0


async def test_hostile_headers_and_keys_are_dead_lettered_once_and_never_stop_serve(
    broker: LocalBroker, prefix: str
) -> None:
    """Poison and valid records with hostile headers (a 600 KB ``tracestate`` behind a valid
    ``traceparent``, 3,000 headers, malformed and all-zero ``traceparent``, two
    ``traceparent`` headers, spoofed ``dlq_*`` headers) and non-UTF-8 keys: every poison
    record is dead-lettered exactly once with its reason (spoofed ``dlq_*`` headers replaced
    by the consumer's own), every valid record is handled, serve keeps going."""
    env = HuleEduEnvelopes()
    big = create_producer(ProducerSettings(broker.bootstrap, client_id="hostile", max_request_size=4_000_000))
    await big.start()
    valid_tp = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    hostile: list[list[tuple[str, bytes]]] = [
        [("traceparent", valid_tp), ("tracestate", b" \t" * 300_000)],
        [(f"h{i}", b"x" * 10) for i in range(3000)],
        [("traceparent", b"zz-" + b"f" * 5000)],
        [("traceparent", b"00-" + b"0" * 32 + b"-" + b"0" * 16 + b"-01")],
        [("traceparent", valid_tp), ("traceparent", b"\xff\xfe\xfd")],
        [("dlq_reason", b"spoofed"), ("dlq_original_topic", b"elsewhere"), ("traceparent", b"\x00" * 600)],
    ]
    keys = [b"\xff\xfe-key", b"\x80", b"ok-key", b"\xc3\x28", b"", b"\xed\xa0\x80"]
    poison_values = [b"{not json", b'{"event_id": 1}', b"\xff\xfe", b"[]", b"null", b"{}"]
    try:
        async with (
            running(fast_settings(broker.bootstrap, prefix)) as runner,
            Collector(broker.bootstrap, [dlq_topic(REGISTER)], topic_prefix=prefix) as dlq,
            Collector(broker.bootstrap, OUTBOUND_TOPICS, topic_prefix=prefix) as out,
        ):
            topic = f"{prefix}{REGISTER}"
            good_ids = []
            for i, (headers, key, poison) in enumerate(zip(hostile, keys, poison_values, strict=True)):
                await big.send_and_wait(topic, poison, key, headers=headers)
                good = env.register(f"hh{i}", items=1)
                good_ids.append(good[1]["event_id"])
                await big.send_and_wait(topic, _bytes(good), key, headers=headers)
            await dlq.wait_for(lambda c: len(c.records) >= len(hostile), within=40, what="dead letters")
            await out.wait_for(
                lambda c: (
                    {r.data.get("entity_id") for r in c.on(Topic.ESSAYS_REGISTERED)}
                    >= {f"hh{i}" for i in range(len(hostile))}
                ),
                within=40,
                what="every valid registration",
            )
            await wait_until(lambda: runner.stats.handled >= len(hostile), what="every valid record")
            letters = list(dlq.records)
            assert runner.stats.dead_lettered == len(hostile)
        assert len(letters) == len(hostile)
        assert sorted(letter.raw or b"" for letter in letters) == sorted(poison_values)
        for letter in letters:
            assert letter.headers["dlq_error_type"] == "InvalidMessageError"
            assert letter.headers["dlq_reason"].startswith("InvalidMessageError: ")
            assert letter.headers["dlq_original_topic"] == topic
    finally:
        await big.stop()
