"""``serve --http``: the HTTP adapter runs in the same process as the consumer and relay
(requests made over HTTP come out on Kafka), behind the tokens of the environment, SIGUSR1
logs where every task waits, and SIGINT stops it all with status 0."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx
import pytest
from kafka_harness import ServeProcess, wait_until
from pipeline_state_kafka import ProducerLike
from pipeline_state_kafka.testing import Collector, LocalBroker, free_port, send_envelopes

from pipeline_state.profiles.huleedu.events import OUTBOUND_TOPICS, Topic
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes
from tests.optional import require

pytestmark = pytest.mark.kafka


async def test_kafka_serve_runs_http_with_consumer_and_relay_and_stops_on_sigint(
    broker: LocalBroker, prefix: str, producer: ProducerLike, tmp_path: Path
) -> None:
    require("pipeline_state_http")
    port = free_port()
    token_file = tmp_path / "internal-token"
    token_file.write_text("internal-secret\n")
    tokens = {
        "PIPELINE_STATE_HTTP_API_TOKEN": "api-secret",
        "PIPELINE_STATE_HTTP_INTERNAL_TOKEN_FILE": str(token_file),
        "PIPELINE_STATE_HTTP_OPS_TOKEN": "ops-secret",
    }
    serve = ServeProcess(broker.bootstrap, "memory://", prefix, env=tokens, log_file=tmp_path / "serve.log")
    serve.command += ["--http", f"127.0.0.1:{port}"]
    serve.start()
    env = HuleEduEnvelopes()
    ids = env.item_ids("h1", 2)
    try:
        await serve.wait_ready()
        async with (
            httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{port}", timeout=5, headers={"Authorization": "Bearer api-secret"}
            ) as http,
            Collector(broker.bootstrap, OUTBOUND_TOPICS, topic_prefix=prefix) as out,
        ):
            assert (await http.get("/healthz")).status_code == 200
            anonymous = await http.get("/v1/batches/h1", headers={"Authorization": ""})
            assert anonymous.status_code == 401
            internal = await http.get("/v1/batches/h1", headers={"Authorization": "Bearer internal-secret"})
            assert internal.status_code == 401
            registered = await http.post(
                "/v1/batches/register",
                json={
                    "batch_id": "h1",
                    "expected_essay_count": 2,
                    "essay_ids": ids,
                    "user_id": "teacher-h",
                    "course_code": "ENG5",
                    "student_prompt_ref": "prompt-1",
                },
            )
            assert registered.status_code == 202, registered.text
            await out.wait_for(lambda c: bool(c.on(Topic.ESSAYS_REGISTERED)), what="registration on Kafka")

            await send_envelopes(producer, [env.provisioned("h1", ids)], topic_prefix=prefix)

            async def ready() -> bool:
                answer = await http.get("/v1/batches/h1")
                return (
                    answer.status_code == 200
                    and answer.json().get("status") == "ready_for_pipeline_execution"
                )

            await wait_until(ready, what="the batch to be ready (seen over HTTP)")
            accepted = await http.post(
                "/v1/batches/h1/pipelines", json={"requested_pipeline": "nlp", "user_id": "teacher-h"}
            )
            assert accepted.status_code == 202, accepted.text
            await out.wait_for(lambda c: bool(c.on(Topic.SPELLCHECK)), what="the spellcheck command on Kafka")
            (command,) = out.on(Topic.SPELLCHECK)
            assert command.key == "h1"
            assert [e["essay_id"] for e in command.data["essays_to_process"]] == ids
        # SIGUSR1: where every task waits, the consumer's loop down to its fetch; serve goes on.
        assert serve.process is not None
        serve.process.send_signal(signal.SIGUSR1)
        line = await serve.wait_log(
            lambda r: "InboundConsumer.run" in str(r.get("msg", "")), what="the consumer's await chain"
        )
        assert line["level"] == "WARNING"
        assert str(line["msg"]).startswith("task ")
        assert " -> " in str(line["msg"])
        assert serve.process.poll() is None
        assert serve.signal(signal.SIGINT) == 0
        assert any(r.get("msg") == "stopped" for r in serve.logs)
    finally:
        serve.close()
