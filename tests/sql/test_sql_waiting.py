"""The SQL side of issues 11 and 10.6 on SQLite and PostgreSQL alike: early facts wait
durably (and survive a restart), transition notes round-trip, and bad data is refused as
bad input (:class:`RejectedDataError`), never reported as the store being down."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

import attrs
import pytest
from pipeline_state_sql import SqlStore
from pipeline_state_sql.errors import translate
from sqlalchemy import exc as sa_exc

from pipeline_state import ManualClock, PipelineService
from pipeline_state.errors import RejectedDataError, StoreError
from pipeline_state.ports import Change, InboxEntry, TransitionRecord
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes
from pipeline_state.testing import T0, make_state

StoreMaker = Callable[[], Awaitable[SqlStore]]


async def test_early_facts_wait_in_the_store_and_survive_a_restart(make_store: StoreMaker) -> None:
    env = HuleEduEnvelopes()
    ids = env.item_ids("b1", 2)
    clock = ManualClock()
    store = await make_store()
    service = PipelineService(store, clock=clock)
    request = env.request("b1", "nlp")
    provisioned = env.provisioned("b1", ids)

    results = await service.handle_many([request, provisioned])
    assert [getattr(r, "waiting", None) for r in results] == ["batch_registration"] * 2
    await store.close()

    reopened = await make_store()  # a restart: the waiting set is in the database
    service = PipelineService(reopened, clock=clock)
    assert await reopened.count_waiting() == 2
    assert [f.event_id for f in await reopened.list_waiting("b1")] == [
        request[1]["event_id"],
        provisioned[1]["event_id"],
    ]
    registered = await service.handle_message(*env.register("b1", items=2))

    assert len(registered.resumed) == 2
    state = await service.get_batch("b1")
    assert state.status.value == "processing_pipelines"
    assert await reopened.count_waiting() == 0
    entry = await reopened.inbox_entry(request[1]["event_id"])
    assert entry is not None
    assert entry.result == "applied"
    # A redelivery of a resolved fact is a duplicate.
    assert (await service.handle_message(*provisioned)).duplicate


async def test_outcome_before_dispatch_waits_on_sql(sql_store: SqlStore) -> None:
    env = HuleEduEnvelopes()
    ids = env.item_ids("b1", 2)
    service = PipelineService(sql_store, clock=ManualClock())
    corr = str(uuid.uuid4())
    for delivery in (env.register("b1", items=2), env.provisioned("b1", ids)):
        await service.handle_message(*delivery)
    await service.handle_message(*env.request("b1", "nlp", correlation_id=corr))
    nlp = env.outcome("b1", "nlp", corr, processed=ids, suffix="spellcheck")
    spell = env.outcome("b1", "spellcheck", corr, processed=ids)

    first, second = await service.handle_many([nlp, spell])

    assert getattr(first, "waiting", None) == "phase_dispatch:nlp"
    assert len(getattr(second, "resumed", ())) == 1
    state = await service.get_batch("b1")
    assert state.status.value == "ready_for_pipeline_execution"
    assert state.history[-1].status.value == "completed_successfully"


async def test_transition_note_round_trips(sql_store: SqlStore) -> None:
    record = TransitionRecord(
        "b1", "phase", "nlp", "succeed", "dispatch_initiated", "completed_successfully", "r1", "e1", "c1", T0,
        note="correlation_mismatch",
    )  # fmt: skip
    await sql_store.commit(Change("b1", None, make_state("b1"), T0, transitions=(record,)))
    assert await sql_store.transitions("b1") == [record]


# -- issue 10.6: bad data is bad input on every backend -------------------------------------
@pytest.mark.parametrize(
    "bad",
    [
        pytest.param("a\x00b", id="nul"),
        pytest.param("x" * 201, id="too-long"),
        pytest.param("lone-\ud800", id="lone-surrogate"),
    ],
)
async def test_bad_ids_are_rejected_data_on_every_backend(sql_store: SqlStore, bad: str) -> None:
    with pytest.raises(RejectedDataError):
        await sql_store.load(bad)
    with pytest.raises(RejectedDataError):
        await sql_store.load_with_waiting(bad)
    with pytest.raises(RejectedDataError):
        await sql_store.commit(Change(bad, None, make_state(bad), T0))
    with pytest.raises(RejectedDataError):
        await sql_store.commit(Change("b1", None, None, T0, inbox=InboxEntry(bad, "t", "b1", "applied", T0)))
    with pytest.raises(RejectedDataError):
        await sql_store.commit_many([Change("ok", None, make_state("ok"), T0), Change(bad, None, None, T0)])
    with pytest.raises(RejectedDataError):
        await sql_store.is_processed(bad)
    # Nothing was written, and the store still works.
    assert await sql_store.load("ok") is None
    await sql_store.commit(Change("ok", None, make_state("ok"), T0))
    assert await sql_store.load("ok") == make_state("ok")


async def test_a_nul_id_through_the_service_is_bad_input_not_an_outage(sql_store: SqlStore) -> None:
    service = PipelineService(sql_store, clock=ManualClock())
    with pytest.raises(RejectedDataError) as caught:
        await service.get_batch("a\x00b")
    assert not isinstance(caught.value, StoreError)


@pytest.mark.postgres
async def test_postgres_rejection_of_data_is_translated(pg_store: SqlStore) -> None:
    """What passes the id checks but PostgreSQL still refuses (a NUL inside a JSON
    document) is translated at the adapter boundary, with the driver error as cause."""
    state = attrs.evolve(make_state("b1"), category="EN\x00G")
    with pytest.raises(RejectedDataError) as caught:
        await pg_store.commit(Change("b1", None, state, T0))
    assert caught.value.__cause__ is not None
    assert await pg_store.load("b1") is None


def test_translate_data_errors() -> None:
    class Orig(Exception):
        sqlstate = "22001"

    too_long = sa_exc.DBAPIError("INSERT", {}, Orig("value too long for type character varying(200)"))
    assert isinstance(translate(too_long, batch_id="b1"), RejectedDataError)
    assert isinstance(translate(sa_exc.DataError("x", {}, Exception("bad"))), RejectedDataError)

    class Check(Exception):
        sqlstate = "23514"

    assert isinstance(translate(sa_exc.IntegrityError("x", {}, Check("check"))), RejectedDataError)

    class Unique(Exception):
        sqlstate = "23505"

    assert type(translate(sa_exc.IntegrityError("x", {}, Unique("dup")))) is StoreError
