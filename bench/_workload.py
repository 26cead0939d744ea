"""Workloads of the core benchmark: batches built through ``decide`` and raw outcome bytes.

Set-up must not dominate a run, so batches are not fed through the whole service one
message at a time: :class:`Seeder` decides each batch's registration, provisioning and
run request with the library's own :func:`~pipeline_state._decide` (the same function the
service calls) and commits the resulting state to the store in one compare-and-set. The
states are exactly those the service would hold; only the inbox and transition log of
the set-up messages are missing.

:class:`OutcomeWorkload` is the measured work: every workload batch has an active
``cj_assessment`` run; a spellcheck outcome (which dispatches CJ) then a CJ outcome (which
completes the run) are delivered for each, as raw envelope bytes built beforehand.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import attrs

from bench._util import postgres_schema
from pipeline_state import InMemoryStore, Profile
from pipeline_state._commands import Command
from pipeline_state._decide import decide
from pipeline_state.ports import BatchState, Change
from pipeline_state.profiles.huleedu.events import parse_payload
from pipeline_state.profiles.huleedu.profile import huleedu_profile
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes

__all__ = [
    "PIPELINE",
    "Delivery",
    "OutcomeWorkload",
    "Seeder",
    "batch_ids",
    "fresh_store",
    "iter_batch_ids",
    "outcomes",
]

PIPELINE = "cj_assessment"
"""The pipeline every workload run executes: spellcheck, then CJ assessment."""

Delivery = tuple[str, bytes]


def iter_batch_ids(count: int, prefix: str = "batch") -> Iterator[str]:
    """``count`` batch ids, made one at a time."""
    return (f"{prefix}-{i:07d}" for i in range(count))


def batch_ids(count: int, prefix: str = "batch") -> list[str]:
    """The same ids as :func:`iter_batch_ids`, as a list."""
    return list(iter_batch_ids(count, prefix))


class Seeder:
    """Builds batch states with :func:`decide` and commits them to a store."""

    def __init__(self, profile: Profile | None = None, now: datetime | None = None) -> None:
        self.profile = profile or huleedu_profile()
        self.now = now or datetime(2025, 1, 1, tzinfo=UTC)
        self.envelopes = HuleEduEnvelopes(timestamp=self.now)

    def _decide(self, state: BatchState | None, delivery: tuple[str, dict[str, object]]) -> BatchState:
        topic, envelope = delivery
        data = envelope["data"]
        assert isinstance(data, dict)
        payload = parse_payload(topic, data)
        command = Command(payload, str(envelope["event_id"]), str(envelope["correlation_id"]))
        decision = decide(state, command, profile=self.profile, now=self.now)
        if decision.state is None or not decision.changed:
            raise RuntimeError(f"set-up step on {topic} did not apply: {decision.ignored}")
        return decision.state

    def ready(self, batch_id: str, essays: int) -> BatchState:
        """A guest batch registered with ``essays`` essays and provisioned: ready, no history."""
        env = self.envelopes
        state = self._decide(None, env.register(batch_id, items=essays))
        # Fresh id strings, as a second message would carry them.
        return self._decide(state, env.provisioned(batch_id, env.item_ids(batch_id, essays)))

    def start_run(self, ready: BatchState, correlation_id: str, *, version: int | None = None) -> BatchState:
        """``ready`` with an accepted run of :data:`PIPELINE` (spellcheck dispatched).

        ``version`` lets the same ready state be restarted on top of a newer stored version.
        """
        if version is not None:
            ready = attrs.evolve(ready, version=version)
        request = self.envelopes.request(ready.batch_id, PIPELINE, correlation_id=correlation_id)
        return self._decide(ready, request)

    def finish_run(self, active: BatchState, correlation_id: str, *, fail_one: bool = False) -> BatchState:
        """``active`` after its spellcheck and CJ outcomes: ready again, one run in history."""
        state = active
        for topic, envelope in outcomes(self.envelopes, active, correlation_id, fail_one=fail_one):
            state = self._decide(state, (topic, envelope))
        return state

    async def commit(self, store: InMemoryStore, state: BatchState, expected: BatchState | None) -> None:
        change = Change(
            batch_id=state.batch_id,
            expected_version=None if expected is None else expected.version,
            state=state,
            at=self.now,
        )
        await store.commit(change)


def outcomes(
    envelopes: HuleEduEnvelopes, state: BatchState, correlation_id: str, *, fail_one: bool
) -> list[tuple[str, dict[str, object]]]:
    """The spellcheck then CJ outcome envelopes of one run; with ``fail_one`` spellcheck
    fails the last essay (partial success) and CJ gets the others."""
    essays = [ref.item_id for ref in state.items]
    failed = essays[-1:] if fail_one else []
    passed = [e for e in essays if e not in failed]
    spell = envelopes.outcome(state.batch_id, "spellcheck", correlation_id, processed=passed, failed=failed)
    cj = envelopes.outcome(state.batch_id, PIPELINE, correlation_id, processed=passed)
    return [spell, cj]


class OutcomeWorkload:
    """Phase outcomes for a fixed set of batches, restartable for each repetition.

    Every repetition puts each workload batch back to its ready state (no history) with a
    new active run, committed as a normal compare-and-set on top of the stored version,
    and returns fresh envelopes (new event ids): all spellcheck outcomes, then all CJ
    outcomes. Every fourth batch has one essay failing spellcheck.
    """

    def __init__(self, seeder: Seeder, ready: Sequence[BatchState]) -> None:
        if not ready:
            raise ValueError("a workload needs at least one batch")
        self.seeder = seeder
        self.ready = tuple(ready)

    @property
    def events(self) -> int:
        return 2 * len(self.ready)

    @property
    def expected_messages(self) -> int:
        """Messages the deliveries must emit: the CJ command, then completion + notification."""
        return 3 * len(self.ready)

    @classmethod
    async def seeded(cls, seeder: Seeder, store: Any, ids: Sequence[str], essays: int) -> OutcomeWorkload:
        """A workload of the batches ``ids``, each committed to ``store`` ready (``essays``
        items, no run)."""
        ready = []
        for batch_id in ids:
            state = seeder.ready(batch_id, essays)
            await seeder.commit(store, state, None)
            ready.append(state)
        return cls(seeder, ready)

    async def prepare(self, store: InMemoryStore) -> list[Delivery]:
        spell: list[Delivery] = []
        cj: list[Delivery] = []
        for index, ready in enumerate(self.ready):
            current = await store.load(ready.batch_id)
            if current is None:
                raise RuntimeError(f"workload batch {ready.batch_id} is not in the store")
            correlation_id = str(uuid.uuid4())
            active = self.seeder.start_run(ready, correlation_id, version=current.version)
            await self.seeder.commit(store, active, current)
            first, second = outcomes(self.seeder.envelopes, active, correlation_id, fail_one=index % 4 == 0)
            spell.append((first[0], json.dumps(first[1]).encode()))
            cj.append((second[0], json.dumps(second[1]).encode()))
        return spell + cj

    async def check(self, store: InMemoryStore) -> None:
        """Every workload batch is ready again with a finished run (the outcomes applied)."""
        for ready in self.ready:
            state = await store.load(ready.batch_id)
            if state is None or state.active_run is not None or state.past.count == 0:
                raise RuntimeError(f"the outcomes for {ready.batch_id} did not complete its run")


async def fresh_store(backend: str, workdir: Path, name: str) -> tuple[Any, Callable[[], Awaitable[None]]]:
    """A fresh store of ``backend`` (``memory``, ``sqlite``: a new file in ``workdir``,
    ``postgres``: a new schema at ``PIPELINE_STATE_TEST_POSTGRES``) and what closes it (and
    drops the schema)."""
    if backend == "memory":
        return InMemoryStore(), _nothing
    from pipeline_state_sql import open_store

    if backend != "postgres":
        sqlite = await open_store(f"sqlite+aiosqlite:///{workdir / name}.db")
        return sqlite, sqlite.close
    url = os.environ.get("PIPELINE_STATE_TEST_POSTGRES")
    if not url:
        raise SystemExit("postgres: set PIPELINE_STATE_TEST_POSTGRES to a PostgreSQL URL")
    schema = f"bench_{name}_{uuid.uuid4().hex[:8]}".replace("-", "_")
    await postgres_schema(url, "create", schema)
    postgres = await open_store(url, schema=schema)

    async def close() -> None:
        await postgres.close()
        await postgres_schema(url, "drop", schema)

    return postgres, close


async def _nothing() -> None:
    return None
