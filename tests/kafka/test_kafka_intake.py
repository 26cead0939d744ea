"""Total intake without a broker: bounded decoding, every failure settled, dead letters that
fit, records in timestamp order and offsets committed only behind handled work.

The consumer under test is the real :class:`~pipeline_state_kafka.InboundConsumer` over the
real in-memory service and store; the record source is :class:`intake_kit.LogConsumer`
(partition logs in memory) and dead letters go to :class:`intake_kit.MemoryProducer`. The
same behaviour over the real broker is in ``test_kafka_hostile.py``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from intake_kit import FakeRecord, LogConsumer, MemoryProducer, drain, new_consumer
from pipeline_state_kafka import DeadLetterWriter, InboundConsumer
from pipeline_state_kafka._kafka import KafkaError, MessageSizeTooLargeError, topic_partition
from pipeline_state_kafka.consumer import ConsumerSettings, bookkeeping, lanes, merge_by_timestamp, settle
from pipeline_state_kafka.dlq import dead_letter
from pipeline_state_kafka.handlers import Handled
from pipeline_state_kafka.policy import ErrorPolicy, Verdict

from pipeline_state import BatchStatus, EventEnvelope, InMemoryStore, PipelineService
from pipeline_state._intake import (
    DEFAULT_MAX_JSON_DEPTH,
    DEFAULT_MAX_MESSAGE_BYTES,
    IntakeLimits,
    decode_json,
    json_depth,
)
from pipeline_state.errors import (
    InvalidMessageError,
    RejectedDataError,
    StoreError,
    StoreUnavailableError,
)
from pipeline_state.ports import Change
from pipeline_state.profiles.huleedu.events import INBOUND_TOPICS, TOPICS, Topic, parse_message
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes

MEASURED = b'{"event_id":' + b"[" * 100000 + b"]" * 100000 + b"}"
"""The record of issue 10.1 that raised RecursionError and killed ``serve``."""

OUTCOME = Topic.PHASE_OUTCOME.value
REGISTER = Topic.BATCH_REGISTER.value


def _bytes(delivery: tuple[str, dict[str, Any]]) -> bytes:
    return json.dumps(delivery[1]).encode()


def _nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


# -- bounded decoding ------------------------------------------------------------------------


def test_kafka_intake_measured_recursion_record_is_an_invalid_message() -> None:
    with pytest.raises(InvalidMessageError, match="nested 100001 levels deep exceeds the limit of 32"):
        parse_message(OUTCOME, MEASURED)
    with pytest.raises(InvalidMessageError, match="nested"):
        parse_message(OUTCOME, MEASURED.decode())


def test_kafka_intake_size_and_depth_are_bounded_with_documented_defaults() -> None:
    assert (DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_MAX_JSON_DEPTH) == (1024 * 1024, 32)
    env = HuleEduEnvelopes()
    topic, envelope = env.register("b1")
    # The envelope is depth 1, so metadata may nest 31 levels more; 32 is one too many.
    envelope["metadata"] = {"x": _nested(30)}  # envelope + metadata object + 30 lists = 32
    assert json_depth(json.dumps(envelope).encode()) == 32
    parse_message(topic, json.dumps(envelope).encode())
    envelope["metadata"] = {"x": _nested(31)}
    with pytest.raises(InvalidMessageError, match="nested 33 levels"):
        parse_message(topic, json.dumps(envelope).encode())
    # Brackets inside strings (escaped quotes and backslashes too) are not nesting.
    envelope["metadata"] = {"note": '[[[[\\"[[[{{{' * 50 + "\\\\"}
    parse_message(topic, json.dumps(envelope).encode())
    envelope["metadata"] = {"pad": "x" * DEFAULT_MAX_MESSAGE_BYTES}
    with pytest.raises(InvalidMessageError, match=r"exceeds the limit of 1048576 bytes"):
        parse_message(topic, json.dumps(envelope).encode())
    small = IntakeLimits(max_message_bytes=100, max_json_depth=2)
    with pytest.raises(InvalidMessageError, match="limit of 100 bytes"):
        decode_json(topic, b" " * 101, small)
    with pytest.raises(InvalidMessageError, match="limit of 2"):
        decode_json(topic, b"[[[]]]", small)


@pytest.mark.parametrize(
    "raw",
    [
        b"\xff\xfe",
        b'{"event_id": "\xed\xa0\x80"}',  # a lone surrogate, UTF-8 encoded
        "{\ud800}",
        b"\x00",
        b"",
        b"[" * 20000,
        b'{"a": "' + b"\\" * 1001,
        b'"\\"' * 5000,
        b"NaN",
    ],
)
def test_kafka_intake_hostile_bytes_become_invalid_message_errors(raw: bytes | str) -> None:
    with pytest.raises(InvalidMessageError):
        parse_message(OUTCOME, raw)


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet='[]{}"\\ab\x00\u2028'),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(alphabet='[]{}"\\a'), inner, max_size=3)
    ),
    max_leaves=30,
)


def _depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    return 0


@settings(max_examples=200, deadline=None, derandomize=True)
@given(_json_values, st.booleans())
def test_kafka_intake_json_depth_is_exact_for_valid_json(value: Any, ascii_only: bool) -> None:
    assert json_depth(json.dumps(value, ensure_ascii=ascii_only).encode()) == _depth(value)


# -- every failure settled -------------------------------------------------------------------


async def test_kafka_intake_measured_record_is_dead_lettered_and_the_next_record_is_handled() -> None:
    env = HuleEduEnvelopes()
    stop = asyncio.Event()
    source = LogConsumer(stop)
    source.append(OUTCOME, MEASURED, key=b"p1")
    source.append(REGISTER, _bytes(env.register("next")), key=b"next")
    for batched in (True, False):
        consumer, service, producer = new_consumer(source, batched=batched)
        stop.clear()
        source.positions = dict.fromkeys(source.logs, 0)
        source.committed = {}
        await drain(consumer, source)
        assert await service.store.load("next") is not None
        assert source.committed == source.ends()
        ((topic, key, value, headers),) = producer.sent
        assert (topic, key, value) == (f"{OUTCOME}.DLQ", b"p1", MEASURED)
        assert dict(headers)["dlq_reason"].startswith(b"InvalidMessageError: ")
        assert b"nested" in dict(headers)["dlq_reason"]
        assert consumer.stats.retries == 0


async def test_kafka_intake_error_path_never_raises_for_an_undecodable_record() -> None:
    """A handler failing unexpectedly on the measured record: the log context of the failure
    must not decode it again (that raised RecursionError and ended the process)."""
    stop = asyncio.Event()
    source = LogConsumer(stop)
    source.append(OUTCOME, MEASURED, key=b"p1")
    source.append(OUTCOME, b'{"ok": 1}', key=b"p1")
    seen: list[bytes] = []

    async def handler(topic: str, raw: bytes) -> Handled:
        seen.append(raw)
        if raw is MEASURED or raw == MEASURED:
            raise RecursionError("maximum recursion depth exceeded")
        return Handled(result="applied")

    producer = MemoryProducer()
    consumer = InboundConsumer(
        ConsumerSettings("127.0.0.1:1", retry_base_seconds=0.001, retry_max_seconds=0.002),
        handler,
        DeadLetterWriter(producer),
        consumer_factory=lambda _s: source,
    )
    await drain(consumer, source)
    attempts = ErrorPolicy().max_unexpected_attempts
    assert seen.count(MEASURED) == attempts  # unexpected: retried, then dead-lettered
    assert seen[-1] == b'{"ok": 1}'
    assert consumer.stats.dead_lettered == 1
    assert dict(producer.sent[0][3])["dlq_error_type"] == b"RecursionError"
    assert source.committed == source.ends()


class Abort(BaseException):
    """Not an ``Exception``: must not be swallowed by the record boundary."""


async def test_kafka_intake_base_exceptions_still_propagate() -> None:
    stop = asyncio.Event()
    source = LogConsumer(stop)
    source.append(OUTCOME, b"{}")

    async def handler(topic: str, raw: bytes) -> Handled:
        raise Abort

    consumer = InboundConsumer(
        ConsumerSettings("127.0.0.1:1"),
        handler,
        DeadLetterWriter(MemoryProducer()),
        consumer_factory=lambda _s: source,
    )
    with pytest.raises(Abort):
        await drain(consumer, source)
    assert source.committed == {}


async def test_kafka_intake_failing_hooks_and_unprintable_errors_do_not_stop_the_consumer() -> None:
    class Unprintable(Exception):
        def __str__(self) -> str:
            raise ValueError("no text")

    stop = asyncio.Event()
    source = LogConsumer(stop)
    for value in (b"bad", b"good", b"good"):
        source.append(OUTCOME, value)

    async def handler(topic: str, raw: bytes) -> Handled:
        if raw == b"bad":
            raise InvalidMessageError(topic, "bad \ud800 text")  # a lone surrogate in the reason
        if raw == b"good" and handler.calls == 0:  # type: ignore[attr-defined]
            handler.calls += 1  # type: ignore[attr-defined]
            raise Unprintable()
        return Handled(result="applied")

    handler.calls = 0  # type: ignore[attr-defined]

    def hook(record: Any, handled: Handled) -> None:
        raise RuntimeError("hook failed")

    producer = MemoryProducer()
    consumer = InboundConsumer(
        ConsumerSettings("127.0.0.1:1", retry_base_seconds=0.001, retry_max_seconds=0.002),
        handler,
        DeadLetterWriter(producer),
        consumer_factory=lambda _s: source,
        on_handled=hook,
    )
    await drain(consumer, source)
    assert consumer.stats.handled == 2
    assert consumer.stats.dead_lettered == 1
    assert dict(producer.sent[0][3])[
        "dlq_reason"
    ] == b"InvalidMessageError: invalid message on '%s': bad \\ud800 text" % (OUTCOME.encode())
    assert source.committed == source.ends()


# -- dead letters that fit -------------------------------------------------------------------


def test_kafka_dead_letter_too_large_is_truncated_with_size_and_digest() -> None:
    value = b"x" * (3 * 1024 * 1024)
    record = FakeRecord(OUTCOME, 1, 9, b"k" * 5000, value, (("trace", b"t" * 2000),))
    letter = dead_letter(record, InvalidMessageError(OUTCOME, "too big"), max_message_bytes=1024 * 1024)
    headers = dict(letter.headers)
    assert letter.size <= 1024 * 1024 - 512
    assert headers["dlq_truncated"] == b"1"
    assert headers["dlq_original_size"] == str(len(value)).encode()
    assert headers["dlq_original_sha256"] == hashlib.sha256(value).hexdigest().encode()
    assert headers["dlq_original_key_size"] == b"5000"
    assert headers["dlq_original_headers_dropped"] == b"1"
    assert letter.value is not None
    assert value.startswith(letter.value)
    assert len(letter.value) > 900_000
    assert letter.key == b"k" * 5000  # a key that fits comfortably is kept
    small = dead_letter(FakeRecord(OUTCOME, 0, 0, b"k", b"v"), InvalidMessageError(OUTCOME, "bad"))
    assert small.value == b"v"
    assert "dlq_truncated" not in dict(small.headers)
    minimal = dead_letter(record, InvalidMessageError(OUTCOME, "r" * 5000), minimal=True)
    assert minimal.size <= 16 * 1024
    assert len(dict(minimal.headers)["dlq_reason"]) <= 1000


async def test_kafka_dead_letter_refused_by_the_broker_is_sent_minimal_not_retried_for_ever() -> None:
    """The DLQ producer refuses anything above 64 KiB while the writer believes 1 MiB fits
    (a broker with a lower limit than configured): the letter is re-sent minimal once."""
    env = HuleEduEnvelopes()
    stop = asyncio.Event()
    source = LogConsumer(stop)
    big = b"y" * 300_000
    source.append(OUTCOME, big, key=b"p1")
    source.append(REGISTER, _bytes(env.register("after")), key=b"p1")
    consumer, service, producer = new_consumer(source, producer=MemoryProducer(max_request_size=64 * 1024))
    await drain(consumer, source)
    ((topic, _, value, headers),) = producer.sent
    assert topic == f"{OUTCOME}.DLQ"
    assert dict(headers)["dlq_truncated"] == b"1"
    assert dict(headers)["dlq_original_sha256"] == hashlib.sha256(big).hexdigest().encode()
    assert value is not None
    assert len(value) < 16 * 1024
    assert consumer.stats.retries == 0
    assert await service.store.load("after") is not None
    assert source.committed == source.ends()


@pytest.mark.parametrize(
    ("error", "verdict"),
    [
        (MessageSizeTooLargeError(), Verdict.DEAD_LETTER),
        (RejectedDataError("value too long for type character varying(255)"), Verdict.DEAD_LETTER),
        (StoreError("constraint"), Verdict.UNEXPECTED),
        (StoreUnavailableError("down"), Verdict.RETRY),
        (KafkaError(), Verdict.RETRY),
    ],
)
def test_kafka_error_policy_never_retries_what_cannot_clear(error: Exception, verdict: Verdict) -> None:
    assert ErrorPolicy().classify(error) is verdict


class RejectingStore(InMemoryStore):
    """The in-memory store, refusing some batch ids as a SQL database refuses a NUL byte or a
    value too long for its column (the wire models may already refuse those: this store
    stands for whatever else a database rejects)."""

    def _reject(self, changes: Sequence[Change]) -> None:
        for change in changes:
            if change.batch_id.startswith("reject-"):
                raise RejectedDataError("invalid byte sequence: 0x00", batch_id=change.batch_id)

    async def commit(self, change: Change) -> None:
        self._reject([change])
        await super().commit(change)

    async def commit_many(self, changes: Sequence[Change]) -> None:
        self._reject(changes)
        await super().commit_many(changes)


@pytest.mark.parametrize("batched", [True, False])
async def test_kafka_rejected_data_is_dead_lettered_at_once_with_its_reason(batched: bool) -> None:
    env = HuleEduEnvelopes()
    stop = asyncio.Event()
    source = LogConsumer(stop)
    source.append(REGISTER, _bytes(env.register("reject-me")), key=b"a")
    source.append(REGISTER, _bytes(env.register("fine")), key=b"a")
    consumer, service, producer = new_consumer(source, PipelineService(RejectingStore()), batched=batched)
    await drain(consumer, source)
    ((topic, _, _, headers),) = producer.sent
    assert topic == f"{REGISTER}.DLQ"
    assert dict(headers)["dlq_error_type"] == b"RejectedDataError"
    assert b"0x00" in dict(headers)["dlq_reason"]
    assert consumer.stats.retries == 0  # no outage, no five attempts
    assert await service.store.load("fine") is not None


# -- hostile records, generated ---------------------------------------------------------------

_ENV = HuleEduEnvelopes()
_VALID: dict[str, tuple[str, dict[str, Any]]] = {
    Topic.BATCH_REGISTER: _ENV.register("fz"),
    Topic.CONTENT_PROVISIONED: _ENV.provisioned("fz", ["fz-e0"]),
    Topic.ASSOCIATIONS_CONFIRMED: _ENV.group_confirmed("fz", "c1", ["fz-e0"]),
    Topic.ESSAYS_READY: _ENV.items_ready("fz", ["fz-e0"]),
    Topic.VALIDATION_ERRORS: _ENV.validation_errors("fz"),
    Topic.PIPELINE_REQUEST: _ENV.request("fz", "nlp"),
    Topic.PHASE_OUTCOME: _ENV.outcome("fz", "spellcheck", str(uuid.uuid4()), processed=["fz-e0"]),
}
assert set(_VALID) == set(INBOUND_TOPICS)

_hostile_text = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=st.sampled_from(["\x00", "\ud800", "\udfff", "a", "[", '"', "\\"]), max_size=40),
    st.integers(300, 2000).map(lambda n: "z" * n),
    st.just("x" * 200_000),
)
_hostile_value = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.floats(allow_nan=True, allow_infinity=True),
        _hostile_text,
    ),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_hostile_text, inner, max_size=4),
    max_leaves=12,
) | st.integers(20, 200).map(_nested)


@st.composite
def _wrong_field(draw: st.DrawFn) -> tuple[str, bytes]:
    """A valid envelope of an inbound topic with one field (envelope or payload) replaced."""
    topic = draw(st.sampled_from(INBOUND_TOPICS))
    envelope = json.loads(json.dumps(_VALID[topic][1]))
    envelope["event_id"] = str(uuid.UUID(int=draw(st.integers(0, 2**128 - 1))))
    model = TOPICS[topic].model
    fields = [("data", name) for name in model.model_fields] + [
        ("envelope", name) for name in EventEnvelope.model_fields
    ]
    where, name = draw(st.sampled_from(fields))
    target = envelope["data"] if where == "data" else envelope
    target[name] = draw(_hostile_value)
    return topic, json.dumps(envelope).encode()


_hostile_record = st.one_of(
    st.tuples(st.sampled_from(INBOUND_TOPICS), st.binary(max_size=300)),
    st.tuples(st.sampled_from(INBOUND_TOPICS), st.integers(33, 50_000).map(lambda n: b"[" * n + b"]" * n)),
    st.tuples(st.sampled_from(INBOUND_TOPICS), st.just(MEASURED)),
    st.tuples(
        st.sampled_from(INBOUND_TOPICS),
        st.integers(0, 3).map(lambda n: b'{"a":"' + b"q" * (2**20 + n) + b'"}'),
    ),
    st.tuples(
        st.sampled_from(INBOUND_TOPICS),
        st.sampled_from([b"\x00", b'{"event_id": "\x00"}', b'"\xed\xa0\x80"', b'{"a": "\\ud800"}', b"null"]),
    ),
    _wrong_field(),
)


@settings(
    max_examples=120,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(records=st.lists(_hostile_record, min_size=1, max_size=4), batched=st.booleans())
def test_kafka_intake_fuzz_every_hostile_record_gets_an_outcome_and_the_next_is_handled(
    records: list[tuple[str, bytes]], batched: bool
) -> None:
    async def scenario() -> None:
        env = HuleEduEnvelopes()
        stop = asyncio.Event()
        source = LogConsumer(stop, max_fetches=200)
        for index, (topic, value) in enumerate(records):
            source.append(topic, value, partition=index % 2, key=b"fz", timestamp=index)
        valid_id = f"valid-{uuid.uuid4().hex[:8]}"
        source.append(REGISTER, _bytes(env.register(valid_id)), partition=0, timestamp=len(records))
        consumer, service, producer = new_consumer(source, batched=batched)
        await drain(consumer, source)
        stats = consumer.stats
        # Each record is either handled (applied, ignored, denied, duplicate) or dead-lettered...
        assert stats.handled + stats.dead_lettered == len(records) + 1
        assert len(producer.sent) == stats.dead_lettered
        for topic, _, _, headers in producer.sent:
            assert topic.endswith(".DLQ")
            assert dict(headers)["dlq_reason"]
        # ...at once: no hostile record is mistaken for an outage or a bug.
        assert stats.retries == 0
        # Every offset is committed and the valid record behind them was handled.
        assert source.committed == source.ends()
        assert await service.store.load(valid_id) is not None

    asyncio.run(scenario())


# -- records in time order ---------------------------------------------------------------------


def test_kafka_merge_by_timestamp_keeps_partition_order_and_breaks_ties_by_topic_order() -> None:
    a0, a1, b0 = topic_partition("a", 0), topic_partition("a", 1), topic_partition("b", 0)
    batch = {
        b0: [FakeRecord("b", 0, 0, None, None, timestamp=1), FakeRecord("b", 0, 1, None, None, timestamp=5)],
        a1: [FakeRecord("a", 1, 7, None, None, timestamp=9), FakeRecord("a", 1, 8, None, None, timestamp=2)],
        a0: [FakeRecord("a", 0, 3, None, None, timestamp=1), FakeRecord("a", 0, 4, None, None, timestamp=6)],
    }
    merged = [(r.topic, r.partition, r.offset) for r in merge_by_timestamp(batch, ["b", "a"])]
    # t=1: b before a (topic order); a[1]'s late offset 8 (t=2) stays behind offset 7 (t=9).
    assert merged == [("b", 0, 0), ("a", 0, 3), ("b", 0, 1), ("a", 0, 4), ("a", 1, 7), ("a", 1, 8)]
    assert [(r.topic, r.offset) for r in merge_by_timestamp(batch, ["a", "b"])][:2] == [("a", 3), ("b", 0)]


def test_kafka_bookkeeping_commits_only_behind_the_first_unhandled_record() -> None:
    a0, b0, c0 = topic_partition("a", 0), topic_partition("b", 0), topic_partition("c", 0)
    batch = {
        a0: [
            FakeRecord("a", 0, 10, None, None, timestamp=1),
            FakeRecord("a", 0, 11, None, None, timestamp=4),
        ],
        b0: [
            FakeRecord("b", 0, 20, None, None, timestamp=2),
            FakeRecord("b", 0, 21, None, None, timestamp=5),
        ],
        c0: [FakeRecord("c", 0, 30, None, None, timestamp=6)],
    }
    merged = merge_by_timestamp(batch, ["a", "b", "c"])  # a10 b20 a11 b21 c30
    book = bookkeeping(batch, merged, 3)  # a10, b20, a11 done; b21 must be retried
    assert book.commit == {a0: 12, b0: 21}
    assert book.seek == {b0: 21, c0: 30}
    assert bookkeeping(batch, merged, 0).commit == {}
    assert bookkeeping(batch, merged, 0).seek == {a0: 10, b0: 20, c0: 30}
    assert bookkeeping(batch, merged, 5).seek == {}


def test_kafka_lanes_keep_each_batch_in_one_lane_in_time_order() -> None:
    records = [
        FakeRecord("t", p, 100 + i, key, None, timestamp=i)
        for i, (p, key) in enumerate([(0, b"b1"), (1, b"b2"), (0, b"b1"), (2, b"b3"), (1, b"b1"), (0, b"b2")])
    ]
    split = lanes(records, 4)
    assert sorted(r.offset for lane in split for r in lane) == [r.offset for r in records]
    for lane in split:
        assert [r.timestamp for r in lane] == sorted(r.timestamp for r in lane)
    owner = {r.key: i for i, lane in enumerate(split) for r in lane}
    assert all(owner[r.key] == i for i, lane in enumerate(split) for r in lane)  # one lane per key
    assert lanes(records, 1) == [records]


def test_kafka_settle_commits_each_partition_up_to_its_first_unhandled_record() -> None:
    """With lanes, a partition's records may be handled out of offset order: it is committed
    only up to its first unhandled record (later handled ones come again: the inbox absorbs
    them) and seeks back to it."""
    a0, b0 = topic_partition("a", 0), topic_partition("b", 0)
    batch = {
        a0: [FakeRecord("a", 0, o, None, None, timestamp=o) for o in (10, 11, 12)],
        b0: [FakeRecord("b", 0, o, None, None, timestamp=o) for o in (20, 21)],
    }
    book = settle(batch, [batch[a0][1]])  # a11 failed in its lane; a10, a12, b20, b21 done
    assert book.commit == {a0: 11, b0: 22}
    assert book.seek == {a0: 11}
    book = settle(batch, [batch[a0][0], batch[b0][1]])
    assert book.commit == {b0: 21}  # nothing of a0 may be committed
    assert book.seek == {a0: 10, b0: 21}


async def test_kafka_records_of_one_fetch_are_handled_in_timestamp_order_across_topics() -> None:
    """Issue 11.1: registration, provisioning and request of a batch on three topics, fetched
    together with the request's partition first: handled in time order, the run starts."""
    env = HuleEduEnvelopes()
    for batched in (True, False):
        stop = asyncio.Event()
        source = LogConsumer(stop)
        batch_id = f"ord-{batched}"
        source.append(Topic.PIPELINE_REQUEST.value, _bytes(env.request(batch_id, "nlp")), timestamp=300)
        source.append(
            Topic.CONTENT_PROVISIONED.value,
            _bytes(env.provisioned(batch_id, env.item_ids(batch_id, 3))),
            timestamp=200,
        )
        source.append(REGISTER, _bytes(env.register(batch_id)), timestamp=100)
        consumer, service, producer = new_consumer(source, batched=batched)
        order: list[str] = []
        consumer.on_handled = lambda record, handled, order=order: order.append(record.topic)
        await drain(consumer, source)
        assert order == [REGISTER, Topic.CONTENT_PROVISIONED.value, Topic.PIPELINE_REQUEST.value]
        assert consumer.stats.deferred == 0  # nothing had to wait: each came in its turn
        assert producer.sent == []
        state = await service.store.load(batch_id)
        assert state is not None
        assert state.status is BatchStatus.PROCESSING_PIPELINES


class FlakyStore(InMemoryStore):
    """Unavailable for one commit (batched or not) once ``fail_at`` commits went through."""

    def __init__(self, fail_at: int) -> None:
        super().__init__()
        self.fail_at = fail_at
        self.commits = 0
        self.failed = False

    def _maybe_fail(self) -> None:
        if not self.failed and self.commits == self.fail_at:
            self.failed = True
            raise StoreUnavailableError("the database went away")
        self.commits += 1

    async def commit(self, change: Change) -> None:
        self._maybe_fail()
        await super().commit(change)

    async def commit_many(self, changes: Sequence[Change]) -> None:
        raise StoreUnavailableError("no batched writes today")  # always one by one


async def test_kafka_transient_failure_midway_commits_the_prefix_and_seeks_every_partition_back() -> None:
    env = HuleEduEnvelopes()
    stop = asyncio.Event()
    source = LogConsumer(stop)
    # Two topics, interleaved in time: r0 (t=0) p0 (t=1) r1 (t=2) p1 (t=3) ...
    for i in range(3):
        source.append(REGISTER, _bytes(env.register(f"r{i}")), timestamp=2 * i)
        source.append(Topic.PIPELINE_REQUEST.value, _bytes(env.request(f"r{i}", "nlp")), timestamp=2 * i + 1)
    store = FlakyStore(fail_at=2)  # r0 and its request commit; r1 fails once
    order: list[tuple[str, int]] = []
    consumer, _, producer = new_consumer(source, PipelineService(store))
    consumer.on_handled = lambda record, handled: order.append((record.topic, record.offset))
    commits: list[dict[Any, int]] = []
    real_commit = source.commit

    async def spy(offsets: Any = None) -> None:
        commits.append(dict(offsets or {}))
        await real_commit(offsets)

    source.commit = spy  # type: ignore[method-assign]
    await drain(consumer, source)
    register_tp, request_tp = topic_partition(REGISTER, 0), topic_partition(Topic.PIPELINE_REQUEST.value, 0)
    # First pass: r0 and its request handled, r1 failed: nothing past it is committed and
    # both partitions are sought back to their first unhandled record.
    assert commits[0] == {register_tp: 1, request_tp: 1}
    assert (register_tp, 1) in source.seeks
    assert (request_tp, 1) in source.seeks
    request = Topic.PIPELINE_REQUEST.value
    assert order == [(REGISTER, 0), (request, 0), (REGISTER, 1), (request, 1), (REGISTER, 2), (request, 2)]
    assert consumer.stats.retries == 1
    assert producer.sent == []
    assert source.committed == source.ends()


def test_kafka_dlq_limit_is_lowered_to_the_smallest_limit_the_broker_reports() -> None:
    from pipeline_state_kafka.dlq import effective_limit

    assert effective_limit(1024 * 1024, {}) == 1024 * 1024
    assert effective_limit(1024 * 1024, {"broker 1": 1_048_588}) == 1024 * 1024
    assert effective_limit(1024 * 1024, {"broker 1": 1_048_588, "t.DLQ": 500_000}) == 500_000
    assert effective_limit(2 * 1024 * 1024, {"broker 1": 1_000_012, "broker 2": -1}) == 1_000_012
