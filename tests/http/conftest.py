"""Fixtures of the HTTP adapter's tests: a real service on the in-memory store, the app
and clients talking to it in process.

The app is built with a token per scope (:data:`TOKENS`), as in production; the ``http`` and
``client`` fixtures send the token of each route's scope, so tests about behaviour need not
repeat it. ``tests/http/test_http_security.py`` checks the tokens themselves."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Generator

import httpx
import pytest
from pipeline_state_http import HttpSettings, PipelineStateClient, create_app

from pipeline_state import InMemoryBus, InMemoryStore, ManualClock, OutboxRelay, PipelineService
from pipeline_state.profiles.huleedu.profile import huleedu_profile
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes

BASE = "http://pipeline-state.test"

API_TOKEN, INTERNAL_TOKEN, OPS_TOKEN = "test-api-token", "test-internal-token", "test-ops-token"
TOKENS = {"api_token": API_TOKEN, "internal_token": INTERNAL_TOKEN, "ops_token": OPS_TOKEN}
"""The ``HttpSettings`` keyword arguments of the test tokens."""


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class ScopedAuth(httpx.Auth):
    """Sends the internal token to ``/internal/...`` and the API token elsewhere, unless the
    request carries an ``Authorization`` header already."""

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if "authorization" not in request.headers:
            internal = "/internal/" in request.url.path
            request.headers["Authorization"] = f"Bearer {INTERNAL_TOKEN if internal else API_TOKEN}"
        yield request


def authed_client(app: object, base_url: str = BASE) -> httpx.AsyncClient:
    """An in-process client of ``app`` that sends the test tokens (see :class:`ScopedAuth`)."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base_url, auth=ScopedAuth())  # type: ignore[arg-type]


MakeReady = Callable[..., Awaitable[str]]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def service(clock: ManualClock) -> PipelineService:
    return PipelineService(InMemoryStore(), profile=huleedu_profile(), clock=clock)


@pytest.fixture
def settings() -> HttpSettings:
    return HttpSettings(**TOKENS)


@pytest.fixture
def app(service: PipelineService, settings: HttpSettings):  # type: ignore[no-untyped-def]
    return create_app(service, settings=settings)


@pytest.fixture
async def http(app) -> AsyncIterator[httpx.AsyncClient]:  # type: ignore[no-untyped-def]
    async with authed_client(app) as client:
        yield client


@pytest.fixture
async def client(app) -> AsyncIterator[PipelineStateClient]:  # type: ignore[no-untyped-def]
    transport = httpx.ASGITransport(app=app)
    async with PipelineStateClient(
        BASE, token=API_TOKEN, internal_token=INTERNAL_TOKEN, transport=transport
    ) as c:
        yield c


@pytest.fixture
def make_ready(service: PipelineService) -> MakeReady:
    """Register a guest batch and provision its essays: it ends ready for pipelines."""
    env = HuleEduEnvelopes()

    async def ready(batch_id: str, *, essays: int = 3, prompt: str | None = "prompt-1") -> str:
        await service.handle_message(*env.register(batch_id, items=essays, prompt=prompt))
        await service.handle_message(*env.provisioned(batch_id, env.item_ids(batch_id, essays)))
        return batch_id

    return ready


Outbox = Callable[[], Awaitable[list[dict[str, object]]]]
Outcome = Callable[..., Awaitable[None]]


@pytest.fixture
def outbox(service: PipelineService, clock: ManualClock) -> Outbox:
    """Every message the service wrote to its outbox so far, in order: the outbox relay
    drains it into an in-memory bus, which keeps everything published."""
    bus = InMemoryBus()
    relay = OutboxRelay(service.store, bus, clock)  # type: ignore[arg-type]

    async def messages() -> list[dict[str, object]]:
        await relay.drain()
        return [message.as_dict() for message in bus.messages()]

    return messages


@pytest.fixture
def outcome(service: PipelineService) -> Outcome:
    """Report a phase outcome for a run (by its correlation id), as the phase's service would."""
    env = HuleEduEnvelopes()

    async def report(
        batch_id: str, phase: str, correlation_id: str, *, essays: int = 3, **kw: object
    ) -> None:
        processed = kw.pop("processed", env.item_ids(batch_id, essays))
        await service.handle_message(
            *env.outcome(batch_id, phase, correlation_id, processed=processed, **kw)  # type: ignore[arg-type]
        )

    return report
