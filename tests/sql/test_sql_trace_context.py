"""The trace context of outbox rows in SQL: stored with the decision, read back by a relay of a
later process, kept through a failed attempt, and added by a migration to older rows."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import StatusCode
from pipeline_state_sql import SqlStore, alembic_config, open_store
from pipeline_state_sql.outbox import decode_trace_context, encode_trace_context
from pipeline_state_sql.schema import OUTBOX
from sqlalchemy import create_engine, insert, select

from pipeline_state import InMemoryBus, ManualClock, OutboxRelay, PipelineService
from pipeline_state._tracing import continued
from pipeline_state.profiles.huleedu.events import Topic
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes
from pipeline_state.testing import T0, SpanCapture, span_capture


@pytest.fixture
def spans() -> Iterator[SpanCapture]:
    with span_capture().recording() as capture:
        yield capture


def _span_id(context: tuple[tuple[str, str], ...]) -> tuple[int, int]:
    named = trace.get_current_span(continued(context)).get_span_context()
    return named.trace_id, named.span_id


def _ids(span: ReadableSpan) -> tuple[int, int]:
    return span.context.trace_id, span.context.span_id


async def test_a_row_published_by_a_later_relay_after_a_failed_attempt_continues_its_decision(
    make_store: Any, spans: SpanCapture
) -> None:
    env, clock = HuleEduEnvelopes(), ManualClock(T0)
    writer: SqlStore = await make_store()
    service = PipelineService(writer, clock=clock)
    ids = env.item_ids("b1", 2)
    await service.handle_message(*env.register("b1", items=2))
    await service.handle_message(*env.provisioned("b1", ids))
    bus = InMemoryBus()
    await OutboxRelay(writer, bus, clock).drain()  # what came before is out
    request = env.request("b1", "ai_feedback")
    result = await service.handle_message(*request)
    decided = spans.named(f"process {request[0]}")[-1]
    command_row = next(m for m in result.messages if m.topic == Topic.SPELLCHECK.value)
    assert _span_id(command_row.trace_context) == _ids(decided)
    await writer.close()  # the process that decided is gone before anything was published

    reader: SqlStore = await make_store()
    relay = OutboxRelay(reader, bus, clock, base_backoff=1.0)
    bus.available = False
    failed = await relay.run_once()
    assert failed.failed >= 1
    assert failed.published == 0
    bus.available = True
    clock.advance(5)
    await relay.drain()

    published = bus.messages(Topic.SPELLCHECK.value)
    assert [m.event_id for m in published] == [command_row.event_id]
    attempts = spans.named(f"publish {Topic.SPELLCHECK.value}")
    assert len(attempts) == 2
    assert attempts[0].status.status_code is StatusCode.ERROR
    assert attempts[1].status.status_code is StatusCode.UNSET
    for attempt in attempts:  # both attempts belong to the decision's trace, as its children
        assert attempt.parent is not None
        assert (attempt.context.trace_id, attempt.parent.span_id) == _ids(decided)
    assert dict(attempts[1].attributes or {})["pipeline_state.publish.attempt"] == 2
    # The receiver continues the publish span that delivered it.
    assert _span_id(published[0].trace_context) == _ids(attempts[1])


def test_trace_context_column_round_trip_and_garbage_is_no_context() -> None:
    context = (
        ("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        ("tracestate", "a=1"),
    )
    assert decode_trace_context(encode_trace_context(context)) == context
    assert encode_trace_context(()) is None
    assert decode_trace_context(None) == ()
    assert decode_trace_context("not json") == ()
    assert decode_trace_context("[1, 2]") == ()
    assert decode_trace_context('{"traceparent": 7}') == ()


async def test_migration_keeps_older_outbox_rows_without_trace_context(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    url = f"sqlite+aiosqlite:///{path}"
    await asyncio.to_thread(command.upgrade, alembic_config(url), "0003")  # Alembic runs its own loop
    engine = create_engine(f"sqlite:///{path}")
    try:
        with engine.begin() as conn:
            # only the columns revision 0003 has (the row a relay had not published yet)
            conn.execute(
                insert(OUTBOX).values(
                    event_id="e-old",
                    topic="t",
                    key="k",
                    envelope={"event_id": "e-old"},
                    created_at=T0,
                    available_at=T0,
                )
            )
    finally:
        engine.dispose()
    store = await open_store(url)  # upgrades to head on start-up
    try:
        rows = await store.claim(T0 + timedelta(seconds=1))
        assert [(r.message.event_id, r.message.trace_context) for r in rows] == [("e-old", ())]
    finally:
        await store.close()
    engine = create_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as conn:
            assert conn.execute(select(OUTBOX.c.trace_context)).scalar_one() is None
    finally:
        engine.dispose()
