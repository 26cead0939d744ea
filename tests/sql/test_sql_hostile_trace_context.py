"""hostile inbound trace context and the ``trace_context`` column of outbox rows.

The column is unbounded ``TEXT``; what goes into it must be what the decision's span
carries (a 55-character ``traceparent``, a ``tracestate`` of at most 8192, OpenTelemetry's
limit), whatever the
inbound headers were, with and without an SDK, and a relay of another process must read it
back and publish every row.
"""

from __future__ import annotations

from typing import Any

import pytest
from pipeline_state_sql import SqlStore
from pipeline_state_sql.schema import OUTBOX
from sqlalchemy import select

from pipeline_state import InMemoryBus, ManualClock, OutboxRelay, PipelineService
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes
from pipeline_state.testing import T0, span_capture

PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
LONG_VALID_STATE = ",".join(f"k{i}={'v' * 12}" for i in range(32))  # 32 members, < 512
HOSTILE: list[Any] = [
    (("traceparent", PARENT), ("tracestate", ",".join(f"k{i}={'v' * 200}" for i in range(5000)))),
    (("traceparent", PARENT), ("tracestate", ",".join(f"k{i}=v" for i in range(40)))),
    (("traceparent", PARENT), ("tracestate", LONG_VALID_STATE)),
    (("traceparent", PARENT + "-" + " " * 100_000),),
    (("traceparent", "\ufffd" * 500), ("tracestate", "a=\ufffd")),
    {"traceparent": PARENT, "tracestate": "a=1", "x-evil": "y" * 100_000},
    (("traceparent", PARENT), ("traceparent", "00-" + "f" * 32 + "-" + "e" * 16 + "-01")),
]


@pytest.mark.parametrize("sdk", [False, True])
async def test_hostile_inbound_trace_context_is_stored_bounded_and_published(
    make_store: Any, sdk: bool
) -> None:
    env = HuleEduEnvelopes()
    store: SqlStore = await make_store()
    service = PipelineService(store, clock=ManualClock(T0))
    if sdk:
        with span_capture().recording():
            for i, carrier in enumerate(HOSTILE):
                await service.handle_message(*env.register(f"b{i}", items=1), trace=carrier)
    else:
        for i, carrier in enumerate(HOSTILE):
            await service.handle_message(*env.register(f"b{i}", items=1), trace=carrier)
    async with store.engine.connect() as conn:  # type: ignore[attr-defined]
        stored = [row[0] for row in await conn.execute(select(OUTBOX.c.trace_context))]
    assert len(stored) == len(HOSTILE)
    for text in stored:
        assert text is None or len(text) <= 55 + 8192 + 40, text[:200]  # the propagator's limit
    other: SqlStore = await make_store()  # a relay of another process
    bus = InMemoryBus()
    await OutboxRelay(other, bus, ManualClock(T0)).drain()
    published = bus.messages()
    assert len(published) == len(HOSTILE)
    for message in published:
        assert sum(len(k) + len(v) for k, v in message.trace_context) <= 55 + 8192 + 30
