"""Found by an attack on recorded refusals (``record_refusal``, HTTP ``RefusedBeforeError``)
and on the SQL store answering a redelivery the retention purge forgot as a duplicate (its
outbox rows are still there). The two tests whose docstring says "Was a defect" failed
before their fix; the others held."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import attrs
import httpx
import pytest
from pipeline_state_http import HttpSettings, create_app
from pipeline_state_sql import SqlStore

from pipeline_state import InMemoryBus, ManualClock, OutboxRelay, PipelineService
from pipeline_state.ports import Change, Retention, purge_expired
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes
from tests.http.conftest import TOKENS, authed_client

pytestmark = pytest.mark.timeout(120)

DAY = 86_400.0
KEEP_PUBLISHED = Retention(published=None, inbox=30 * DAY)  # outbox rows outlive inbox entries


def key(value: str) -> dict[str, str]:
    return {"Idempotency-Key": value}


class Kit:
    def __init__(self, store: Any) -> None:
        self.clock = ManualClock()
        self.store = store
        self.service = PipelineService(store, clock=self.clock)
        self.bus = InMemoryBus()
        self.relay = OutboxRelay(store, self.bus, self.clock)
        self.env = HuleEduEnvelopes()

    async def deliver(self, delivery: tuple[str, dict[str, Any]]) -> Any:
        result = await self.service.handle_message(*delivery)
        await self.relay.drain()
        return result

    async def ready(self, batch: str, essays: int = 1) -> list[str]:
        items = self.env.item_ids(batch, essays)
        await self.deliver(self.env.register(batch, items=essays))
        await self.deliver(self.env.provisioned(batch, items))
        return items


# ------------------------------------------------------------------- (2) _emitted_before
async def _redelivered_lost_correlation_outcome_waits(k: Kit, batch: str) -> tuple[str, dict[str, Any]]:
    """Run 1 of ``nlp`` ends by a failed spellcheck outcome W whose correlation id was lost
    (applied to the active run and flagged ``correlation_mismatch``: it emits the run's
    completion). The inbox forgets W (retention), W is redelivered: the batch is ready and
    W's correlation id belongs to no archived run that the row knows, so W waits for a run
    start. Returns W.

    Since stored layout 5 the batch's summary remembers the id W was applied under
    (``past.answered``) and W would be stale (``tests/sql/test_sql_mismatched_outcome_repeats.py``);
    a row upgraded from layout 4 does not know it, and that is the row played here: the
    summary is written back without it, as the previous release wrote it."""
    items = await k.ready(batch)
    await k.deliver(k.env.request(batch, "nlp"))
    lost = k.env.outcome(batch, "spellcheck", str(uuid.uuid4()), failed=items, status="failed_critically")
    applied = await k.deliver(lost)
    assert applied.decision is not None
    assert applied.decision.changed
    state = await k.service.get_batch(batch)
    assert state.active_run is None
    assert len(state.history) == 1
    stored = await k.store.load(batch)
    assert stored is not None
    assert stored.past.answered
    forgotten = attrs.evolve(stored, version=stored.version + 1, past=attrs.evolve(stored.past, answered=()))
    await k.store.commit(Change(batch, stored.version, forgotten, k.clock.now()))
    k.clock.advance(31 * DAY)
    assert (await purge_expired(k.store, KEEP_PUBLISHED, k.clock.now())).inbox > 0
    again = await k.deliver(lost)
    assert not again.duplicate
    assert again.waiting == "run_start", again
    return lost


async def test_a_redelivered_waiting_fact_handled_before_ends_and_the_request_applies(
    sql_store: SqlStore,
) -> None:
    """Was a defect: a fresh pipeline request X resumed a waiting fact W, a redelivery the
    purge forgot. X and W were committed together; W's outbox ids collided with its first
    handling, the store answered ``DuplicateEventError(W)``, and the unit of work answered
    *X* as the duplicate: X was lost, and W stayed waiting, so every later request of the
    batch was swallowed the same way. Now W ends (``rejected:DuplicateEventError``) and X
    is decided again without it."""
    k = Kit(sql_store)
    await _redelivered_lost_correlation_outcome_waits(k, "b1")
    results = [await k.deliver(k.env.request("b1", "nlp")) for _ in range(3)]
    state = await k.service.get_batch("b1")
    assert [r.duplicate for r in results] == [False, False, False], (
        "fresh pipeline requests (new event ids) answered as duplicates: "
        f"{[r.duplicate for r in results]}; runs in history: {len(state.history)}, "
        f"active: {state.active_run is not None}"
    )
    assert state.active_run is not None or len(state.history) == 2
    assert await k.store.count_waiting() == 0


async def test_a_redelivered_waiting_fact_handled_before_spares_a_group_commit(sql_store: SqlStore) -> None:
    """Was a defect: the same through ``handle_many``: the group commit failed, the messages
    were handled one by one, and the fresh request was still answered as a duplicate."""
    k = Kit(sql_store)
    await _redelivered_lost_correlation_outcome_waits(k, "b1")
    await k.ready("b2")
    results = await k.service.handle_many([k.env.request("b1", "nlp"), k.env.request("b2", "nlp")])
    assert [getattr(r, "duplicate", r) for r in results] == [False, False], results
    assert (await k.service.get_batch("b1")).active_run is not None or len(
        (await k.service.get_batch("b1")).history
    ) == 2


async def test_a_redelivered_request_in_a_group_leaves_the_other_message_applied(
    sql_store: SqlStore,
) -> None:
    """Held: a group (coalesced ``handle_message`` calls) holding one pipeline request
    redelivered after the purge and one fresh registration: the group commit fails on the
    outbox's event id, the messages are retried one by one; the redelivery is a duplicate
    and the registration applies (once)."""
    k = Kit(sql_store)
    k.service = PipelineService(sql_store, clock=k.clock, group_limit=8)
    await k.ready("r1")
    request = k.env.request("r1", "nlp")
    assert not (await k.deliver(request)).duplicate
    k.clock.advance(31 * DAY)
    assert (await purge_expired(sql_store, KEEP_PUBLISHED, k.clock.now())).inbox > 0
    sent = k.bus.count()
    calls = [k.service.handle_message(*request)] + [
        k.service.handle_message(*k.env.register(f"n{i}", items=1)) for i in range(4)
    ]
    results = await asyncio.gather(*calls)
    await k.relay.drain()
    assert [r.duplicate for r in results] == [True, False, False, False, False]
    assert sorted(m.key for m in k.bus.messages(since=sent)) == [f"n{i}" for i in range(4)]


async def test_emitted_before_keeps_a_foreign_collision_an_error(sql_store: SqlStore) -> None:
    """Held: a row another writer put under the id a decision will emit (no metadata, or a
    causation id naming another event) is not taken for a redelivery: the commit fails
    with a plain StoreError (not a duplicate) and nothing is written."""
    from pipeline_state._decide.ids import outbox_event_id
    from pipeline_state.errors import DuplicateEventError, StoreError
    from pipeline_state.ports import Change, InboxEntry, OutboxMessage

    k = Kit(sql_store)
    for n, metadata in enumerate((None, {"causation_id": "someone-else"}, "not-a-dict")):
        batch = f"f{n}"
        await k.ready(batch)
        request = k.env.request(batch, "nlp")
        event_id = request[1]["event_id"]
        taken = outbox_event_id(event_id, 0)
        at = k.clock.now()
        value = {"event_id": taken, "data": {}, "metadata": metadata}
        await sql_store.commit(
            Change(
                f"foreign-{n}",
                None,
                None,
                at,
                inbox=InboxEntry(f"foreign-in-{n}", "t", f"foreign-{n}", "applied", at),
                outbox=(OutboxMessage(taken, "t", f"foreign-{n}", value),),
            )
        )
        with pytest.raises(StoreError) as raised:
            await k.service.handle_message(*request)
        assert not isinstance(raised.value, DuplicateEventError), metadata
        assert not await sql_store.is_processed(event_id)
        assert (await k.service.get_batch(batch)).active_run is None


# ------------------------------------------------------------------- (1) recorded refusals
NLP = {"requested_pipeline": "nlp", "user_id": "t"}


class Http(Kit):
    def __init__(self, store: Any, *, group_limit: int = 1) -> None:
        super().__init__(store)
        self.service = PipelineService(store, clock=self.clock, group_limit=group_limit)
        self.app = create_app(self.service, settings=HttpSettings(**TOKENS))
        self.http = authed_client(self.app)

    async def __aenter__(self) -> Http:
        await self.http.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.http.__aexit__(*exc)


def answer(r: httpx.Response) -> tuple[int, str | None, str | None]:
    body = r.json()
    return r.status_code, body.get("error"), body.get("run_id")


async def test_two_keyed_cancels_with_different_keys_race_one_applies(sql_store: SqlStore) -> None:
    """Held: two operators cancel the same run at once with their own keys: one 202 naming
    the run, the other 409 (recorded); replays of each key answer what it answered, also
    after the teacher started the next run, which neither replay touches."""
    async with Http(sql_store) as w:
        for i in range(4):
            b = f"c{i}"
            await w.ready(b)
            run = (await w.http.post(f"/v1/batches/{b}/pipelines", json=NLP)).json()
            first = await asyncio.gather(
                w.http.post(f"/v1/batches/{b}/cancel", json={}, headers=key("op-a")),
                w.http.post(f"/v1/batches/{b}/cancel", json={}, headers=key("op-b")),
            )
            got = sorted(answer(a) for a in first)
            assert got == [(202, None, run["run_id"]), (409, "illegal_transition", None)], [
                a.text for a in first
            ]
            nxt = await w.http.post(
                f"/v1/batches/{b}/pipelines", json={**NLP, "requested_pipeline": "cj_assessment"}
            )
            assert nxt.status_code == 202, nxt.text
            again = await asyncio.gather(
                w.http.post(f"/v1/batches/{b}/cancel", json={}, headers=key("op-a")),
                w.http.post(f"/v1/batches/{b}/cancel", json={}, headers=key("op-b")),
            )
            assert [answer(a) for a in again] == [answer(a) for a in first], [a.text for a in again]
            state = await w.service.get_batch(b)
            assert state.active_run is not None
            assert state.active_run.run_id == nxt.json()["run_id"]


async def test_a_keyed_cancel_racing_the_request_that_starts_the_run(sql_store: SqlStore) -> None:
    """Held: a keyed cancel races the pipeline request on a ready batch. A 409 (refused,
    recorded) leaves the run active, a 202 names the cancelled run; the replay answers the
    same and changes nothing."""
    async with Http(sql_store) as w:
        for i in range(6):
            b = f"r{i}"
            await w.ready(b)
            calls = [
                w.http.post(f"/v1/batches/{b}/pipelines", json=NLP),
                w.http.post(f"/v1/batches/{b}/cancel", json={}, headers=key("k")),
            ]
            if i % 2:
                calls.reverse()
            answers = await asyncio.gather(*calls)
            request, cancel = answers if i % 2 == 0 else answers[::-1]
            assert request.status_code == 202, request.text
            state = await w.service.get_batch(b)
            if cancel.status_code == 202:
                assert cancel.json()["run_id"] == request.json()["run_id"]
                assert state.active_run is None
            else:
                assert answer(cancel)[:2] == (409, "illegal_transition"), cancel.text
                assert state.active_run is not None
            replay = await w.http.post(f"/v1/batches/{b}/cancel", json={}, headers=key("k"))
            assert answer(replay) == answer(cancel), (cancel.text, replay.text)
            assert (await w.service.get_batch(b)).active_run == state.active_run


async def test_a_refusal_for_an_unknown_batch_blocks_nothing_of_its_later_life(sql_store: SqlStore) -> None:
    """Held: a keyed cancel and retry-phase refused for a batch not registered yet are
    recorded; the batch's facts then arrive out of order through coalesced
    ``handle_message`` calls (provisioning waits for the registration), the batch becomes
    ready, a run starts and completes; the replays stay refused (404) and touch nothing,
    a new key cancels."""
    async with Http(sql_store, group_limit=8) as w:
        c = await w.http.post("/v1/batches/u1/cancel", json={}, headers=key("c"))
        r = await w.http.post(
            "/v1/batches/u1/retry-phase", json={"phase_name": "spellcheck", "user_id": "t"}, headers=key("r")
        )
        assert answer(c)[:2] == answer(r)[:2] == (404, "batch_not_found"), (c.text, r.text)
        items = w.env.item_ids("u1", 2)
        waits = await w.service.handle_message(*w.env.provisioned("u1", items))
        assert waits.waiting == "batch_registration"
        grouped = await asyncio.gather(
            w.service.handle_message(*w.env.register("u2", items=2)),
            w.service.handle_message(*w.env.register("u1", items=2)),
            w.service.handle_message(*w.env.register("u3", items=2)),
        )
        assert not any(x.duplicate for x in grouped)
        assert (await w.service.get_batch("u1")).status.value == "ready_for_pipeline_execution"
        run = await w.http.post("/v1/batches/u1/pipelines", json=NLP)
        assert run.status_code == 202, run.text
        c2 = await w.http.post("/v1/batches/u1/cancel", json={}, headers=key("c"))
        r2 = await w.http.post(
            "/v1/batches/u1/retry-phase", json={"phase_name": "spellcheck", "user_id": "t"}, headers=key("r")
        )
        assert answer(c2)[:2] == answer(r2)[:2] == (404, "batch_not_found")
        assert (await w.service.get_batch("u1")).active_run is not None
        fresh = await w.http.post("/v1/batches/u1/cancel", json={}, headers=key("c-new"))
        assert answer(fresh) == (202, None, run.json()["run_id"])
