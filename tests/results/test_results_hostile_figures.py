"""Found by an attack on the figures the results consumer projects, on the in-memory, SQLite
and PostgreSQL results stores and the ``/v1/results`` routes.

Were defects (fixed; the tests failed before): a duration of ``1e400`` was applied and
announced as infinity; negative essay counts were applied and made class totals negative;
one oversized count made every later result of its class fail on PostgreSQL; a lone
surrogate in ``final_status`` made the three results routes answer 500 (the intake now
refuses lone surrogates in any string).

Held: the routes answer after an infinite phase duration was stored; they refuse the
internal and ops tokens; a redelivery after the inbox purge counts nothing twice; two
services racing on one PostgreSQL store announce each run once; an outcome redelivered
after its run completed changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from pipeline_state_http import HttpSettings, create_app
from results_events import at, completion, dispatch, outcome, registered

from pipeline_state import InMemoryStore, ManualClock, PipelineService
from pipeline_state.errors import InvalidMessageError, PipelineStateError, RejectedDataError
from pipeline_state.profiles.huleedu.events import Topic
from pipeline_state.profiles.huleedu.results import (
    InMemoryResultsStore,
    ResultsQueries,
    ResultsService,
    ResultsStore,
    RetentionPolicy,
)

API, INTERNAL, OPS = "res2-api-token", "res2-internal-token", "res2-ops-token"
TOKENS = {"api_token": API, "internal_token": INTERNAL, "ops_token": OPS}
READY = Topic.RESULTS_READY.value


def _client(store: ResultsStore, token: str = API) -> httpx.AsyncClient:
    app = create_app(PipelineService(InMemoryStore()), settings=HttpSettings(**TOKENS), results=store)
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
        base_url="http://res2.test",
        headers={"Authorization": f"Bearer {token}"},
    )


def _raw_with(envelope: dict[str, Any], old: str, new: str) -> str:
    raw = json.dumps(envelope)
    assert old in raw, (old, raw)
    return raw.replace(old, new, 1)


PG: dict[int, tuple[str, str]] = {}
"""id(store) -> (url, schema) of the stores the fixture opened."""


@pytest.fixture
async def pg_store() -> AsyncIterator[Any]:
    """A SQL results store on PostgreSQL, in a fresh schema dropped afterwards."""
    from pipeline_state_sql.results_store import open_results_store

    from tests.http.serving import pg_schema, postgres_url

    url = await asyncio.to_thread(postgres_url)
    async with pg_schema(url, "ps_res2") as schema:
        store = await open_results_store(url, schema=schema)
        PG[id(store)] = (url, schema)
        try:
            yield store
        finally:
            await store.close()


# -- infinite durations ------------------------------------------------------------------------


@pytest.mark.timeout(60)
async def test_a_duration_past_the_float_range_is_refused() -> None:
    """Was a defect, fixed.

    Expected: a completion whose ``processing_duration_seconds`` is ``1e400`` (a JSON number
    no float holds: Python parses it as ``inf``) is invalid input (``InvalidMessageError``,
    dead-lettered), like the ``Infinity`` token already is; nothing is stored or announced.
    Before the fix: it is applied, and ``BatchResultsReadyV1`` is written to the outbox with
    ``processing_duration_seconds: inf`` (the relay would publish a bare ``Infinity``, which
    is not JSON)."""
    store = InMemoryResultsStore()
    service = ResultsService(store, clock=ManualClock())
    await service.handle_message(*registered("b1"))
    topic, envelope = completion("b1", "r1", "c1", when=at(10), duration=10.0)
    raw = _raw_with(envelope, '"processing_duration_seconds": 10.0', '"processing_duration_seconds": 1e400')
    refused: BaseException | None = None
    try:
        handled = await service.handle_message(topic, raw)
    except InvalidMessageError as exc:
        refused = exc
    else:
        ready = [m for m in handled.messages if m.topic == READY]
        pytest.fail(
            f"applied ({handled.result}); announced duration "
            f"{[m.value['data']['processing_duration_seconds'] for m in ready]}"
        )
    assert refused is not None
    stored = await store.load("b1")
    assert stored is not None
    assert stored.completions == ()


@pytest.mark.timeout(60)
async def test_results_routes_answer_after_an_infinite_phase_duration() -> None:
    """Held: after a completion with a phase duration of ``1e400`` (``inf``) was applied, the
    batch and teacher routes still answer 200 (the response renders ``inf`` as ``null``)."""
    store = InMemoryResultsStore()
    service = ResultsService(store, clock=ManualClock())
    await service.handle_message(*registered("b1"))
    topic, envelope = completion("b1", "r1", "c1", when=at(10), duration=10.0)
    raw = _raw_with(envelope, '"duration_seconds": 5.0', '"duration_seconds": 1e400')
    try:
        await service.handle_message(topic, raw)
    except InvalidMessageError:
        return  # refused as bad input: nothing stored, nothing to render
    async with _client(store) as http:
        answers = {
            path: (await http.get(path)).status_code
            for path in ("/v1/results/batches/b1", "/v1/results/teachers/teacher-1")
        }
    assert all(code < 500 for code in answers.values()), answers


# -- negative and oversized counts ----------------------------------------------------------------


@pytest.mark.timeout(60)
async def test_negative_essay_counts_are_refused() -> None:
    """Was a defect, fixed.

    Expected: a completion with ``successful_essay_count: -1000000`` (a count below zero) is
    invalid input (``InvalidMessageError``) and the class summary stays as it was. Before the fix: it is
    applied; the class summary says ``essays_succeeded: -1000000`` and the announcement says
    ``total_essays`` negative."""
    store = InMemoryResultsStore()
    service = ResultsService(store, clock=ManualClock())
    await service.handle_message(*registered("b1", class_id="class-neg"))
    topic, envelope = completion("b1", "r1", "c1", when=at(10), successful=-1_000_000, failed=-5)
    with contextlib.suppress(InvalidMessageError):
        await service.handle_message(topic, json.dumps(envelope))
    summary = await ResultsQueries(store).class_json("class-neg")
    assert summary is not None
    assert (summary["essays_succeeded"], summary["essays_failed"]) == (0, 0), summary


@pytest.mark.postgres
@pytest.mark.timeout(90)
async def test_one_oversized_count_is_refused_and_spares_its_class_on_postgres(
    pg_store: Any,
) -> None:
    """Was a defect, fixed.

    Expected: a completion claiming ``successful_essay_count = 2**31 - 1`` (a batch has at
    most 1,000 items) is refused as invalid input, or at least it does not stop the valid
    results of the other batches of its class. Now, on PostgreSQL: it is applied (the class
    row holds 2147483647), and the valid completion of another batch of the same class (2
    essays) then fails with ``RejectedDataError`` (``integer out of range`` on
    ``results_classes.essays_succeeded``), so serve dead-letters it: every later result of
    the class is lost, and its batch never shows its run."""
    service = ResultsService(pg_store, clock=ManualClock())
    await service.handle_message(*registered("evil", class_id="class-big"))
    await service.handle_message(*registered("good", class_id="class-big"))
    topic, envelope = completion("evil", "r-evil", "c-evil", when=at(10), successful=2**31 - 1)
    hostile: BaseException | None = None
    try:
        await service.handle_message(topic, json.dumps(envelope))
    except (InvalidMessageError, RejectedDataError) as exc:
        hostile = exc
    # The valid result of the other batch of the class.
    topic, envelope = completion("good", "r-good", "c-good", when=at(20), successful=2)
    try:
        handled = await service.handle_message(topic, json.dumps(envelope))
    except PipelineStateError as exc:
        pytest.fail(
            f"the hostile completion was {'refused' if hostile else 'applied'}; the valid completion of "
            f"another batch of its class then failed: {type(exc).__name__}: {exc}"
        )
    assert handled.result == "applied"
    good = await pg_store.load("good")
    assert good is not None
    assert good.latest is not None
    assert good.latest.run_id == "r-good"


# -- text the response cannot encode ------------------------------------------------------------


@pytest.mark.timeout(60)
async def test_a_lone_surrogate_in_final_status_is_refused_at_intake() -> None:
    """Was a defect, fixed.

    Expected: a completion whose ``final_status`` (or a phase name) holds a lone surrogate
    (``"\\ud800"``, valid JSON escape, not encodable as UTF-8) is invalid input, as such ids
    already are; or, if kept, the routes still answer. Now, on the in-memory results store
    (``serve --store memory://``): it is applied, and ``GET /v1/results/batches/{id}``,
    ``/classes/{id}`` and ``/teachers/{id}`` answer HTTP 500 (``UnicodeEncodeError``)."""
    store = InMemoryResultsStore()
    service = ResultsService(store, clock=ManualClock())
    await service.handle_message(*registered("b1", class_id="class-s"))
    topic, envelope = completion("b1", "r1", "c1", when=at(10))
    raw = _raw_with(envelope, '"final_status": "completed_successfully"', '"final_status": "done\\ud800"')
    try:
        await service.handle_message(topic, raw)
    except InvalidMessageError:
        return
    async with _client(store) as http:
        answers = {
            path: (await http.get(path)).status_code
            for path in (
                "/v1/results/batches/b1",
                "/v1/results/classes/class-s",
                "/v1/results/teachers/teacher-1",
            )
        }
    assert all(code < 500 for code in answers.values()), answers


# -- access --------------------------------------------------------------------------------------


@pytest.mark.timeout(60)
async def test_results_routes_refuse_the_internal_and_ops_tokens() -> None:
    """Held: the results routes answer 401 to the internal and the ops token, to a token with
    a suffix or of another case, and to a non-bearer scheme; 200/404 only to the API token."""
    store = InMemoryResultsStore()
    service = ResultsService(store, clock=ManualClock())
    await service.handle_message(*registered("b1", class_id="class-a", user_id="teacher-a"))
    await service.handle_message(*completion("b1", "r1", "c1", when=at(10)))
    paths = ("/v1/results/batches/b1", "/v1/results/classes/class-a", "/v1/results/teachers/teacher-a")
    for token in (INTERNAL, OPS, API + "x", API.upper(), API[:-1], f"{API} {API}", ""):
        async with _client(store, token) as http:
            for path in paths:
                answer = await http.get(path)
                assert answer.status_code == 401, (token, path, answer.status_code)
                assert "teacher-a" not in answer.text
    async with _client(store) as http:
        for path in paths:
            answer = await http.get(path, headers={"Authorization": f"Basic {API}"})
            assert answer.status_code == 401, (path, answer.status_code)
            assert (await http.get(path)).status_code == 200


# -- redelivery, purge, races ------------------------------------------------------------------


def _history() -> list[tuple[str, dict[str, Any]]]:
    """Three batches of one class: registrations, outcomes, two runs of one batch (the second
    newer), one failing run, one batch still in progress."""
    return [
        registered("a", class_id="class-r", user_id="t1", when=at(0)),
        registered("b", class_id="class-r", user_id="t1", when=at(0)),
        registered("c", class_id="class-r", user_id="t2", when=at(0)),
        outcome("a", "spellcheck", "ca1", when=at(5)),
        completion("a", "ra1", "ca1", when=at(10), successful=2),
        outcome("a", "nlp", "ca2", when=at(15)),
        completion("a", "ra2", "ca2", when=at(20), pipeline="nlp", successful=3, failed=1),
        completion("b", "rb1", "cb1", when=at(12), final_status="failed_critically", successful=0, failed=3),
        dispatch("c", "spellcheck", "cc1", when=at(25)),
        outcome("c", "spellcheck", "cc1", when=at(30), processed=("e0",), failed=("e1",)),
    ]


async def _summary(store: ResultsStore) -> tuple[Any, ...]:
    queries = ResultsQueries(store)
    klass = await queries.class_json("class-r")
    batches = {b: await queries.batch_json(b) for b in "abc"}
    for view in batches.values():
        assert view is not None
        view.pop("updated_at")
        view.pop("version")
    return klass, batches


@pytest.mark.postgres
@pytest.mark.timeout(90)
async def test_redelivery_after_the_inbox_purge_counts_nothing_twice_on_postgres(pg_store: Any) -> None:
    """Held: every event handled, the inbox purged (all retentions passed), then every event
    redelivered in reverse and in shuffled order, with purges between: the class summary and
    every batch view are unchanged, no new announcement is written, nothing is ``applied``."""
    clock = ManualClock()
    retention = RetentionPolicy({t: timedelta(seconds=1) for t in ResultsService.topics})
    service = ResultsService(pg_store, clock=clock, retention=retention)
    history = _history()
    announced = 0
    for delivery in history:
        announced += len((await service.handle_message(*delivery)).messages)
    assert announced == 2 * 3  # three completed runs
    before = await _summary(pg_store)
    assert before[0]["batch_count"] == 3
    assert before[1]["c"]["status"] == "processing"  # the batch still in progress
    assert before[0]["essays_succeeded"] == 3
    assert before[0]["essays_failed"] == 4
    pending = await pg_store.pending_count()
    clock.advance(5)
    assert await service.purge_inbox() == len(history)
    order = list(reversed(history)) + random.Random(7).sample(history, len(history))
    for i, delivery in enumerate(order):
        handled = await service.handle_message(*delivery)
        assert handled.result in ("unchanged", "duplicate", "superseded"), (i, handled.result)
        assert handled.messages == ()
        if i % 3 == 0:
            clock.advance(5)
            await service.purge_inbox()
    assert await _summary(pg_store) == before
    assert await pg_store.pending_count() == pending


@pytest.mark.postgres
@pytest.mark.timeout(90)
async def test_two_services_racing_on_one_postgres_store_announce_each_run_once(pg_store: Any) -> None:
    """Held: two results services (two consumers of one group during a rebalance) handle the
    same events at the same time on one PostgreSQL results store, each in its own order: each
    run is announced once, the class summary counts each batch once."""
    from pipeline_state_sql.results_store import open_results_store

    url, schema = PG[id(pg_store)]
    second = await open_results_store(url, schema=schema, upgrade=False)
    try:
        services = [
            ResultsService(pg_store, clock=ManualClock(), max_attempts=50),
            ResultsService(second, clock=ManualClock(), max_attempts=50),
        ]
        batches = [f"r{i}" for i in range(8)]
        events = []
        for n, b in enumerate(batches):
            events.append(registered(b, class_id="class-x", user_id="t9", when=at(0)))
            events.append(completion(b, f"{b}-run", f"{b}-corr", when=at(10 + n), successful=2, failed=1))

        async def consume(service: ResultsService, order: list[Any]) -> int:
            written = 0
            for delivery in order:
                written += len((await service.handle_message(*delivery)).messages)
            return written

        written = await asyncio.gather(
            consume(services[0], events), consume(services[1], random.Random(3).sample(events, len(events)))
        )
        assert sum(written) == 2 * len(batches)
        summary = await ResultsQueries(pg_store).class_json("class-x")
        assert summary is not None
        assert summary["batch_count"] == len(batches)
        assert summary["batches_by_status"] == {"completed_successfully": len(batches)}
        assert (summary["essays_succeeded"], summary["essays_failed"]) == (2 * len(batches), len(batches))
        assert await pg_store.pending_count() == 2 * len(batches)
    finally:
        await second.close()


@pytest.mark.timeout(60)
async def test_outcome_redelivered_after_its_run_completed_changes_nothing() -> None:
    """Held: an outcome of a completed run, redelivered under a new event id after the
    completion (and after a purge), leaves the batch completed (not ``processing``)."""
    store = InMemoryResultsStore()
    clock = ManualClock()
    service = ResultsService(store, clock=clock)
    await service.handle_message(*registered("b1", class_id="class-o"))
    late = outcome("b1", "cj_assessment", "c1", when=at(9))
    await service.handle_message(*late)
    await service.handle_message(*completion("b1", "r1", "c1", when=at(10)))
    clock.advance(timedelta(days=10).total_seconds())
    await service.purge_inbox()
    again = outcome("b1", "cj_assessment", "c1", when=at(9))
    handled = await service.handle_message(*again)
    assert handled.result == "unchanged"
    view = await ResultsQueries(store).batch_json("b1")
    assert view is not None
    assert view["status"] == "completed_successfully"
    summary = await ResultsQueries(store).class_json("class-o")
    assert summary is not None
    assert summary["batches_by_status"] == {"completed_successfully": 1}
