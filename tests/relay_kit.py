"""What the relay tests over any store share: a publisher that fails in controlled ways,
the order check, the relay's loggers silenced, and a rig that forces a commit to race a
relay pass (two relays on one database, the first with its hand-off deferred at will)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any

from pipeline_state import ManualClock, OutboxRelay
from pipeline_state.errors import PublishError
from pipeline_state.ports import Change, OutboxMessage, OutboxRow
from pipeline_state.testing import T0, message


class Scripted:
    """A publisher: call N raises when N is in ``raise_on`` (every call with ``fail_all``);
    otherwise each message fails with probability ``fail_rate`` (a partial batch; with
    ``key_order``, a refused message refuses the later ones of its key in the call too, as a
    transport that keeps one call's order per key does: what a relay with ``rows_per_key``
    above 1 needs); ``gate`` makes the first call hang until it is set. What went out is in
    ``sent``, and as ``(name, event id)`` in ``log`` (which several publishers may share)."""

    def __init__(
        self,
        *,
        raise_on: Sequence[int] = (),
        fail_rate: float = 0.0,
        seed: int = 0,
        gate: asyncio.Event | None = None,
        fail_all: bool = False,
        log: list[tuple[str, str]] | None = None,
        name: str = "",
        key_order: bool = False,
    ) -> None:
        self.raise_on, self.fail_rate, self.random = set(raise_on), fail_rate, random.Random(seed)
        self.gate, self.fail_all = gate, fail_all
        self.entered = asyncio.Event()
        self.calls = 0
        self.sent: list[OutboxMessage] = []
        self.log = log if log is not None else []
        self.name = name
        self.key_order = key_order

    async def publish(self, messages: Sequence[OutboxMessage]) -> Sequence[BaseException | None]:
        self.calls += 1
        self.entered.set()
        if self.gate is not None:
            gate, self.gate = self.gate, None
            await gate.wait()
        if self.fail_all or self.calls in self.raise_on:
            raise PublishError(f"call {self.calls} refused")
        results: list[BaseException | None] = []
        refused: set[str | None] = set()
        for m in messages:
            if self.random.random() < self.fail_rate or (self.key_order and m.key in refused):
                refused.add(m.key)
                results.append(PublishError(f"refused {m.event_id}"))
            else:
                self.sent.append(m)
                self.log.append((self.name, m.event_id))
                results.append(None)
        return results


def first_order(published: Sequence[OutboxMessage]) -> dict[str | None, list[str]]:
    """Each key's event ids in the order of their first publication."""
    out: dict[str | None, list[str]] = {}
    for m in published:
        ids = out.setdefault(m.key, [])
        if m.event_id not in ids:
            ids.append(m.event_id)
    return out


@contextlib.contextmanager
def relay_logs_off() -> Iterator[None]:
    """The relays' warnings silenced (the tests make them fail on purpose)."""
    loggers = [logging.getLogger(n) for n in ("pipeline_state.relay", "pipeline_state_kafka.relay")]
    before = [lg.disabled for lg in loggers]
    for lg in loggers:
        lg.disabled = True
    try:
        yield
    finally:
        for lg, was in zip(loggers, before, strict=True):
            lg.disabled = was


class Refusing:
    """A publisher that refuses the messages whose event ids are in ``failing`` and sends the
    others (``sent``); ``during``, when set, is awaited once while the next publish is in
    flight (a publish that hangs while other things happen)."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.failing: set[str] = set()
        self.during: Callable[[], Awaitable[None]] | None = None

    async def publish(self, messages: Sequence[OutboxMessage]) -> Sequence[BaseException | None]:
        during, self.during = self.during, None
        if during is not None:
            await during()
        out: list[BaseException | None] = []
        for m in messages:
            if m.event_id in self.failing:
                out.append(PublishError(f"{m.event_id} refused"))
            else:
                self.sent.append(m.event_id)
                out.append(None)
        return out

    def first(self) -> list[str]:
        """The event ids in the order of their first publication."""
        return list(dict.fromkeys(self.sent))


class RaceRig:
    """Relays A and B on one database (``store_a``, ``store_b``: two stores of it), one
    :class:`Refusing` publisher, a :class:`ManualClock`. A's store hands its commits' rows
    to A; while ``defer`` is set, a commit's hand-off is kept until :meth:`deliver`, as when
    the commit ran concurrently with A's pass and its hand-off landed after it."""

    def __init__(self, store_a: Any, store_b: Any, *, attempts_a: int = 100, attempts_b: int = 100) -> None:
        self.store_a, self.store_b = store_a, store_b
        self.clock = ManualClock(T0)
        self.transport = Refusing()
        self.relay_a = OutboxRelay(
            store_a, self.transport, self.clock, base_backoff=0.5, max_attempts=attempts_a
        )
        self.relay_b = OutboxRelay(
            store_b, self.transport, self.clock, base_backoff=0.5, max_attempts=attempts_b
        )
        self.defer = False
        self.deferred: list[tuple[Sequence[OutboxRow], bool]] = []
        store_a.attach_relay(self._hand_off, self.clock, accepting=self.relay_a.accepting)

    def _hand_off(self, rows: Sequence[OutboxRow], poll: bool = False) -> None:
        if self.defer:
            self.deferred.append((rows, poll))
        else:
            self.relay_a.hand_off(rows, poll)

    def deliver(self) -> None:
        """Hand A the rows of the commits whose hand-off was deferred."""
        for rows, poll in self.deferred:
            self.relay_a.hand_off(rows, poll)
        self.deferred.clear()

    async def commit(self, tag: str, *event_ids: str, key: str = "k", deferred: bool = False) -> None:
        """Commit rows of ``key`` through A's store (its hand-off ``deferred`` or not)."""
        self.defer = deferred
        try:
            outbox = tuple(message(e, key) for e in event_ids)
            await self.store_a.commit(Change(f"b-{tag}", None, None, self.clock.now(), outbox=outbox))
        finally:
            self.defer = False

    async def drain(self, rounds: int = 20, step: float = 5) -> None:
        """Both relays' passes until everything is out (the transport healed first)."""
        self.transport.failing.clear()
        for _ in range(rounds):
            self.clock.advance(step)
            await self.relay_b.run_once()
            await self.relay_a.run_once()
        assert await self.store_a.pending_count() == 0
