"""What the relay tests over any store share: a publisher that fails in controlled ways,
the order check, and the relay's loggers silenced."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Iterator, Sequence

from pipeline_state.errors import PublishError
from pipeline_state.ports import OutboxMessage


class Scripted:
    """A publisher: call N raises when N is in ``raise_on`` (every call with ``fail_all``);
    otherwise each message fails with probability ``fail_rate`` (a partial batch); ``gate``
    makes the first call hang until it is set. What went out is in ``sent``, and as
    ``(name, event id)`` in ``log`` (which several publishers may share)."""

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
    ) -> None:
        self.raise_on, self.fail_rate, self.random = set(raise_on), fail_rate, random.Random(seed)
        self.gate, self.fail_all = gate, fail_all
        self.entered = asyncio.Event()
        self.calls = 0
        self.sent: list[OutboxMessage] = []
        self.log = log if log is not None else []
        self.name = name

    async def publish(self, messages: Sequence[OutboxMessage]) -> Sequence[BaseException | None]:
        self.calls += 1
        self.entered.set()
        if self.gate is not None:
            gate, self.gate = self.gate, None
            await gate.wait()
        if self.fail_all or self.calls in self.raise_on:
            raise PublishError(f"call {self.calls} refused")
        results: list[BaseException | None] = []
        for m in messages:
            if self.random.random() < self.fail_rate:
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
