"""Mutation testing of the adapter writer's test kit (``StoreContract``), found by an attack.

Each mutant below is an :class:`InMemoryStore` that breaks exactly one rule the engine
relies on. The whole ``StoreContract`` is run against each (as
``tests/sql/test_sql_contract_memory.py`` runs it against ``InMemoryStore``, here driven
directly so one test can run it many times). A mutant the contract does not catch is a gap
in the kit: ``docs/writing-an-adapter.md`` says a store that passes the contract keeps the
engine's guarantees. For every gap found, a test shows, on a service over the mutant, the
promise it breaks, then asserts that the contract catches the mutant (the rules added to the
contract for them: its section "every part of a change, in every shape the service writes
it"); the mutants the contract caught before are in ``test_contract_catches``.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import attrs
import pytest
from contract_runner import contract_failures

from pipeline_state import (
    InMemoryBus,
    InMemoryStore,
    ManualClock,
    OutboxRelay,
    PipelineService,
    PipelineStateError,
)
from pipeline_state._deadline_index import next_deadline
from pipeline_state.ports import Change, OutboxRow, WaitingFact

# ---------------------------------------------------------------------------------------------
# The driver: the whole contract against a fresh store per test
# ---------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------
# Mutants: each breaks one rule
# ---------------------------------------------------------------------------------------------
class _SingleCommitFlag(InMemoryStore):
    """Helper base: ``self._single`` is true while ``commit`` (not ``commit_many``) runs."""

    _single = False

    async def commit(self, change: Change) -> None:
        self._single = True
        try:
            await super().commit(change)
        finally:
            self._single = False


# -- compare-and-set -------------------------------------------------------------------------
class CasIgnoredOnce(InMemoryStore):
    """The first stale state write of the store's life overwrites (last writer wins once)."""

    lapsed = False

    async def commit(self, change: Change) -> None:
        stored = self._batches.get(change.batch_id)
        if (
            not self.lapsed
            and stored is not None
            and change.state is not None
            and change.expected_version != stored.version
        ):
            self.lapsed = True
            state = attrs.evolve(change.state, version=stored.version + 1)
            change = attrs.evolve(change, expected_version=stored.version, state=state)
        await super().commit(change)


class CasSkippedWithoutState(InMemoryStore):
    """A change that writes no state is not compare-and-set."""

    async def commit(self, change: Change) -> None:
        if change.state is None:
            stored = self._batches.get(change.batch_id)
            change = attrs.evolve(change, expected_version=None if stored is None else stored.version)
        await super().commit(change)


class ConflictSwallowed(InMemoryStore):
    """A lost compare-and-set is dropped silently (nothing written, no error)."""

    async def commit(self, change: Change) -> None:
        from pipeline_state.errors import ConcurrencyConflictError

        try:
            await super().commit(change)
        except ConcurrencyConflictError:
            return


# -- the unit of work: state, inbox, outbox together ------------------------------------------
class InboxDroppedWithOutbox(InMemoryStore):
    """``commit`` of a change that writes a state *and* messages forgets its inbox entry."""

    async def commit(self, change: Change) -> None:
        if change.state is not None and change.outbox and change.resolves is None:
            change = attrs.evolve(change, inbox=None)
        await super().commit(change)


class InboxNotRecordedWithOutbox(_SingleCommitFlag):
    """``commit`` checks the inbox, but a change that writes a state *and* messages (and
    resolves no waiting fact: that path replaces an entry) does not record its entry."""

    def _apply(self, change: Change) -> None:
        if self._single and change.state is not None and change.outbox and change.resolves is None:
            change = attrs.evolve(change, inbox=None)
        super()._apply(change)


class InboxDroppedAlways(InMemoryStore):
    """``commit`` never records the inbox entry (control: the obvious version)."""

    async def commit(self, change: Change) -> None:
        await super().commit(attrs.evolve(change, inbox=None))


class OutboxDroppedWithArchive(InMemoryStore):
    """``commit`` of a change that archives a run writes no outbox messages."""

    async def commit(self, change: Change) -> None:
        if change.archived:
            change = attrs.evolve(change, outbox=())
        await super().commit(change)


class OutboxDroppedWithoutState(InMemoryStore):
    """``commit`` of a change that writes no state writes no outbox messages (control)."""

    async def commit(self, change: Change) -> None:
        if change.state is None:
            change = attrs.evolve(change, outbox=())
        await super().commit(change)


class WaitingDroppedWithState(InMemoryStore):
    """``commit`` keeps a waiting fact only when the change writes no state (a fact deferred
    on a registered batch, which bumps its version, is lost; its inbox says deferred)."""

    async def commit(self, change: Change) -> None:
        if change.waiting is not None and change.state is not None:
            change = attrs.evolve(change, waiting=None)
        await super().commit(change)


class RepublishDroppedWithState(InMemoryStore):
    """``commit`` re-queues ``republish`` only when the change writes no state."""

    async def commit(self, change: Change) -> None:
        if change.state is not None and change.republish:
            change = attrs.evolve(change, republish=())
        await super().commit(change)


class ResolvesKeptWithoutState(_SingleCommitFlag):
    """``commit`` of a change that writes no state checks ``resolves`` but leaves the fact
    in the waiting set."""

    def _apply(self, change: Change) -> None:
        if self._single and change.state is None and change.resolves is not None:
            change = attrs.evolve(change, resolves=None)
        super()._apply(change)


class RewaitsIgnoredWithState(InMemoryStore):
    """``commit`` applies ``rewaits`` only when the change writes no state."""

    async def commit(self, change: Change) -> None:
        if change.state is not None and change.rewaits:
            change = attrs.evolve(change, rewaits=())
        await super().commit(change)


class CommitManyPartial(InMemoryStore):
    """``commit_many`` commits change by change: a conflict keeps what came before."""

    async def commit_many(self, changes: Sequence[Change]) -> None:
        for change in changes:
            await self.commit(change)


class CommitManyOneFactPerBatch(InMemoryStore):
    """``commit_many`` keeps only the last waiting fact of each batch in the sequence."""

    async def commit_many(self, changes: Sequence[Change]) -> None:
        last: dict[str, int] = {}
        for n, change in enumerate(changes):
            if change.waiting is not None:
                last[change.batch_id] = n
        kept = [
            c if c.waiting is None or last[c.batch_id] == n else attrs.evolve(c, waiting=None)
            for n, c in enumerate(changes)
        ]
        await super().commit_many(kept)


# -- reads -----------------------------------------------------------------------------------
class _Folded(dict):  # type: ignore[type-arg]
    """A dict whose string keys compare case-insensitively (a case-insensitive collation)."""

    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(key.lower(), value)

    def __getitem__(self, key: str) -> Any:
        return super().__getitem__(key.lower())

    def __contains__(self, key: object) -> bool:
        return super().__contains__(key.lower() if isinstance(key, str) else key)

    def get(self, key: str, default: Any = None) -> Any:
        return super().get(key.lower(), default)

    def pop(self, key: str, *default: Any) -> Any:
        return super().pop(key.lower(), *default)


class CaseFoldedBatchIds(InMemoryStore):
    """Batch ids compare case-insensitively (the batch table's collation): ``load("B1")``
    returns batch ``b1``."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        folded: _Folded = _Folded()
        self._work.documents = folded
        self._batches = folded


class LoadOtherBatch(InMemoryStore):
    """``load`` of an unknown batch returns the last batch stored (control)."""

    async def load(self, batch_id: str) -> Any:
        state = await super().load(batch_id)
        if state is None and self._batches:
            return list(self._batches.values())[-1]
        return state


class HistoryNewestFirst(InMemoryStore):
    async def history(self, batch_id: str) -> list[Any]:
        return list(reversed(await super().history(batch_id)))


class ListWaitingByEventId(InMemoryStore):
    """``list_waiting`` orders facts by event id, not arrival."""

    async def list_waiting(
        self, batch_id: str | None = None, *, limit: int = 100, arrived_before: datetime | None = None
    ) -> list[WaitingFact]:
        facts = await super().list_waiting(batch_id, limit=10**9, arrived_before=arrived_before)
        return sorted(facts, key=lambda f: f.event_id)[:limit]


class ListWaitingByArrivalTime(InMemoryStore):
    """``list_waiting`` orders facts by ``(arrived_at, event_id)`` (not by ``seq``)."""

    async def list_waiting(
        self, batch_id: str | None = None, *, limit: int = 100, arrived_before: datetime | None = None
    ) -> list[WaitingFact]:
        facts = await super().list_waiting(batch_id, limit=10**9, arrived_before=arrived_before)
        return sorted(facts, key=lambda f: (f.arrived_at, f.event_id))[:limit]


class ListWaitingIgnoresBatch(InMemoryStore):
    async def list_waiting(
        self, batch_id: str | None = None, *, limit: int = 100, arrived_before: datetime | None = None
    ) -> list[WaitingFact]:
        return await super().list_waiting(None, limit=limit, arrived_before=arrived_before)


class ListWaitingCapped(InMemoryStore):
    """``list_waiting`` returns at most 100 facts whatever ``limit`` asks (a fixed page)."""

    async def list_waiting(
        self, batch_id: str | None = None, *, limit: int = 100, arrived_before: datetime | None = None
    ) -> list[WaitingFact]:
        return await super().list_waiting(batch_id, limit=min(limit, 100), arrived_before=arrived_before)


class ListWaitingLosesLast(InMemoryStore):
    """``list_waiting`` drops the newest fact when more than two wait (control)."""

    async def list_waiting(
        self, batch_id: str | None = None, *, limit: int = 100, arrived_before: datetime | None = None
    ) -> list[WaitingFact]:
        facts = await super().list_waiting(batch_id, limit=limit, arrived_before=arrived_before)
        return facts[:-1] if len(facts) > 2 else facts


class WaitingFlagOnlyBeforeRegistration(InMemoryStore):
    """``load_with_waiting`` says "facts wait" only for a batch that is not stored."""

    async def load_with_waiting(self, batch_id: str) -> tuple[Any, bool]:
        state, flag = await super().load_with_waiting(batch_id)
        return state, flag and state is None


class ForgetWaitingOverwrites(InMemoryStore):
    """``forget_waiting`` records its result for ids no longer waiting too (and counts them)."""

    async def forget_waiting(self, event_ids: Sequence[str], result: str, now: datetime) -> int:
        removed = await super().forget_waiting(event_ids, result, now)
        for event_id in dict.fromkeys(event_ids):
            row = self._inbox.get(event_id)
            if row is not None and row[2] != result:
                self._inbox[event_id] = (row[0], row[1], result, now)
                removed += 1
        return removed


# -- deadlines and stalled runs ----------------------------------------------------------------
class DeadlineOnlyOnInsert(_SingleCommitFlag):
    """``commit`` indexes a phase deadline only when it inserts the batch (an update keeps
    or clears a deadline, never adds one)."""

    def _apply(self, change: Change) -> None:
        had = change.batch_id in self._deadlines
        super()._apply(change)
        if self._single and change.expected_version is not None and not had:
            self._deadlines.pop(change.batch_id, None)


class LatestDeadline(InMemoryStore):
    """The deadline index keeps the *latest* active phase deadline, not the earliest."""

    def _apply(self, change: Change) -> None:
        super()._apply(change)
        state = change.state
        if state is not None and state.active_run is not None and next_deadline(state) is not None:
            self._deadlines[change.batch_id] = max(
                p.deadline_at for p in state.active_run.phases if p.is_active and p.deadline_at is not None
            )


class OverdueStrict(InMemoryStore):
    """``overdue_batches`` takes deadlines strictly before ``now`` (control)."""

    async def overdue_batches(self, now: datetime, limit: int = 1000) -> list[str]:
        return await super().overdue_batches(now - timedelta(microseconds=1), limit)


class StalledRunsById(InMemoryStore):
    async def stalled_runs(self, now: datetime, older_than: float, *, limit: int = 100) -> list[Any]:
        runs = await super().stalled_runs(now, older_than, limit=10**6)
        return sorted(runs, key=lambda s: s.batch_id)[:limit]


# -- the outbox ------------------------------------------------------------------------------
class ClaimTwoPerKey(InMemoryStore):
    """``claim`` also hands out the row behind each key's head."""

    async def claim(self, now: datetime, limit: int = 100) -> list[OutboxRow]:
        rows = await super().claim(now, limit)
        extra = []
        for row in rows:
            queue = self._by_key.get(row.message.key)
            if queue and len(queue) > 1:
                extra.append(self._outbox[queue[1]])
        return sorted(rows + extra, key=lambda r: r.id)[:limit]


class ClaimNoLease(InMemoryStore):
    """``claim`` does not lease: a row claimed and not marked is handed out again."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(lease_seconds=0, **kw)


class LeaseNeverExpires(InMemoryStore):
    """A claimed row stays leased for ever (a relay that died holding it holds it for good)."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(lease_seconds=10 * 365 * 86_400, **kw)


class MarkPublishedOldestOfKey(InMemoryStore):
    """``mark_published`` marks the oldest row of the named row's key (the same row, unless
    a parked row heads the key)."""

    def _mark_published(self, row_ids: Sequence[int]) -> None:
        mapped = []
        for row_id in row_ids:
            row = self._outbox.get(row_id)
            if row is not None:
                queue = self._by_key.get(row.message.key)
                if queue:
                    row_id = queue[0]
            mapped.append(row_id)
        super()._mark_published(mapped)


class RetryIgnored(InMemoryStore):
    """``mark_failed`` forgets ``retry_at`` (a failed row is due again at once) (control)."""

    async def mark_failed(
        self, row_id: int, error: str, now: datetime, *, retry_at: datetime, park: bool
    ) -> None:
        await super().mark_failed(row_id, error, now, retry_at=now, park=park)


MUTANTS: list[type[InMemoryStore]] = [
    CasIgnoredOnce,
    CasSkippedWithoutState,
    ConflictSwallowed,
    InboxDroppedWithOutbox,
    InboxNotRecordedWithOutbox,
    InboxDroppedAlways,
    OutboxDroppedWithArchive,
    OutboxDroppedWithoutState,
    WaitingDroppedWithState,
    RepublishDroppedWithState,
    ResolvesKeptWithoutState,
    RewaitsIgnoredWithState,
    CommitManyPartial,
    CommitManyOneFactPerBatch,
    CaseFoldedBatchIds,
    LoadOtherBatch,
    HistoryNewestFirst,
    ListWaitingByEventId,
    ListWaitingByArrivalTime,
    ListWaitingIgnoresBatch,
    ListWaitingCapped,
    ListWaitingLosesLast,
    WaitingFlagOnlyBeforeRegistration,
    ForgetWaitingOverwrites,
    DeadlineOnlyOnInsert,
    LatestDeadline,
    OverdueStrict,
    StalledRunsById,
    ClaimTwoPerKey,
    ClaimNoLease,
    LeaseNeverExpires,
    MarkPublishedOldestOfKey,
    RetryIgnored,
]


# ---------------------------------------------------------------------------------------------
# Scenarios: the engine over a store, returning what the promise is about
# ---------------------------------------------------------------------------------------------
from pipeline_state import Catalog, InMemoryRuntime  # noqa: E402
from pipeline_state.profiles.huleedu.profile import huleedu_profile  # noqa: E402
from pipeline_state.testing import Envelopes  # noqa: E402

COMPLETED = "huleedu.batch.pipeline.completed.v1"
DENIED = "huleedu.pipeline.denied.v1"
SPELLCHECK = "huleedu.els.spellcheck.initiate.command.v1"


def runtime_over(store: InMemoryStore, profile: Any = None) -> InMemoryRuntime:
    """An :class:`InMemoryRuntime` whose service and relay use ``store``."""
    rt = InMemoryRuntime(profile)
    rt.store = store
    rt.service = PipelineService(store, profile=rt.service.profile, clock=rt.clock)
    rt.relay = OutboxRelay(store, rt.bus, rt.clock)
    return rt


def deadline_profile(max_resends: int) -> Any:
    catalog = Catalog.from_dict(
        {
            "pipelines": {
                "nlp": {
                    "steps": [
                        {"name": "spellcheck", "deadline_seconds": 60},
                        {"name": "nlp", "depends_on": ["spellcheck"]},
                    ]
                }
            }
        }
    )
    return huleedu_profile(catalog=catalog, max_resends=max_resends)


async def answer_all(rt: InMemoryRuntime, env: Envelopes, pending: list[dict[str, Any]]) -> None:
    """Answer every phase command in ``pending`` (and those the answers emit) in full."""
    while pending:
        message = pending.pop(0)
        if env.phase_of(message) is not None:
            pending += await rt.deliver(*env.answer(message))


def denials(rt: InMemoryRuntime) -> list[str]:
    """The denial reasons published on the pipeline-denied topic, in order."""
    return [str(m.value["data"]) for m in rt.bus.messages(DENIED)]


def completions(rt: InMemoryRuntime) -> list[str]:
    return [m.value["data"]["final_status"] for m in rt.bus.messages(COMPLETED)]


async def ready_batch(rt: InMemoryRuntime, env: Envelopes, batch_id: str = "b1") -> None:
    await rt.deliver(*env.register(batch_id, items=2))
    await rt.deliver(*env.provisioned(batch_id, env.item_ids(batch_id, 2)))


async def scenario_run_to_completion(store: InMemoryStore) -> list[str]:
    """A run answered in full: the completions published."""
    rt, env = runtime_over(store), Envelopes()
    await ready_batch(rt, env)
    await answer_all(rt, env, await rt.deliver(*env.request("b1", "nlp")))
    return completions(rt)


async def scenario_outcome_before_dispatch(store: InMemoryStore) -> list[str]:
    """The nlp outcome arrives while spellcheck still runs (before nlp was dispatched):
    it waits, and applies once spellcheck's outcome dispatches nlp."""
    rt, env = runtime_over(store), Envelopes()
    await ready_batch(rt, env)
    (command,) = [m for m in await rt.deliver(*env.request("b1", "nlp")) if env.phase_of(m)]
    corr = command["value"]["correlation_id"]
    early = await rt.service.handle_message(*env.outcome("b1", "nlp", corr, processed=env.item_ids("b1", 2)))
    assert early.waiting == "phase_dispatch:nlp", early
    await rt.deliver(*env.answer(command))
    return completions(rt)


async def _no_dead_letter(fact: Any) -> None:
    raise AssertionError(f"dead letter {fact}")


async def scenario_resend(store: InMemoryStore) -> tuple[int, list[str]]:
    """The spellchecker loses the first command; the deadline re-sends it and it answers."""
    rt, env = runtime_over(store, deadline_profile(max_resends=1)), Envelopes()
    await ready_batch(rt, env)
    await rt.deliver(*env.request("b1", "nlp"))  # the command is lost on its way
    rt.clock.advance(61)
    resent = await rt.expire_overdue()
    await answer_all(rt, env, resent)
    return len(rt.bus.messages(SPELLCHECK)), completions(rt)


async def scenario_silent_phase(store: InMemoryStore) -> list[str]:
    """The spellchecker never answers; after its deadline the sweep fails the run."""
    rt, env = runtime_over(store, deadline_profile(max_resends=0)), Envelopes()
    await ready_batch(rt, env)
    await rt.deliver(*env.request("b1", "nlp"))
    for _ in range(5):
        rt.clock.advance(61)
        await rt.expire_overdue()
    return completions(rt)


async def scenario_redelivered_request(store: InMemoryStore) -> tuple[list[str], bool]:
    """A run answered in full, then its request redelivered (same event id): the
    completions, and whether the inbox answered the redelivery as a duplicate (the state
    would know it too, as ``already_handled``: its run is archived; then the result carries
    that decision)."""
    rt, env = runtime_over(store), Envelopes()
    await ready_batch(rt, env)
    request = env.request("b1", "nlp")
    await answer_all(rt, env, await rt.deliver(*request))
    again = await rt.service.handle_message(*request)
    await rt.relay.drain()
    return completions(rt), again.duplicate and again.decision is None


async def scenario_expired_request(store: InMemoryStore) -> list[str]:
    """A request for a batch that is never registered, swept three times after its window:
    the denials published."""
    rt, env = runtime_over(store), Envelopes()
    early = await rt.service.handle_message(*env.request("ghost", "nlp"))
    assert early.waiting == "batch_registration"
    rt.clock.advance(rt.service.waiting_window_seconds + 1)
    for _ in range(3):
        await rt.service.sweep_waiting(_no_dead_letter)
        await rt.relay.drain()
        rt.clock.advance(60)
    return denials(rt)


FIRST = "ffffffff-0000-4000-8000-000000000001"  # arrives first, sorts last
SECOND = "00000000-0000-4000-8000-000000000002"


async def scenario_arrival_order(store: InMemoryStore) -> tuple[str | None, list[str]]:
    """Two requests for a batch not registered yet, nlp first then cj_assessment (whose
    event id sorts first); then the batch registers and gets its content. The pipeline
    that started, and the denial reasons."""
    rt, env = runtime_over(store), Envelopes()
    await rt.service.handle_message(*env.request("b1", "nlp", event_id=FIRST))
    await rt.service.handle_message(*env.request("b1", "cj_assessment", event_id=SECOND))
    await ready_batch(rt, env)
    state = await rt.store.load("b1")
    assert state is not None
    started = None if state.active_run is None else state.active_run.pipeline_name
    return started, denials(rt)


async def scenario_two_batches_differing_in_case(store: InMemoryStore) -> list[tuple[str, str, int]]:
    """Batches ``b1`` and ``B1`` registered and run: (batch, its run's final status, items)
    of each completion, and each batch's id and item count as the store gives it back."""
    rt, env = runtime_over(store), Envelopes()
    await rt.deliver(*env.register("b1", items=2))
    try:
        await rt.deliver(*env.register("B1", items=3))
    except PipelineStateError as exc:
        return [("B1", f"registration refused: {type(exc).__name__}: {exc}", 0)]
    await rt.deliver(*env.provisioned("B1", env.item_ids("B1", 3)))
    await answer_all(rt, env, await rt.deliver(*env.request("B1", "nlp")))
    done = [
        (
            m.value["data"]["batch_id"],
            m.value["data"]["final_status"],
            m.value["data"]["successful_essay_count"],
        )
        for m in rt.bus.messages(COMPLETED)
    ]
    return done


async def scenario_early_facts_in_one_group(store: InMemoryStore) -> tuple[list[str], list[str]]:
    """Provisioning and a request arrive together (``handle_many``) before the batch is
    registered; then the registration."""
    rt, env = runtime_over(store), Envelopes()
    results = await rt.service.handle_many(
        [env.provisioned("b1", env.item_ids("b1", 2)), env.request("b1", "nlp")]
    )
    assert [getattr(r, "waiting", None) for r in results] == ["batch_registration"] * 2, results
    await answer_all(rt, env, await rt.deliver(*env.register("b1", items=2)))
    rt.clock.advance(rt.service.waiting_window_seconds + 1)
    await rt.service.sweep_waiting(_no_dead_letter)
    await rt.relay.drain()
    return completions(rt), denials(rt)


class _RejectsOne:
    """A transport that refuses one event id for good and publishes the rest."""

    def __init__(self, poison: str) -> None:
        self.poison = poison
        self.sent: list[str] = []

    async def publish(self, messages: Sequence[Any]) -> list[BaseException | None]:
        out: list[BaseException | None] = []
        for message in messages:
            if message.event_id == self.poison:
                out.append(ValueError("poison"))
            else:
                self.sent.append(message.event_id)
                out.append(None)
        return out


async def scenario_poison_then_next_of_key(store: InMemoryStore) -> tuple[list[str], list[str]]:
    """Two messages of one key; the first is refused for good (parked after one attempt),
    the second goes out. Three relay passes: what was sent, and what is parked."""
    from pipeline_state.testing import T0, message

    clock = ManualClock(T0)
    await store.commit(Change("k", None, None, T0, outbox=(message("m1", "k"), message("m2", "k"))))
    transport = _RejectsOne("m1")
    relay = OutboxRelay(store, transport, clock, max_attempts=1)
    for _ in range(3):
        await relay.drain()
        clock.advance(120)
    return transport.sent, [r.message.event_id for r in await store.parked()]


async def scenario_relay_dies_after_claim(store: InMemoryStore) -> list[str]:
    """A relay claims a row and dies before publishing it; another relay drains an hour
    later."""
    from pipeline_state.testing import T0, message

    clock = ManualClock(T0)
    await store.commit(Change("k", None, None, T0, outbox=(message("m1", "k"),)))
    assert len(await store.claim(T0)) == 1  # the relay that died
    bus = InMemoryBus()
    clock.advance(3600)
    await OutboxRelay(store, bus, clock).drain()
    return [m.event_id for m in bus.messages()]


async def scenario_fact_beyond_the_first_hundred(store: InMemoryStore) -> tuple[str, list[str]]:
    """100 stray outcomes of a batch arrive before it is registered, then its provisioning
    (the 101st early fact), then the registration, then a request: the batch's status after
    the registration, and the request's denials."""
    rt, env = runtime_over(store), Envelopes()
    for _n in range(100):
        await rt.service.handle_message(
            *env.outcome("b1", "spellcheck", str(uuid.uuid4()), processed=["b1-e0"])
        )
    await rt.service.handle_message(*env.provisioned("b1", env.item_ids("b1", 2)))
    await rt.deliver(*env.register("b1", items=2))
    state = await rt.store.load("b1")
    assert state is not None
    await rt.deliver(*env.request("b1", "nlp"))
    return state.status.value, denials(rt)


async def scenario_dead_letter_reason(store: InMemoryStore) -> list[str]:
    """A stray outcome arrives before its batch is registered, the batch registers (the
    outcome now waits for a run to start), the window passes: what the dead letter says it
    waited for."""
    rt, env = runtime_over(store), Envelopes()
    await rt.service.handle_message(*env.outcome("b1", "spellcheck", str(uuid.uuid4()), processed=["b1-e0"]))
    await rt.deliver(*env.register("b1", items=2))
    rt.clock.advance(rt.service.waiting_window_seconds + 1)
    reasons: list[str] = []

    async def dead_letter(expired: Any) -> None:
        reasons.append(expired.fact.waits_for)

    await rt.service.sweep_waiting(dead_letter)
    return reasons


async def scenario_forget_after_applied(store: InMemoryStore) -> tuple[int, str | None]:
    """The sweep hands out an expired provisioning fact; before the caller forgets it, the
    registration arrives and the fact applies. What ``forget_waiting`` then reports, and the
    fact's inbox result."""
    rt, env = runtime_over(store), Envelopes()
    provisioned = env.provisioned("b1", env.item_ids("b1", 2))
    await rt.service.handle_message(*provisioned)
    rt.clock.advance(rt.service.waiting_window_seconds + 1)
    (expired,) = await rt.service.expired_waiting()
    await rt.deliver(*env.register("b1", items=2))  # another process: the fact applies
    removed = await rt.service.forget_waiting([expired.fact.event_id])
    entry = await rt.store.inbox_entry(expired.fact.event_id)
    return removed, None if entry is None else entry.result


def parallel_profile() -> Any:
    catalog = Catalog.from_dict(
        {
            "pipelines": {
                "nlp": {
                    "steps": [
                        {"name": "spellcheck", "deadline_seconds": 60},
                        {"name": "nlp", "deadline_seconds": 600},
                    ]
                }
            }
        }
    )
    return huleedu_profile(catalog=catalog, max_resends=1)


async def scenario_earliest_deadline(store: InMemoryStore) -> int:
    """Two phases run side by side, due at 60 s and 600 s; both commands are lost. How many
    spellcheck commands went out by 61 s (the first, plus its re-send at its deadline)."""
    rt, env = runtime_over(store, parallel_profile()), Envelopes()
    await ready_batch(rt, env)
    await rt.deliver(*env.request("b1", "nlp"))
    rt.clock.advance(61)
    await rt.expire_overdue()
    return len(rt.bus.messages(SPELLCHECK))


# ---------------------------------------------------------------------------------------------
# Held: the contract itself, and the mutants it catches
# ---------------------------------------------------------------------------------------------
CAUGHT = [
    CasIgnoredOnce,
    CasSkippedWithoutState,
    ConflictSwallowed,
    InboxDroppedWithOutbox,
    InboxDroppedAlways,
    OutboxDroppedWithoutState,
    CommitManyPartial,
    LoadOtherBatch,
    HistoryNewestFirst,
    ListWaitingIgnoresBatch,
    ListWaitingLosesLast,
    WaitingFlagOnlyBeforeRegistration,
    OverdueStrict,
    StalledRunsById,
    ClaimTwoPerKey,
    ClaimNoLease,
    RetryIgnored,
]


async def test_contract_passes_the_in_memory_store() -> None:
    """Held (control): the driver runs the whole contract and InMemoryStore passes it."""
    assert await contract_failures(InMemoryStore) == []


@pytest.mark.parametrize("mutant", CAUGHT, ids=lambda m: m.__name__)
async def test_contract_catches(mutant: type[InMemoryStore]) -> None:
    """Held: the contract fails each of these broken stores."""
    assert await contract_failures(mutant), f"{mutant.__name__} passes the whole StoreContract"


# ---------------------------------------------------------------------------------------------
# Gaps: mutants that pass the whole contract, yet break an engine promise
# ---------------------------------------------------------------------------------------------
async def _gap(mutant: type[InMemoryStore], scenario: Any, *, correct: Any) -> None:
    """``scenario`` gives ``correct`` on InMemoryStore and something else on ``mutant`` (the
    promise breaks); then the contract must fail ``mutant`` (today it passes it)."""
    assert await scenario(InMemoryStore()) == correct
    broken = await scenario(mutant())
    assert broken != correct, f"{mutant.__name__} keeps the promise: not a gap"
    assert await contract_failures(mutant), (
        f"{mutant.__name__} passes the whole StoreContract, yet {scenario.__name__} gives "
        f"{broken!r} instead of {correct!r}"
    )


async def test_gap_outbox_messages_of_a_change_that_archives_a_run() -> None:
    """Defect (test kit): a store whose ``commit`` drops the outbox messages of a change
    that archives a run (the change that ends the run, carrying BatchPipelineCompletedV1)
    passes the whole contract: no contract test commits ``archived`` together with
    ``outbox``, and the profile round trip reads the messages from the HandleResult, never
    from the store. Over it a run answered in full never publishes its completion.
    Correct: the contract checks that every part of a change (outbox included) is written
    whatever else the change carries, e.g. claims the outbox after the profile round trip."""
    await _gap(OutboxDroppedWithArchive, scenario_run_to_completion, correct=["completed_successfully"])


async def test_gap_inbox_entry_of_a_change_with_state_and_messages() -> None:
    """Defect (test kit): a store whose ``commit`` checks the inbox but does not *record* the
        entry of a change that writes a state and outbox messages passes the contract (its inbox
        tests record entries only for changes without messages, apart from a resolve, which
    *replaces* an entry; the round trip never redelivers).
        Over it a redelivered pipeline request was decided again and started the run again:
        two runs, two completions for one request (the state now ignores it too, as
        ``already_handled``, but the inbox still does not answer it). Correct: the contract
        records and re-checks the inbox entry of a change with state + outbox (redelivery ->
        DuplicateEventError, nothing written)."""
    correct = (["completed_successfully"], True)
    await _gap(InboxNotRecordedWithOutbox, scenario_redelivered_request, correct=correct)


async def test_gap_waiting_fact_deferred_on_a_registered_batch() -> None:
    """Defect (test kit): every waiting fact the contract keeps comes in a change with no
    state (``_deferral``), but the service defers a fact on a known batch with a state (its
    version bumped, ``_service.py`` ``_deferred``). A store that keeps ``waiting`` only when
    the change writes no state passes; over it an outcome that arrives before its phase is
    dispatched is lost (its inbox says deferred, so redelivery is a duplicate) and the run
    never completes. Correct: a contract test keeps a fact with a change that also writes a
    state, and lists it."""
    await _gap(WaitingDroppedWithState, scenario_outcome_before_dispatch, correct=["completed_successfully"])


async def test_gap_republish_with_a_state() -> None:
    """Defect (test kit): ``test_republish_requeues_rows_with_the_same_event_id`` re-queues
    with a change that writes no state, but a phase re-send (deadline passed) comes with the
    batch's new state. A store that ignores ``republish`` when the change writes a state
    passes; over it the re-sent command never goes out, so a phase whose first command was
    lost fails instead of completing. Correct: the contract re-queues with a state-writing
    ``commit`` too."""
    await _gap(RepublishDroppedWithState, scenario_resend, correct=(2, ["completed_successfully"]))


async def test_gap_deadline_added_by_an_update() -> None:
    """Defect (test kit): ``test_overdue_batches`` inserts each running batch with its
    deadline and only *clears* one by an update via ``commit`` (only ``commit_many`` adds
    one by update). A store whose ``commit`` indexes a deadline only on insert passes; over
    it a request on a registered batch dispatches a phase whose deadline is never swept: the
    silent phase never times out and the run never completes. Correct: the contract adds a
    deadline by a ``commit`` update (ready -> running) and expects ``overdue_batches`` to
    list it."""
    await _gap(DeadlineOnlyOnInsert, scenario_silent_phase, correct=["failed_critically"])


async def test_gap_earliest_of_several_deadlines() -> None:
    """Defect (test kit): the contract's running states have one deadline each, so a store
    that indexes the *latest* active phase deadline instead of the earliest
    (``Store.overdue_batches``: "a phase deadline at or before now") passes. Over it two
    phases run side by side, due at 60 s and 600 s: at 61 s the first is not re-sent (it
    would be at 600 s). Correct: a contract state with two active phases, due at different
    times, is overdue at the earlier one."""
    await _gap(LatestDeadline, scenario_earliest_deadline, correct=2)


@pytest.mark.parametrize("mutant", [ListWaitingByEventId, ListWaitingByArrivalTime], ids=lambda m: m.__name__)
async def test_gap_waiting_facts_in_arrival_order(mutant: type[InMemoryStore]) -> None:
    """Defect (test kit): the contract's waiting facts arrive in the order of their event
    ids (w1, w2, w3) and at the same or increasing times, so a ``list_waiting`` ordered by
    event id, or by arrival time then id, instead of arrival (``seq``) passes. Over it two
    requests kept before registration are re-attempted in the wrong order: the one that
    arrived second starts its pipeline and the first is denied (guarantees.md: re-attempted
    "in arrival order"). Correct: the contract keeps facts whose ids sort against their
    arrival, at one instant, and expects arrival order."""
    await _gap(
        mutant,
        scenario_arrival_order,
        correct=(
            "nlp",
            [
                "{'batch_id': 'b1', 'user_id': 'owner-1', 'requested_pipeline': 'cj_assessment', "
                "'denial_reason': 'pipeline_already_active', 'detail': 'the batch has an active run'}"
            ],
        ),
    )


async def test_gap_list_waiting_honours_a_large_limit() -> None:
    """Defect (test kit): the contract never keeps more than three facts nor asks
    ``list_waiting`` for more than 100, and the service asks for up to 2000 of a batch
    (``_RESUME_LIMIT``). A store that returns at most 100 passes; over it the 101st early
    fact of a batch (its provisioning) is not re-attempted when the batch registers, so the
    batch stays awaiting content and a request is denied ``batch_not_ready``
    (guarantees.md: re-attempted "in the unit of work of every change of its batch"; at most
    1,000 wait). Correct: a contract test keeps more than 100 facts of one batch and lists
    them all with a large ``limit``."""
    await _gap(
        ListWaitingCapped,
        scenario_fact_beyond_the_first_hundred,
        correct=("ready_for_pipeline_execution", []),
    )


async def test_gap_rewaits_with_a_state() -> None:
    """Defect (test kit): the contract applies ``rewaits`` in a ``commit`` that writes no
    state (and in ``commit_many``), but the service sends them with the change that moved
    the batch (a state). A store that ignores them then passes; over it a fact dead-letters
    naming what it no longer waited for (``batch_registration`` for a registered batch),
    and, as a readiness reason, it can make a request wait instead of being denied.
    Correct: the contract applies ``rewaits`` in a state-writing ``commit``."""
    await _gap(RewaitsIgnoredWithState, scenario_dead_letter_reason, correct=["run_start"])


async def test_gap_resolves_without_a_state() -> None:
    """Defect (test kit): the contract resolves a fact with a single ``commit`` only when
    the change writes a state, but the denial of an expired request (and every ignored or
    rejected re-attempt) resolves with no state. A store whose ``commit`` then leaves the
    fact waiting passes; over it an expired request is denied at every sweep: three
    denials for one request. Correct: the contract resolves a fact in a ``commit`` with no
    state and expects it gone from ``list_waiting``/``load_with_waiting``."""
    await _gap(
        ResolvesKeptWithoutState,
        scenario_expired_request,
        correct=[
            "{'batch_id': 'ghost', 'user_id': 'owner-1', 'requested_pipeline': 'nlp', "
            "'denial_reason': 'batch_not_found', 'detail': 'no such batch'}"
        ],
    )


async def test_gap_commit_many_keeps_every_fact_of_a_batch() -> None:
    """Defect (test kit): the contract's ``commit_many`` keeps one waiting fact at most, so a
    ``commit_many`` that keeps only the last fact of each batch passes. Over it early
    provisioning and an early request handled together (``handle_many``) lose the
    provisioning: after the registration the run never starts and the request is denied
    ``batch_not_ready``. Correct: a ``commit_many`` test keeps two facts of one batch."""
    await _gap(
        CommitManyOneFactPerBatch,
        scenario_early_facts_in_one_group,
        correct=(["completed_successfully"], []),
    )


async def test_gap_batch_ids_that_differ_in_case() -> None:
    """Defect (test kit): every contract batch id is lower case, so a store whose batch ids
    compare case-insensitively (a case-insensitive collation of the id column: ``load("B1")``
    gives batch ``b1``) passes. Over it batch ``B1`` cannot register once ``b1`` exists
    (its registration is refused as "already registered with other data") and never runs.
    Correct: the contract stores ``b1`` and ``B1`` (and ids differing in trailing space or
    length) as two batches."""
    await _gap(
        CaseFoldedBatchIds,
        scenario_two_batches_differing_in_case,
        correct=[("B1", "completed_successfully", 3)],
    )


async def test_gap_mark_published_marks_the_named_row() -> None:
    """Defect (test kit): the contract never publishes a row that waits behind a parked row
    of its key, so a ``mark_published`` that marks the key's oldest row instead of the
    named one passes. Over it (relay, max_attempts=1) the row after a poison message is
    published again at every pass and the parked row vanishes from ``parked()``. Correct: a
    contract test parks a key's head, publishes the next row and checks that it never comes
    back and the parked row stays parked."""
    await _gap(MarkPublishedOldestOfKey, scenario_poison_then_next_of_key, correct=(["m2"], ["m1"]))


async def test_gap_lease_expires() -> None:
    """Defect (test kit): the contract checks that a claimed row is not claimed again, never
    that it is once the lease ran out (the relay doc: a crash "re-publishes them after the
    lease"). A store whose lease never ends passes; over it a row claimed by a relay that
    died is never published. Correct: a contract test claims, does not mark, and claims
    again after a long time (or ``lease_seconds``) and gets the row back."""
    await _gap(LeaseNeverExpires, scenario_relay_dies_after_claim, correct=["m1"])


async def test_gap_forget_waiting_skips_facts_no_longer_waiting() -> None:
    """Defect (test kit, minor): the contract's ``forget_waiting`` test passes an id never
    seen ("nope"), never one that left the waiting set and applied. A store that records the
    dead-letter result for such an id (and counts it) passes; over it a fact that applied
    between the sweep and ``forget_waiting`` is recorded ``dead_lettered:expired`` and
    counted as dead-lettered (Store.forget_waiting: "ids no longer waiting are skipped").
    Correct: the contract forgets an id that was resolved and expects 0 and its inbox
    result unchanged."""
    await _gap(ForgetWaitingOverwrites, scenario_forget_after_applied, correct=(0, "applied"))


# ---------------------------------------------------------------------------------------------
# The results store contract: the same lease gap
# ---------------------------------------------------------------------------------------------


async def test_gap_results_store_lease_expires() -> None:
    """Defect (test kit): ``ResultsStoreContract`` checks that claimed rows are leased
    (``test_claim_keeps_order_per_key_and_leases``) but never that the lease ends. An
    ``InMemoryResultsStore`` whose lease never ends passes it, and a results message claimed
    by a relay that died is never published. Correct: the results contract claims again
    after the lease and gets the row back."""
    from pipeline_state.profiles.huleedu.results import InMemoryResultsStore
    from pipeline_state.profiles.huleedu.results.ports import ResultsChange
    from pipeline_state.testing import T0, message

    async def relay_dies_after_claim(store: Any) -> list[str]:
        clock = ManualClock(T0)
        await store.commit(ResultsChange("k", None, None, T0, outbox=(message("m1", "k"),)))
        assert len(await store.claim(T0)) == 1  # the relay that died
        bus = InMemoryBus()
        clock.advance(3600)
        await OutboxRelay(store, bus, clock).drain()
        return [m.event_id for m in bus.messages()]

    assert await _results_failures(InMemoryResultsStore) == []
    assert await relay_dies_after_claim(InMemoryResultsStore()) == ["m1"]
    forever = 10 * 365 * 86_400
    assert await relay_dies_after_claim(InMemoryResultsStore(lease_seconds=forever)) == []
    assert await _results_failures(lambda: InMemoryResultsStore(lease_seconds=forever)), (
        "a results store whose lease never ends passes the whole ResultsStoreContract"
    )


async def _results_failures(factory: Any) -> list[str]:
    from pipeline_state.profiles.huleedu.testing.results_contract import ResultsStoreContract

    return await contract_failures(factory, ResultsStoreContract)
