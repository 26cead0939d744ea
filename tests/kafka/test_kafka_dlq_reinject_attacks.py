"""``pipeline-state dlq reinject`` end to end on the test broker (SQLite store, the CLI as a
child process).

Were defects (fixed): a letter whose batch the store cannot read, or one failing with an
unexpected store error, stopped the whole command (exit 4, no report) and blocked every
later letter; a letter naming another origin topic
(``dlq_original_topic``) was applied. Held: truncated copies refused by their header,
``--timeout`` respected, a ``dlq_waited_for`` letter re-injected by two operators at once
while its original is produced back applies once.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import attrs
import pytest
from pipeline_state_kafka import ProducerLike
from pipeline_state_kafka.dlq import DeadLetterWriter, ParkedFact, dead_letter
from pipeline_state_kafka.policy import ErrorPolicy, Verdict
from pipeline_state_kafka.testing import LocalBroker
from pipeline_state_sql import open_store

from pipeline_state import PipelineService
from pipeline_state.errors import InvalidMessageError, StoreError, StoreUnavailableError
from pipeline_state.profiles.huleedu.events import Topic
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(60)]

REGISTER = Topic.BATCH_REGISTER.value


@attrs.frozen
class Ran:
    code: int
    out: str
    err: str
    seconds: float

    @property
    def json(self) -> Any:
        return json.loads(self.out)


async def _cli(*argv: str, limit: float = 25) -> Ran:
    command = [sys.executable, "-m", "pipeline_state._cli", *argv]
    start = time.monotonic()
    done = await asyncio.to_thread(
        subprocess.run, command, env=dict(os.environ), capture_output=True, text=True, timeout=limit
    )
    return Ran(done.returncode, done.stdout, done.stderr, time.monotonic() - start)


async def _store(tmp_path: Path) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path / 'state.db'}"
    await (await open_store(url)).close()
    return url


async def _apply(url: str, *deliveries: tuple[str, dict[str, Any]]) -> None:
    store = await open_store(url)
    try:
        service = PipelineService(store)
        for topic, envelope in deliveries:
            result = await service.handle_message(topic, envelope)
            assert result.label == "applied", result.label
    finally:
        await store.close()


async def _letters(producer: ProducerLike, prefix: str, values: list[bytes]) -> None:
    """Dead-letter ``values`` of the registration topic as the consumer does (one key: one
    partition, in order)."""
    writer = DeadLetterWriter(producer, group_id=f"{prefix}group")
    for value in values:
        record = ParkedFact(topic=f"{prefix}{REGISTER}", key=b"k", value=value, partition=0, offset=1)
        await writer.send(record, StoreUnavailableError("the disk was full"))


def _args(broker: LocalBroker, prefix: str, url: str) -> list[str]:
    return [
        "dlq", "reinject", "--kafka", broker.bootstrap, "--topic", REGISTER,
        "--topic-prefix", prefix, "--store", url, "--as", "erin", "--timeout", "5",
    ]  # fmt: skip


async def _status(url: str, batch_id: str) -> str | None:
    store = await open_store(url)
    try:
        state = await store.load(batch_id)
        return None if state is None else state.status.value
    finally:
        await store.close()


# ---------------------------------------------------------------------------------------------


async def test_a_letter_of_a_corrupt_batch_fails_alone_and_the_next_letters_still_apply(
    broker: LocalBroker, prefix: str, producer: ProducerLike, tmp_path: Path
) -> None:
    """The consumer's policy dead-letters a record whose batch row cannot be decoded
    (``CorruptStateError`` is in ``DEFAULT_POISON``) and goes on; so does ``dlq reinject``:
    that letter fails alone (exit 1, reported) and the next ones apply. Was a defect (fixed):
    it aborted the whole command with exit 4 ("the store cannot be reached"), no per-letter
    report, and every letter after it could never be re-injected."""
    url = await _store(tmp_path)
    env = HuleEduEnvelopes()
    await _apply(url, env.register("c1", items=1))
    with sqlite3.connect(tmp_path / "state.db") as db:  # the row of c1 cannot be decoded
        db.execute("UPDATE batches SET state = '\"not a state\"' WHERE batch_id = 'c1'")
    fresh = env.register("c3", items=1)
    await _letters(
        producer, prefix, [json.dumps(env.register("c1", items=1)[1]).encode(), json.dumps(fresh[1]).encode()]
    )

    ran = await _cli(*_args(broker, prefix, url), "--json")

    assert "Traceback" not in ran.err, ran.err[-2000:]
    assert ran.code == 1, (ran.code, ran.out, ran.err)  # one letter still fails: refused, not "unreachable"
    letters = ran.json["letters"]
    assert [(d["batch_id"], d["result"]) for d in letters] == [("c1", "failed"), ("c3", "applied")]
    assert "c1" in letters[0]["error"]
    assert await _status(url, "c3") is not None  # the letter after the corrupt one applied


async def test_a_letter_that_fails_unexpectedly_again_fails_alone_and_the_next_letters_still_apply(
    broker: LocalBroker, prefix: str, producer: ProducerLike, tmp_path: Path
) -> None:
    """A letter the consumer dead-lettered after repeated *unexpected* failures (a store error
    that says neither "unavailable" nor "rejected": a rule a DBA added refuses the batch)
    fails the same way when re-injected; it fails alone and the next letter applies
    (docs/operations.md). Was a defect (found by an attack on the operator commands): the
    command stopped there with exit 4 ("unreachable"; the store was up), so the letters after
    it were blocked on every run."""
    url = await _store(tmp_path)
    with sqlite3.connect(tmp_path / "state.db") as db:  # the database refuses batch u1, for ever
        db.execute(
            "CREATE TRIGGER refuse_u1 BEFORE INSERT ON batches WHEN NEW.batch_id = 'u1' "
            "BEGIN SELECT RAISE(ABORT, 'u1 is refused by a rule of the DBA'); END"
        )
    error = StoreError("the database rejected an operation (batch 'u1'): u1 is refused by a rule of the DBA")
    # the premise: the consumer retries this error a few times, then dead-letters the record
    assert ErrorPolicy().classify(error) is Verdict.UNEXPECTED
    env = HuleEduEnvelopes()
    writer = DeadLetterWriter(producer, group_id=f"{prefix}group")
    for batch_id in ("u1", "u2"):
        value = json.dumps(env.register(batch_id, items=1)[1]).encode()
        await writer.send(ParkedFact(f"{prefix}{REGISTER}", b"k", value, partition=0, offset=1), error)

    ran = await _cli(*_args(broker, prefix, url), "--json")

    assert "Traceback" not in ran.err, ran.err[-2000:]
    assert await _status(url, "u2") is not None, f"the letter after u1 was never re-injected: {ran}"
    assert ran.code == 1, (ran.code, ran.err)
    letters = ran.json["letters"]
    assert [(d["batch_id"], d["result"]) for d in letters] == [("u1", "failed"), ("u2", "applied")]


async def test_a_letter_whose_headers_name_another_origin_is_refused(
    broker: LocalBroker, prefix: str, producer: ProducerLike, tmp_path: Path
) -> None:
    """A letter of ``<prefix><topic>.DLQ`` whose headers say it was consumed from another
    deployment's topic (another prefix) or from a topic this deployment does not consume is
    refused explicitly (``failed``, exit 1) and changes nothing. Was a defect (fixed): it
    was applied as a record of ``--topic`` to this deployment's store, exit 0."""
    url = await _store(tmp_path)
    env = HuleEduEnvelopes()
    dlq = f"{prefix}{REGISTER}.DLQ"
    origins = {"x1": f"staging.{REGISTER}", "x2": f"{prefix}huleedu.not.a.consumed.topic.v1"}
    for batch_id, origin in origins.items():
        value = json.dumps(env.register(batch_id, items=1)[1]).encode()
        headers = [
            ("dlq_reason", b"StoreUnavailableError: the disk was full"),
            ("dlq_error_type", b"StoreUnavailableError"),
            ("dlq_original_topic", origin.encode()),
            ("dlq_original_partition", b"0"),
            ("dlq_original_offset", b"3"),
        ]
        await producer.send_and_wait(dlq, value, b"k", headers=headers)

    ran = await _cli(*_args(broker, prefix, url), "--json")

    assert "Traceback" not in ran.err, ran.err[-2000:]
    got = [(d["batch_id"], d["result"]) for d in ran.json["letters"]]
    assert got == [("x1", "failed"), ("x2", "failed")], got
    assert ran.code == 1
    assert await _status(url, "x1") is None
    assert await _status(url, "x2") is None


async def test_truncated_copies_are_refused_even_when_their_value_still_parses(
    broker: LocalBroker, prefix: str, producer: ProducerLike, tmp_path: Path
) -> None:
    """A truncated copy is refused by its ``dlq_truncated`` header, not by failing to parse:
    a registration padded with trailing whitespace past the letter's limit leaves a complete
    JSON document in the truncated copy (it parses), and a record whose headers alone made
    it too big keeps its whole value. Both fail one line each, naming the digest, change
    nothing, and a repeat fails the same way (never a partial message applied)."""
    url = await _store(tmp_path)
    env = HuleEduEnvelopes()
    padded = json.dumps(env.register("p1", items=1)[1]).encode() + b" " * 40_000
    headers_only = json.dumps(env.register("p2", items=1)[1]).encode()
    writer = DeadLetterWriter(producer, group_id=f"{prefix}group", max_message_bytes=16 * 1024)
    error = InvalidMessageError(REGISTER, "too large")
    await writer.send(ParkedFact(f"{prefix}{REGISTER}", b"k", padded, partition=0, offset=1), error)
    big_headers = (("tracestate", b"x" * 30_000),)
    for value, hdrs in ((padded, ()), (headers_only, big_headers)):  # the premise
        copy = dead_letter(
            ParkedFact(f"{prefix}{REGISTER}", b"k", value, hdrs, 0, 1), error, max_message_bytes=16 * 1024
        )
        assert dict(copy.headers)["dlq_truncated"] == b"1"
        assert json.loads(copy.value or b"")["event_id"]  # the copy still parses
    await writer.send(ParkedFact(f"{prefix}{REGISTER}", b"k", headers_only, big_headers, 0, 2), error)

    for _ in range(2):
        ran = await _cli(*_args(broker, prefix, url), "--json")
        assert ran.code == 1, (ran.code, ran.err)
        letters = ran.json["letters"]
        assert [d["result"] for d in letters] == ["failed", "failed"]
        assert all("truncated" in d["error"] and "\n" not in d["error"] for d in letters)
        assert await _status(url, "p1") is None
        assert await _status(url, "p2") is None


async def test_reinject_is_bounded_by_timeout_against_a_silent_broker(tmp_path: Path) -> None:
    """A listener that accepts connections and never answers: ``--timeout 1`` ends the
    command in about a second, exit 4, one line on stderr, nothing on stdout (``--json``)."""
    url = await _store(tmp_path)
    sock = __import__("socket").socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(50)
    port = sock.getsockname()[1]
    try:
        ran = await _cli(
            "dlq", "reinject", "--kafka", f"127.0.0.1:{port}", "--topic", REGISTER,
            "--store", url, "--timeout", "1", "--json", limit=20,
        )  # fmt: skip
    finally:
        sock.close()
    assert ran.code == 4, ran
    # A second of timeout plus a Python start-up (2.5-3.5 s here, 8 s seen at load 4); without
    # the bound the command hangs until the harness kills it (limit=20).
    assert ran.seconds < 15, ran.seconds
    assert ran.out == ""
    assert ran.err.count("\n") == 1, ran.err
    assert ran.err.startswith("error: "), ran.err


async def test_a_waited_letter_replayed_three_ways_at_once_applies_once(
    broker: LocalBroker, prefix: str, producer: ProducerLike, tmp_path: Path
) -> None:
    """A provisioning that waited too long for its batch (``dlq_waited_for``), its batch
    registered since: two operators re-inject its letter while its original is produced back
    to its topic, all at once, next to a running serve. It applies once (one transition under
    the derived id), the batch moves on, every other replay is a duplicate, and a repeat
    changes nothing."""
    from kafka_harness import fast_settings, running, wait_status
    from pipeline_state_kafka import dlq_topic
    from pipeline_state_kafka.testing import Collector

    from pipeline_state import BatchStatus
    from pipeline_state._replay import replay_id

    url = await _store(tmp_path)
    env = HuleEduEnvelopes()
    provisioned = Topic.CONTENT_PROVISIONED.value
    settings = attrs.evolve(
        fast_settings(broker.bootstrap, prefix, store_url=url), sweep_seconds=0.2, waiting_window_seconds=1.0
    )
    command = ["dlq", "reinject", "--kafka", broker.bootstrap, "--topic", provisioned]
    command += ["--topic-prefix", prefix, "--store", url, "--json", "--timeout", "5"]
    async with (
        running(settings) as runner,
        Collector(broker.bootstrap, [dlq_topic(provisioned)], topic_prefix=prefix) as dlq,
    ):
        fact = env.provisioned("w1", env.item_ids("w1", 2))[1]
        raw = json.dumps(fact).encode()
        await producer.send_and_wait(f"{prefix}{provisioned}", raw, b"w1")
        await dlq.wait_for(lambda c: len(c.records) == 1, within=15, what="the dead letter")
        await producer.send_and_wait(
            f"{prefix}{REGISTER}", json.dumps(env.register("w1", items=2)[1]).encode(), b"w1"
        )
        await wait_status(runner, "w1", BatchStatus.AWAITING_CONTENT_VALIDATION, within=15)

        alice, bob, _ = await asyncio.gather(
            _cli(*command, "--as", "alice"),
            _cli(*command, "--as", "bob"),
            producer.send_and_wait(f"{prefix}{provisioned}", raw, b"w1"),
        )
        await wait_status(runner, "w1", BatchStatus.READY_FOR_PIPELINE_EXECUTION, within=15)
        await asyncio.sleep(0.5)
        again = await _cli(*command, "--as", "carol")
        assert not dlq.records[1:], "nothing was dead-lettered again"

    for ran in (alice, bob, again):
        assert ran.code == 0, ran
    results = [d["result"] for r in (alice, bob) for d in r.json["letters"]]
    assert results.count("applied") <= 1, results
    assert set(results) <= {"applied", "duplicate"}, results
    assert [d["result"] for d in again.json["letters"]] == ["duplicate"]
    store = await open_store(url)
    try:
        log = await store.transitions("w1")
    finally:
        await store.close()
    derived = replay_id(fact["event_id"])
    batch_moves = [t for t in log if t.event_id == derived and t.entity == "batch"]
    assert len(batch_moves) == 1, [(t.trigger, t.event_id, t.requested_by) for t in log]
    assert not [t for t in log if t.event_id == fact["event_id"]]
