"""What the outbox order and hand-off tests share: a transport that records, fails or hangs,
the relay attached as ``serve`` attaches it, the order checks, and a statement sent to
PostgreSQL outside any store (a trigger the test installs)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import asyncpg
from pipeline_state_sql import SqlStore
from sqlalchemy.engine import make_url

from pipeline_state import OutboxRelay
from pipeline_state.errors import PublishError
from pipeline_state.ports import OutboxMessage
from tests.relay_kit import first_order


class Transport:
    """Records what went out (in ``log`` when given); fails the messages whose event id is in
    ``failing`` (once each); ``gate``: the first call waits for it (a hanging publish)."""

    def __init__(
        self,
        failing: Sequence[str] = (),
        *,
        gate: asyncio.Event | None = None,
        log: list[OutboxMessage] | None = None,
    ) -> None:
        self.published: list[OutboxMessage] = [] if log is None else log
        self.failing = set(failing)
        self.gate = gate
        self.entered = asyncio.Event()
        self.calls = 0

    async def publish(self, messages: Sequence[OutboxMessage]) -> Sequence[BaseException | None]:
        self.calls += 1
        self.entered.set()
        if self.gate is not None:
            gate, self.gate = self.gate, None
            await gate.wait()
        results: list[BaseException | None] = []
        for m in messages:
            if m.event_id in self.failing:
                self.failing.discard(m.event_id)
                results.append(PublishError(f"broker refused {m.event_id}"))
            else:
                self.published.append(m)
                results.append(None)
        return results


def attach(store: SqlStore, relay: OutboxRelay) -> None:
    store.attach_relay(relay.hand_off, relay.clock, accepting=relay.accepting)  # as serve does


def order_broken(published: Sequence[OutboxMessage], rank: dict[str, int]) -> dict[str | None, list[str]]:
    """The keys whose messages first went out in another order than ``rank`` (event id ->
    write order or row id) says."""
    return {k: ids for k, ids in first_order(published).items() if ids != sorted(ids, key=rank.__getitem__)}


async def pg_execute(url: str, sql: str) -> None:
    """Send ``sql`` to the PostgreSQL server of the store URL ``url``, on a connection of its own."""
    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()
