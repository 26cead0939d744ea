"""One token given for several scopes: ``serve --http`` refuses it, ``create_app`` warns."""

from __future__ import annotations

import argparse
import logging

import httpx
import pytest

from tests.optional import require

require("pipeline_state_kafka")
from pipeline_state_service.settings import ServeSettings, SettingsError  # noqa: E402 (after require)
from pipeline_state_service.web import build_http_app, http_serve_settings  # noqa: E402 (after require)

from pipeline_state import InMemoryStore, ManualClock, PipelineService  # noqa: E402 (after require)

from .conftest import BASE  # noqa: E402 (after require)

SHARED = "one-token-for-every-scope"
ENV = {
    "PIPELINE_STATE_HTTP_API_TOKEN": SHARED,
    "PIPELINE_STATE_HTTP_INTERNAL_TOKEN": SHARED,
    "PIPELINE_STATE_HTTP_OPS_TOKEN": SHARED,
}


def _settings() -> ServeSettings:
    args = argparse.Namespace(
        kafka="127.0.0.1:9", store="memory://", http="127.0.0.1:8080", group_id="g", consumers=[]
    )
    return ServeSettings.from_args(args, ENV)


async def test_one_token_for_every_scope_is_refused_or_at_least_warned(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Was a defect (found by an attack on access control).

    Expected: the scopes keep apart who may do what (settings.Scope: "each scope has its
    own bearer token"; README: "only the tokens of its scopes open it"; ``serve --http``
    "needs a bearer token for every scope"), so ``serve --http`` given the same value for
    the API, internal and operations tokens refuses to start (SettingsError, exit 2) or at
    least warns that the scopes are merged. Actual: it starts without a word, and the public
    API token (the one handed to front ends and the operator CLI, ``$PIPELINE_STATE_API_TOKEN``)
    now also records phase completions on ``/internal/*`` and reads the operational
    listings. Cause: web.http_serve_settings / HttpSettings only check each token on its
    own. Fix: refuse equal tokens across scopes in ``http_serve_settings`` (or warn in
    ``create_app``'s ``_warn_about_scopes``)."""
    caplog.set_level(logging.WARNING)
    try:
        http = http_serve_settings(_settings(), ENV)
    except SettingsError:
        return  # fixed: refused
    service = PipelineService(InMemoryStore(), clock=ManualClock())
    app = build_http_app(service, settings=http)
    assert app is not None
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as client:
        headers = {"Authorization": f"Bearer {SHARED}"}
        opened = (await client.get("/v1/ops/waiting", headers=headers)).status_code
    warned = [
        r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and "token" in r.getMessage()
    ]
    assert warned, f"one token opens every scope (ops listing answered {opened}) and nothing was said"


def test_serve_names_the_variables_that_share_a_token_and_not_the_token() -> None:
    with pytest.raises(SettingsError) as caught:
        http_serve_settings(_settings(), {**ENV, "PIPELINE_STATE_HTTP_OPS_TOKEN": "ops-only"})
    message = str(caught.value)
    assert "PIPELINE_STATE_HTTP_API_TOKEN and PIPELINE_STATE_HTTP_INTERNAL_TOKEN" in message
    assert SHARED not in message


def test_create_app_warns_of_scopes_that_share_a_token(caplog: pytest.LogCaptureFixture) -> None:
    from pipeline_state_http import HttpSettings, create_app

    caplog.set_level(logging.WARNING)
    service = PipelineService(InMemoryStore(), clock=ManualClock())
    create_app(service, settings=HttpSettings(api_token="a", internal_token="a", ops_token="o"))
    assert any("api and internal scopes share one token" in r.getMessage() for r in caplog.records)
