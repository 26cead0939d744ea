"""``pipeline-state dlq reinject`` (issue 15.3): dead letters of ``<topic>.DLQ`` on the real
broker are handled through the engine against a real store, as the operator who asked; a
repeat is a duplicate, a letter that still cannot apply is reported and left where it is."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import attrs
import pytest
from kafka_harness import fast_settings, running, wait_status
from pipeline_state_kafka import ProducerLike, dlq_topic
from pipeline_state_kafka.dlq import DeadLetterWriter, ParkedFact
from pipeline_state_kafka.testing import Collector, LocalBroker
from pipeline_state_sql import open_store

from pipeline_state import BatchStatus
from pipeline_state.errors import StoreUnavailableError
from pipeline_state.ports import TransitionRecord
from pipeline_state.profiles.huleedu.events import Topic
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes

pytestmark = pytest.mark.kafka

REGISTER = Topic.BATCH_REGISTER.value


@attrs.frozen
class Ran:
    code: int
    out: str
    err: str


async def _cli(*argv: str) -> Ran:
    """``python -m pipeline_state._cli ...`` in a child process (its real exit code)."""
    command = [sys.executable, "-m", "pipeline_state._cli", *argv]
    done = await asyncio.to_thread(
        subprocess.run, command, env=dict(os.environ), capture_output=True, text=True, timeout=120
    )
    return Ran(done.returncode, done.stdout, done.stderr)


async def _letters(
    producer: ProducerLike, prefix: str, values: list[tuple[str, bytes]], *, truncated: bool = False
) -> None:
    """Dead-letter ``(key, value)`` records of the registration topic, as the consumer does
    (``truncated``: the minimal copy the consumer sends when the broker refused the full one)."""
    writer = DeadLetterWriter(producer, group_id=f"{prefix}group")
    for key, value in values:
        record = ParkedFact(topic=f"{prefix}{REGISTER}", key=key.encode(), value=value, partition=0, offset=7)
        await writer.send(record, StoreUnavailableError("the disk was full"), minimal=truncated)


async def _log(url: str, batch_id: str) -> list[TransitionRecord]:
    store = await open_store(url)
    try:
        return await store.transitions(batch_id)
    finally:
        await store.close()


async def test_dead_letters_are_reinjected_through_the_engine_once(
    broker: LocalBroker, prefix: str, producer: ProducerLike, tmp_path: Path
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'state.db'}"
    await (await open_store(url)).close()  # the deployment's store (created by serve)
    env = HuleEduEnvelopes()
    first, second = env.register("b1", items=2), env.register("b2", items=1)
    # One key, so the three letters share a partition and keep their order.
    await _letters(
        producer,
        prefix,
        [
            ("k", json.dumps(first[1]).encode()),
            ("k", b"{still not json"),
            ("k", json.dumps(second[1]).encode()),
        ],
    )
    await _letters(producer, prefix, [("k", json.dumps(env.register("b3")[1]).encode())], truncated=True)
    base = ["--kafka", broker.bootstrap, "--topic", REGISTER, "--topic-prefix", prefix, "--store", url]

    partly = await _cli("dlq", "reinject", *base, "--limit", "2", "--as", "erin", "--json")

    assert partly.code == 1, partly.err  # one letter still cannot apply
    doc = json.loads(partly.out)
    assert doc["topic"] == f"{prefix}{REGISTER}.DLQ"
    assert [(d["batch_id"], d["result"]) for d in doc["letters"]] == [("b1", "applied"), (None, "failed")]
    assert doc["letters"][0]["event_id"] == first[1]["event_id"]  # the letter keeps its event id
    assert "JSON" in doc["letters"][1]["error"]
    assert doc["failed"] == 1
    rows = await _log(url, "b1")
    assert [(r.trigger, r.requested_by) for r in rows] == [("register", "erin")]
    assert await _log(url, "b2") == []  # past the limit

    rest = await _cli("dlq", "reinject", *base, "--as", "erin")

    assert rest.code == 1
    lines = rest.out.splitlines()
    assert len(lines) == 5
    assert lines[0].endswith("batch b1  duplicate")
    assert " failed: " in lines[1]
    assert lines[2].endswith("batch b2  applied")
    assert "failed: a truncated copy" in lines[3]  # cannot be replayed: the original is needed
    assert lines[4].endswith(": 1 applied, 1 duplicate, 2 failed")
    assert [(r.trigger, r.requested_by) for r in await _log(url, "b2")] == [("register", "erin")]
    assert len(await _log(url, "b1")) == 1  # the repeat changed nothing


async def test_reinject_errors_have_their_exit_codes(broker: LocalBroker, tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'state.db'}"
    await (await open_store(url)).close()

    down = await _cli("dlq", "reinject", "--kafka", "127.0.0.1:1", "--topic", REGISTER, "--store", url)
    assert down.code == 4
    assert down.err.count("\n") == 1

    unknown = await _cli(
        "dlq", "reinject", "--kafka", broker.bootstrap, "--topic", "no.such.topic", "--store", url
    )
    assert unknown.code == 2
    assert "no.such.topic" in unknown.err

    empty = await _cli(
        "dlq",
        "reinject",
        "--kafka",
        broker.bootstrap,
        "--topic",
        REGISTER,
        "--topic-prefix",
        "none.",
        "--store",
        url,
    )
    assert (empty.code, empty.out.strip()) == (0, f"none.{REGISTER}.DLQ: no dead letter")


async def test_a_fact_reinjected_too_early_applies_when_reinjected_again(
    broker: LocalBroker, prefix: str, producer: ProducerLike, tmp_path: Path
) -> None:
    # Found by an attack: a provisioning that waited too long for its batch was re-injected
    # before the batch was registered, waited under its derived id and was dead-lettered
    # again; once the batch existed, re-injecting both letters said "duplicate" (the id was
    # derived one level deep only): the fact was lost and the command exited 0.
    url = f"sqlite+aiosqlite:///{tmp_path / 'state.db'}"
    await (await open_store(url)).close()
    env = HuleEduEnvelopes()
    provisioned = Topic.CONTENT_PROVISIONED.value
    settings = attrs.evolve(
        fast_settings(broker.bootstrap, prefix, store_url=url), sweep_seconds=0.2, waiting_window_seconds=1.0
    )
    command = ["dlq", "reinject", "--kafka", broker.bootstrap, "--topic", provisioned]
    command += ["--topic-prefix", prefix, "--store", url, "--as", "erin", "--json"]
    async with (
        running(settings) as runner,
        Collector(broker.bootstrap, [dlq_topic(provisioned)], topic_prefix=prefix) as dlq,
    ):
        fact = env.provisioned("w1", env.item_ids("w1", 2))[1]
        await producer.send_and_wait(f"{prefix}{provisioned}", json.dumps(fact).encode(), b"w1")
        await dlq.wait_for(lambda c: len(c.records) == 1, within=20, what="the first dead letter")
        early = await _cli(*command)
        assert early.code == 0, early.err
        assert [d["result"] for d in json.loads(early.out)["letters"]] == ["deferred:batch_registration"]
        await dlq.wait_for(lambda c: len(c.records) == 2, within=20, what="the second dead letter")

        await producer.send_and_wait(
            f"{prefix}{REGISTER}", json.dumps(env.register("w1", items=2)[1]).encode(), b"w1"
        )
        await wait_status(runner, "w1", BatchStatus.AWAITING_CONTENT_VALIDATION, within=20)
        again = await _cli(*command)
        assert again.code == 0, again.err
        assert [d["result"] for d in json.loads(again.out)["letters"]] == ["applied", "duplicate"]
        await wait_status(runner, "w1", BatchStatus.READY_FOR_PIPELINE_EXECUTION, within=10)
        once_more = await _cli(*command)  # everything was applied: nothing more happens
        assert [d["result"] for d in json.loads(once_more.out)["letters"]] == ["duplicate", "duplicate"]
