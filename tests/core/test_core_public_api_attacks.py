"""Found by an attack: the public Python API as a library user calls it.

Tests whose docstring starts "Was a defect" failed before the fix that came with them (the
docstring says what happened then and what is right); "Held" ones are attacks the library
withstood.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import threading
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import attrs
import pytest
from contract_runner import contract_failures
from core_flow import Flow, new_id

from pipeline_state import (
    BadCommandError,
    InMemoryBus,
    InMemoryRuntime,
    InMemoryStore,
    InvalidMessageError,
    ManualClock,
    OutboxRelay,
    PipelineService,
    PipelineStateError,
)
from pipeline_state.errors import UnknownTopicError
from pipeline_state.ports import Change, OutboxMessage, PhaseOutcome, RegisterBatch
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes

COMPLETED = "huleedu.batch.pipeline.completed.v1"


def _message(key: str) -> OutboxMessage:
    event_id = new_id()
    return OutboxMessage(event_id, "test.topic", key, {"event_id": event_id, "data": {"key": key}})


async def _write(store: InMemoryStore, clock: ManualClock, *messages: OutboxMessage) -> None:
    await store.commit(Change(new_id(), None, None, clock.now(), outbox=messages))


# ---------------------------------------------------------------------------------------------
# OutboxRelay with publishers that break the Publisher protocol
# ---------------------------------------------------------------------------------------------
class _ReturnsNone:
    """A transport that sends everything and returns nothing (a common slip)."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    async def publish(self, messages: Any) -> Any:
        self.sent.extend(m.event_id for m in messages)
        return None


class _ReturnsTruthy:
    """A transport that sends everything and answers "ok" for each message."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    async def publish(self, messages: Any) -> Any:
        self.sent.extend(m.event_id for m in messages)
        return ["ok" for _ in messages]


class _Raises:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc
        self.calls = 0

    async def publish(self, messages: Any) -> Any:
        self.calls += 1
        raise self.exc


async def test_relay_publisher_returning_none_gets_a_clear_error() -> None:
    """Was a defect: A publisher whose ``publish`` returns ``None`` (not one entry per message)
    makes the relay fail with ``TypeError: object of type 'NoneType' has no len()`` from
    inside its tracing bookkeeping (``_relay.py`` ``_send``, the ``finally`` block), and the
    row stays claimed though the transport sent it (it is published again after the lease).
    Correct: the relay checks the publisher's answer and raises a TypeError that names the
    publisher and what it must return (one ``None``/error per message)."""
    store, clock = InMemoryStore(), ManualClock()
    relay = OutboxRelay(store, _ReturnsNone(), clock)
    await _write(store, clock, _message("k"))
    with pytest.raises(TypeError, match=r"(?i)publish"):
        await relay.run_once()


async def test_relay_publisher_entries_that_are_not_errors_are_not_retried_as_failures() -> None:
    """Was a defect: A publisher answering ``"ok"`` (or ``True``) for each message it sent: the
    relay takes every entry that is not ``None`` as an error (``_relay.py`` ``_publish``:
    ``if error is None``), so a message that went out is re-published ``max_attempts``
    times and then parked with ``last_error='str: ok'``: duplicates on the wire and a
    delivered message reported as undeliverable. Correct: an entry that is neither ``None``
    nor an exception is a publisher bug raised as a TypeError naming it (the row is not
    re-published), or at least the message goes out once."""
    store, clock = InMemoryStore(), ManualClock()
    publisher = _ReturnsTruthy()
    relay = OutboxRelay(store, publisher, clock, base_backoff=0.0)
    await _write(store, clock, _message("k"))
    for _ in range(6):
        try:
            await relay.run_once()
        except TypeError:
            break
        clock.advance(100)
    assert len(publisher.sent) <= 1, f"one message published {len(publisher.sent)} times"
    assert await store.parked() == []


async def test_relay_publisher_raising_an_unexpected_error_does_not_wedge_the_relay() -> None:
    """Was a defect: A publisher that raises something other than a PipelineStateError or an
    OSError (here ``ValueError``, as a client library may for one bad message) escapes
    ``run_once`` (``_relay.py`` ``_send`` catches only ``(PipelineStateError, OSError)``):
    the row is never counted as failed, never backs off, never parks, so it is retried on
    every pass forever and :meth:`OutboxRelay.run` (which only catches
    StoreUnavailableError) dies on the first pass. Correct: the failure is recorded on the
    rows of the call like a returned error (``mark_failed``), and after ``max_attempts``
    the row is parked with its error, as the module doc promises for failing rows."""
    store, clock = InMemoryStore(), ManualClock()
    publisher = _Raises(ValueError("message too large"))
    relay = OutboxRelay(store, publisher, clock, max_attempts=2)
    await _write(store, clock, _message("k"))
    for _ in range(4):
        with contextlib.suppress(ValueError):
            await relay.run_once()
        clock.advance(100)
    assert len(await store.parked()) == 1, "the poison row was never parked"
    stop = asyncio.Event()
    stop.set()
    await relay.run(stop)  # the runner survives the poison row


@pytest.mark.parametrize("exc", [KeyboardInterrupt(), asyncio.CancelledError()])
async def test_relay_base_exceptions_propagate_and_lose_nothing(exc: BaseException) -> None:
    """Held: A BaseException from the publisher propagates; the row stays pending and is
    published once the lease passes."""
    store, clock = InMemoryStore(), ManualClock()
    relay = OutboxRelay(store, _Raises(exc), clock)
    await _write(store, clock, _message("k"))
    with pytest.raises(type(exc)):
        await relay.run_once()
    assert await store.pending_count() == 1
    bus = InMemoryBus()
    clock.advance(31)
    await OutboxRelay(store, bus, clock).drain()
    assert len(bus.messages()) == 1


@pytest.mark.parametrize("kw", [{"batch_size": 0}, {"max_attempts": 0}, {"rows_per_key": -1}])
def test_relay_rejects_bad_sizes(kw: dict[str, int]) -> None:
    """Held: batch_size/max_attempts/rows_per_key below 1 are refused at construction."""
    with pytest.raises(ValueError, match="must be at least 1"):
        OutboxRelay(InMemoryStore(), InMemoryBus(), ManualClock(), **kw)


# ---------------------------------------------------------------------------------------------
# Engine inputs given to PipelineService.execute (documented: "an engine input ... that
# arrived by another route")
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("expected", "item_ids"),
    [(-3, None), (2, ("a", "a")), (2, "ab")],
    ids=["negative-count", "duplicate-ids", "ids-as-str"],
)
async def test_register_batch_with_impossible_items_is_refused(expected: int, item_ids: Any) -> None:
    """Was a defect: ``execute(RegisterBatch(...))`` accepts a registration that can never be
    satisfied: ``expected_items=-3`` (the batch is created and then every ContentReady
    raises ``too_many_items (0 items named, -3 registered)``: it is stuck in
    awaiting_content_validation for ever), duplicate ``item_ids`` (provisioning both raises
    ``duplicate_items``), or ``item_ids`` given as a ``str`` (split into one-letter ids).
    The engine checks only the upper bound (``_decide/intake.py`` ``items_within_limit``)
    and never the rest (``register``, intake.py:39-63). Correct: the registration is refused
    with a BadCommandError (ItemMismatchError) / TypeError naming the field, and no batch is
    created."""
    rt = InMemoryRuntime()
    with pytest.raises((BadCommandError, TypeError, ValueError)):
        await rt.service.execute(RegisterBatch("r1", "o", expected, item_ids, "ENG5", "en", prompt_ref="p"))
    assert await rt.store.load("r1") is None


async def test_register_batch_over_the_item_limit_is_refused_before_any_work() -> None:
    """Was a defect: ``items_within_limit`` refuses a registration of more items than
    ``Profile.max_items_per_batch``, but only after ``register`` (``_decide/intake.py:41``)
    derived one id per expected item: ``expected_items=10**7`` takes ~25 s (and the memory
    of ten million ids) before the ItemMismatchError. A profile whose wire carries a count
    without a bound makes this a one-message stall. Correct: the bound is checked before
    any per-item work (constant time)."""
    rt = InMemoryRuntime()
    started = time.monotonic()
    with pytest.raises(BadCommandError):
        await rt.service.execute(RegisterBatch("h1", "o", 10_000_000, None, "ENG5", "en"))
    # Constant time: milliseconds; the per-item work took ~25 s (room for a loaded machine).
    assert time.monotonic() - started < 5.0, f"refusal took {time.monotonic() - started:.1f}s"


async def test_phase_outcome_with_unknown_status_gets_a_typed_error(flow: Flow) -> None:
    """Was a defect: ``execute(PhaseOutcome(..., status="bogus", ...))`` raises a bare
    ``KeyError: 'bogus'`` from ``_decide/progress.py:59`` (``OUTCOME_TRIGGERS[p.status]``).
    Correct: a BadCommandError (or ValueError) naming the status and the allowed values."""
    ids = await flow.ready("b1", items=2)
    started = await flow.start("b1", "nlp")
    outcome = PhaseOutcome("b1", "spellcheck", "bogus", (), (), started.correlation_id)  # type: ignore[arg-type]
    with pytest.raises((PipelineStateError, ValueError)) as info:
        await flow.rt.service.execute(outcome)
    assert "bogus" in str(info.value)
    assert ids


# ---------------------------------------------------------------------------------------------
# PipelineService / ManualClock construction
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kw", [{"max_attempts": 0}, {"waiting_window_seconds": math.nan}])
def test_service_refuses_unusable_settings_when_built(kw: dict[str, Any]) -> None:
    """Was a defect: ``PipelineService`` validates ``group_limit`` and a non-positive
    ``waiting_window_seconds`` at construction, but accepts ``max_attempts=0`` (every
    ``handle_message`` then fails with ``ValueError: attempts must be at least 1`` from
    ``_retry.py``) and ``waiting_window_seconds=nan`` (``nan <= 0`` is false; the sweep
    fails later with ``cannot convert float NaN to integer``). Correct: a ValueError naming
    the argument when the service is built (``_service.py:345``)."""
    with pytest.raises(ValueError, match="must be a"):
        PipelineService(InMemoryStore(), **kw)


@pytest.mark.parametrize(
    "call",
    [
        lambda: ManualClock("2025-01-01"),  # type: ignore[arg-type]
        lambda: ManualClock().advance(math.nan),
        lambda: ManualClock().advance(math.inf),
    ],
    ids=["start-str", "advance-nan", "advance-inf"],
)
def test_manual_clock_misuse_gets_a_clear_error(call: Any) -> None:
    """Was a defect (minor): ``ManualClock("2025-01-01")`` raises ``AttributeError: 'str' object
    has no attribute 'tzinfo'``; ``advance(nan)`` raises ``ValueError: cannot convert float
    NaN to integer`` and ``advance(inf)`` an ``OverflowError`` from ``timedelta``
    (``_clock.py:26-36``). Correct: TypeError/ValueError naming the argument (a start that
    is not a datetime; seconds that are not a finite number)."""
    with pytest.raises((TypeError, ValueError)) as info:
        call()
    assert any(word in str(info.value) for word in ("start", "datetime", "seconds", "finite"))


def test_manual_clock_refuses_naive_start_and_going_backwards() -> None:
    """Held: Naive start, negative advance and set() into the past are refused."""
    with pytest.raises(ValueError, match="timezone-aware"):
        ManualClock(datetime(2025, 1, 1))
    clock = ManualClock()
    with pytest.raises(ValueError, match="backwards"):
        clock.advance(-1)
    with pytest.raises(ValueError, match="backwards"):
        clock.set(datetime(2024, 1, 1, tzinfo=UTC))
    with pytest.raises(TypeError):
        clock.set(datetime(2030, 1, 1))  # naive


# ---------------------------------------------------------------------------------------------
# handle_message / handle_many with hostile input
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("wrap", [bytearray, memoryview], ids=["bytearray", "memoryview"])
async def test_handle_message_reads_a_bytes_like_message(wrap: Any, env: HuleEduEnvelopes) -> None:
    """Was a defect (minor): A valid envelope given as ``bytearray`` (which ``Inbound.parse`` and
    ``parse_message`` accept) or ``memoryview`` is refused with the misleading
    ``InvalidMessageError: the envelope must be a JSON object``: ``_raw_bytes``
    (``_service.py:207``) handles only ``bytes`` and ``str`` and JSON-encodes anything else
    with ``default=str``, so the buffer becomes the JSON string ``"bytearray(b'...')"``.
    Correct: bytes-like input is read as bytes (or refused with a TypeError saying so)."""
    rt = InMemoryRuntime()
    topic, envelope = env.register("b1", items=2)
    try:
        await rt.service.handle_message(topic, wrap(json.dumps(envelope).encode()))
    except InvalidMessageError as exc:
        pytest.fail(f"a valid message as {wrap.__name__} was refused: {exc}")
    except TypeError:
        return
    assert await rt.store.load("b1") is not None


async def test_hostile_messages_get_typed_errors(env: HuleEduEnvelopes) -> None:
    """Held: Non-JSON bytes, None, numbers, unknown/None topics, an event id that is an
    object: each raises an InvalidMessageError (UnknownTopicError) and changes nothing."""
    rt = InMemoryRuntime()
    topic, envelope = env.register("b1", items=2)
    for raw in (b"\xff\xfe not json", None, 5, [envelope], "", b"{}", {"event_id": object()}):
        with pytest.raises(InvalidMessageError):
            await rt.service.handle_message(topic, raw)  # type: ignore[arg-type]
    for bad_topic in (None, 5, "huleedu.batch.pipeline.completed.v1", topic + " "):
        with pytest.raises(UnknownTopicError):
            await rt.service.handle_message(bad_topic, envelope)  # type: ignore[arg-type]
    results = await rt.service.handle_many([(topic, b"nope"), ("x", envelope)])
    assert [type(r) for r in results] == [InvalidMessageError, UnknownTopicError]
    assert await rt.store.load("b1") is None
    assert await rt.store.pending_count() == 0


# ---------------------------------------------------------------------------------------------
# Concurrency: one service and one InMemoryStore used from two threads (one loop each)
# ---------------------------------------------------------------------------------------------
async def test_two_threads_on_one_service_complete_a_run_once(
    env: HuleEduEnvelopes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Was a defect: The service supports several event loops, one per thread (the group commit
    keeps one lane per loop, ``_coalesce.py``), but ``InMemoryStore.commit`` is atomic only
    with respect to coroutines (``_memory.py`` ``commit``: ``_validate`` then ``_apply``):
    a thread switch between the two lets two threads commit on the same expected version.
    Two threads delivering the final outcome of one run (distinct event ids, as a
    redelivery with a new id) then both complete it: two BatchPipelineCompletedV1 and the
    run archived twice. The switch is forced here with a sleep at the start of ``_apply``
    (a preemption the interpreter may make at any bytecode); without it the same
    double completion shows up at random (2 of 800 runs with ``sys.setswitchinterval(1e-6)``).
    Correct: the compare-and-set holds across threads (a lock around check+apply in the
    in-memory store), or the store refuses use from a second thread with a clear error."""
    rt = InMemoryRuntime()
    flow = Flow(rt, env)
    ids = await flow.ready("b1", items=2)
    started = await flow.start("b1", "nlp")
    await flow.outcome("b1", "spellcheck", started.correlation_id, processed=ids)
    topic, envelope = env.outcome("b1", "nlp", started.correlation_id, processed=ids)

    original = InMemoryStore._apply

    def slow_apply(self: InMemoryStore, change: Change) -> None:
        time.sleep(0.05)
        original(self, change)

    monkeypatch.setattr(InMemoryStore, "_apply", slow_apply)
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def worker() -> None:
        async def main() -> None:
            barrier.wait()
            await rt.service.handle_message(topic, {**envelope, "event_id": str(uuid.uuid4())})

        try:
            asyncio.run(main())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    monkeypatch.undo()
    await rt.relay.drain()
    completed = [m for m in rt.bus.messages() if m.topic == COMPLETED]
    assert len(completed) == 1, f"{len(completed)} completions of one run (errors: {errors})"
    assert len(await rt.store.history("b1")) == 1


async def test_concurrent_tasks_on_one_loop_complete_each_run_once(env: HuleEduEnvelopes) -> None:
    """Held: 40 runs, each final outcome delivered 3 times at once (fresh event ids) by
    concurrent tasks through handle_message (group commit) and handle_many: one completion
    per run, one archived run each."""
    rt = InMemoryRuntime()
    flow = Flow(rt, env)
    finals = []
    for i in range(40):
        b = f"c{i}"
        ids = await flow.ready(b, items=2)
        started = await flow.start(b, "nlp")
        await flow.outcome(b, "spellcheck", started.correlation_id, processed=ids)
        finals.append(env.outcome(b, "nlp", started.correlation_id, processed=ids))

    def fresh(delivery: tuple[str, dict[str, Any]]) -> tuple[str, dict[str, Any]]:
        return delivery[0], {**delivery[1], "event_id": str(uuid.uuid4())}

    calls = [rt.service.handle_message(*fresh(d)) for d in finals for _ in range(2)]
    calls.append(rt.service.handle_many([fresh(d) for d in finals]))
    await asyncio.gather(*calls)
    await rt.relay.drain()
    per: dict[str, int] = {}
    for m in rt.bus.messages():
        if m.topic == COMPLETED:
            per[m.value["data"]["batch_id"]] = per.get(m.value["data"]["batch_id"], 0) + 1
    assert per == {f"c{i}": 1 for i in range(40)}
    for i in range(40):
        assert len(await rt.store.history(f"c{i}")) == 1


# ---------------------------------------------------------------------------------------------
# The test kit's StoreContract against deliberately broken stores
# ---------------------------------------------------------------------------------------------
class _DropsArchivedInCommitMany(InMemoryStore):
    """Broken on purpose: ``commit_many`` forgets ``Change.archived`` (the runs a change
    archives never reach the batch's history)."""

    async def commit_many(self, changes: Any) -> None:
        await super().commit_many([attrs.evolve(c, archived=()) for c in changes])


class _DropsRequeuesInCommitMany(InMemoryStore):
    """Broken on purpose: ``commit_many`` forgets ``Change.republish`` and ``Change.rewaits``."""

    async def commit_many(self, changes: Any) -> None:
        await super().commit_many([attrs.evolve(c, republish=(), rewaits=()) for c in changes])


async def test_contract_passes_the_in_memory_store() -> None:
    """Held (control): The driver above runs the whole contract; InMemoryStore passes it."""
    assert await contract_failures(InMemoryStore) == []


@pytest.mark.parametrize("broken", [_DropsArchivedInCommitMany, _DropsRequeuesInCommitMany])
async def test_contract_catches_a_commit_many_that_drops_part_of_a_change(broken: Any) -> None:
    """Was a defect (test kit): ``StoreContract`` promises to hold ``commit_many`` to "its rules"
    (each change committed as ``commit`` commits it, all or nothing), but its commit_many
    tests never give a change with ``archived``, ``republish`` or ``rewaits``
    (``testing/contract.py:538-612``, ``731``). A store whose ``commit_many`` silently drops
    them passes every contract test, yet in service use it loses archived runs (the history
    promised "immutable, queryable") whenever ``handle_many``, a group commit or a resumed
    waiting fact completes a run, and loses operator republishes/rewaits in the same paths.
    Correct: the contract has a commit_many test with each of these fields, so such a store
    fails it."""
    assert await contract_failures(broken), f"{broken.__name__} passes the whole StoreContract"
