"""``pipeline-state serve --http``: tokens from the environment (or files), a refusal to start
without them, ``--insecure-no-auth`` only on loopback, and a secure app by default.

No broker is needed: the checks run before ``serve`` opens its store or reaches Kafka.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.optional import require

require("pipeline_state_kafka")
from pipeline_state_service.serve import serve_main  # noqa: E402 (after require)
from pipeline_state_service.settings import ServeSettings, SettingsError  # noqa: E402 (after require)
from pipeline_state_service.web import (  # noqa: E402 (after require)
    build_http_app,
    http_serve_settings,
    http_settings_in_effect,
    is_loopback,
)

from pipeline_state import InMemoryStore, ManualClock, PipelineService  # noqa: E402 (after require)

from .conftest import BASE, bearer  # noqa: E402 (after require)

VARIABLES = tuple(f"PIPELINE_STATE_HTTP_{scope}_TOKEN" for scope in ("API", "INTERNAL", "OPS"))
FULL = dict(zip(VARIABLES, ("a-tok", "i-tok", "o-tok"), strict=True))


def _args(**overrides: object) -> argparse.Namespace:
    values: dict[str, object] = {
        "kafka": "127.0.0.1:9",
        "store": "memory://",
        "http": "127.0.0.1:8080",
        "group_id": "g",
        "consumers": [],
    }
    values.update(overrides)
    return argparse.Namespace(**values)


def _settings(env: dict[str, str], **overrides: object) -> ServeSettings:
    return ServeSettings.from_args(_args(**overrides), env)


@pytest.fixture
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in VARIABLES:
        monkeypatch.delenv(variable, raising=False)
        monkeypatch.delenv(f"{variable}_FILE", raising=False)


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


@pytest.mark.parametrize("missing", VARIABLES)
def test_serve_http_refuses_to_start_without_every_token(missing: str) -> None:
    env = {k: v for k, v in FULL.items() if k != missing}
    with pytest.raises(SettingsError, match=f"{missing} \\(or {missing}_FILE\\)"):
        http_serve_settings(_settings(env), env)


def test_serve_http_takes_tokens_from_variables_and_files(tmp_path: Path) -> None:
    ops_file = tmp_path / "ops-token"
    ops_file.write_text("o-from-file\n")
    env = {
        "PIPELINE_STATE_HTTP_API_TOKEN": "a-tok",
        "PIPELINE_STATE_HTTP_INTERNAL_TOKEN": "i-tok",
        "PIPELINE_STATE_HTTP_OPS_TOKEN_FILE": str(ops_file),
        "PIPELINE_STATE_HTTP_HEADER_TIMEOUT_SECONDS": "3",
        "PIPELINE_STATE_HTTP_BODY_TIMEOUT_SECONDS": "7.5",
        "PIPELINE_STATE_HTTP_MAX_BODY_BYTES": "1000",
    }
    http = http_serve_settings(_settings(env), env)
    assert (http.api_token, http.internal_token, http.ops_token) == ("a-tok", "i-tok", "o-from-file")
    assert (http.header_timeout_seconds, http.body_timeout_seconds, http.max_body_bytes) == (3.0, 7.5, 1000)
    assert not http.insecure_no_auth


@pytest.mark.parametrize(
    ("content", "problem"),
    [(None, "cannot read"), ("", "is empty"), ("\n", "is empty"), (" padded\n", "surrounding spaces")],
)
def test_an_unusable_token_file_is_a_clear_start_up_error(
    tmp_path: Path, content: str | None, problem: str
) -> None:
    path = tmp_path / "token"
    if content is not None:
        path.write_text(content)
    env = FULL | {"PIPELINE_STATE_HTTP_API_TOKEN_FILE": str(path)}
    del env["PIPELINE_STATE_HTTP_API_TOKEN"]
    with pytest.raises(SettingsError, match=f"PIPELINE_STATE_HTTP_API_TOKEN_FILE: .*{problem}"):
        http_serve_settings(_settings(env), env)


def test_a_token_and_its_file_together_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("t\n")
    env = FULL | {"PIPELINE_STATE_HTTP_API_TOKEN_FILE": str(path)}
    with pytest.raises(SettingsError, match="not both"):
        http_serve_settings(_settings(env), env)


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "[::1]", "localhost"])
def test_insecure_no_auth_serves_without_tokens_on_loopback(host: str) -> None:
    http = http_serve_settings(_settings({}, http=f"{host}:8080", insecure_no_auth=True), {})
    assert http.insecure_no_auth
    assert set(http.open_scopes()) == {"api", "internal", "ops"}


@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3", "[::]", "example.org"])
def test_insecure_no_auth_is_refused_off_loopback(host: str) -> None:
    with pytest.raises(SettingsError, match="--insecure-no-auth is refused"):
        http_serve_settings(_settings(FULL, http=f"{host}:8080", insecure_no_auth=True), FULL)


def test_is_loopback() -> None:
    assert all(is_loopback(host) for host in ("127.0.0.1", "::1", "localhost"))
    assert not any(is_loopback(host) for host in ("0.0.0.0", "192.168.0.1", "db"))


def test_without_http_nothing_is_required() -> None:
    assert http_serve_settings(_settings({}, http=None), {}) is None


@pytest.mark.usefixtures("restore_logging", "clean_environ")
def test_serve_main_exits_2_without_tokens(capsys: pytest.CaptureFixture[str]) -> None:
    assert serve_main(_args()) == 2
    assert "PIPELINE_STATE_HTTP_API_TOKEN (or PIPELINE_STATE_HTTP_API_TOKEN_FILE)" in capsys.readouterr().err


@pytest.mark.usefixtures("restore_logging", "clean_environ")
def test_serve_main_exits_2_with_insecure_no_auth_off_loopback(capsys: pytest.CaptureFixture[str]) -> None:
    assert serve_main(_args(http="0.0.0.0:8080", insecure_no_auth=True)) == 2
    assert "--insecure-no-auth is refused on 0.0.0.0" in capsys.readouterr().err


async def test_serves_http_app_without_settings_in_effect_is_closed(clean_environ: None) -> None:
    """The measured hole: ``build_http_app`` served every route to anyone."""
    service = PipelineService(InMemoryStore(), clock=ManualClock())
    app = build_http_app(service)
    body = {"batch_id": "x", "expected_essay_count": 1, "user_id": "t", "course_code": "ENG5"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as http:
        assert (await http.post("/v1/batches/register", json=body)).status_code == 401
        request = {"requested_pipeline": "nlp"}
        assert (await http.post("/v1/batches/x/pipelines", json=request)).status_code == 401
        done = {"batch_id": "x", "phase_name": "spellcheck", "success": True}
        assert (await http.post("/internal/v1/phases/complete", json=done)).status_code == 401
        assert (await http.get("/openapi.json")).status_code == 401
        assert (await http.get("/docs")).status_code == 401
        assert (await http.get("/healthz")).status_code == 200
    assert await service.store.load("x") is None


async def test_serves_http_app_uses_the_settings_in_effect() -> None:
    service = PipelineService(InMemoryStore(), clock=ManualClock())
    http_settings = http_serve_settings(_settings(FULL), FULL)
    with http_settings_in_effect(http_settings):
        app = build_http_app(service)
    body = {"batch_id": "x", "expected_essay_count": 1, "user_id": "t", "course_code": "ENG5"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as http:
        register = "/v1/batches/register"
        assert (await http.post(register, json=body)).status_code == 401
        assert (await http.post(register, json=body, headers=bearer("i-tok"))).status_code == 401
        assert (await http.post(register, json=body, headers=bearer("a-tok"))).status_code == 202
        assert (await http.get("/v1/batches/x/diagram", headers=bearer("o-tok"))).status_code == 200
        assert (await http.get("/openapi.json", headers=bearer("a-tok"))).status_code == 200


def test_every_http_variable_is_documented() -> None:
    from pipeline_state_http.settings import ENVIRONMENT, TOKEN_VARIABLES

    root = Path(__file__).resolve().parents[2]
    service = (root / "adapters" / "pipeline_state_service" / "README.md").read_text()
    http = (root / "adapters" / "pipeline_state_http" / "README.md").read_text()
    operations = (root / "docs" / "operations.md").read_text()
    for variable in [*TOKEN_VARIABLES.values(), *ENVIRONMENT]:
        for name, text in (("service README", service), ("http README", http)):
            assert f"`{variable}`" in text, (variable, name)
        assert f"`{variable}`" in operations, (variable, "docs/operations.md")
    assert "`--insecure-no-auth`" in service
