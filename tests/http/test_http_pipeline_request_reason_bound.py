"""The documented limits on records "(every transport)" are the same over HTTP as over
Kafka: a pipeline request's ``retry_reason``."""

from __future__ import annotations

import httpx

from pipeline_state import PipelineService
from pipeline_state.profiles.huleedu.events import MAX_FREE_TEXT_LENGTH, Topic
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes
from tests.http.conftest import MakeReady


async def test_a_retry_reason_kafka_accepts_is_accepted_over_http(
    http: httpx.AsyncClient, service: PipelineService, make_ready: MakeReady
) -> None:
    """Was a defect (found by an attack on sizes).

    Expected (docs/operations.md, "Limits on records and runs (every transport)"):
    ``retry_reason`` takes up to ``MAX_FREE_TEXT_LENGTH`` (10,000) characters on every
    transport, so a pipeline request whose reason has 5,000 characters is accepted over
    Kafka and over HTTP alike. Actual: the Kafka request is applied, the same request over
    ``POST /v1/batches/{id}/pipelines`` is ``422 validation_error`` on
    ``body.retry_reason`` (``PipelineRequestBody.retry_reason`` has ``max_length=2000``,
    adapters/pipeline_state_http/schemas.py), a bound documented nowhere."""
    reason = "r" * 5_000
    assert len(reason) <= MAX_FREE_TEXT_LENGTH
    env = HuleEduEnvelopes()
    await make_ready("over-kafka")
    topic, envelope = env.request("over-kafka", "nlp")
    envelope["data"]["is_retry"] = True
    envelope["data"]["retry_reason"] = reason
    assert topic == Topic.PIPELINE_REQUEST.value
    assert (await service.handle_message(topic, envelope)).label == "applied"

    await make_ready("over-http")
    answer = await http.post(
        "/v1/batches/over-http/pipelines",
        json={"requested_pipeline": "nlp", "user_id": "teacher-1", "is_retry": True, "retry_reason": reason},
    )
    assert answer.status_code == 202, (answer.status_code, answer.text[:300])
