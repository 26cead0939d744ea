"""The HTTP adapter's shape: its settings from the old variables, its error, ``open`` serving a
real app on a real socket, and its documented public names."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx
import pipeline_state_http
import pytest
from pipeline_state_http import HttpServer, HttpSettings, HttpSettingsError, Settings, open, resources, server
from pipeline_state_http import app as http_app
from pipeline_state_http import client as http_client
from pipeline_state_http import errors as http_errors
from pipeline_state_http import settings as http_settings

from pipeline_state import InMemoryStore, PipelineService
from pipeline_state.errors import PipelineStateError
from tests.public_names import assert_public_names

from .conftest import API_TOKEN, TOKENS, bearer

README = Path(pipeline_state_http.__file__).parent / "README.md"


def test_http_settings_read_the_variables_deployments_set(tmp_path: Path) -> None:
    ops = tmp_path / "ops-token"
    ops.write_text("o-from-file\n")
    settings = Settings.from_environ(
        {
            "PIPELINE_STATE_HTTP_API_TOKEN": "a-tok",
            "PIPELINE_STATE_HTTP_INTERNAL_TOKEN": "i-tok",
            "PIPELINE_STATE_HTTP_OPS_TOKEN_FILE": str(ops),
            "PIPELINE_STATE_HTTP_HEADER_TIMEOUT_SECONDS": "3",
            "PIPELINE_STATE_HTTP_BODY_TIMEOUT_SECONDS": "7.5",
            "PIPELINE_STATE_HTTP_MAX_BODY_BYTES": "1000",
            "PIPELINE_STATE_HTTP_PUBLIC_METRICS": "on",
        }
    )
    http = settings.http_settings(public_status_page=True)
    assert (http.api_token, http.internal_token, http.ops_token) == ("a-tok", "i-tok", "o-from-file")
    assert (http.header_timeout_seconds, http.body_timeout_seconds, http.max_body_bytes) == (3.0, 7.5, 1000)
    assert http.public_metrics
    assert http.public_status_page
    assert "a-tok" not in repr(settings)  # tokens never appear in a repr or a log line
    assert set(Settings.variables()) >= {*http_settings.TOKEN_VARIABLES.values(), *http_settings.ENVIRONMENT}


@pytest.mark.parametrize(
    ("environ", "says"),
    [
        (
            {"PIPELINE_STATE_HTTP_PUBLIC_METRICS": "sometimes"},
            "PIPELINE_STATE_HTTP_PUBLIC_METRICS: expected a boolean",
        ),
        (
            {"PIPELINE_STATE_HTTP_MAX_BODY_BYTES": "0"},
            "PIPELINE_STATE_HTTP_MAX_BODY_BYTES: Input should be greater than 0",
        ),
        ({"PIPELINE_STATE_HTTP_BODY_TIMEOUT_SECONDS": "soon"}, "PIPELINE_STATE_HTTP_BODY_TIMEOUT_SECONDS: "),
        (
            {"PIPELINE_STATE_HTTP_API_TOKEN": " padded"},
            "PIPELINE_STATE_HTTP_API_TOKEN: the token has surrounding",
        ),
        (
            {"PIPELINE_STATE_HTTP_OPS_TOKEN_FILE": "/no/such/file"},
            "PIPELINE_STATE_HTTP_OPS_TOKEN_FILE: cannot read",
        ),
    ],
)
def test_a_wrong_http_value_is_the_adapters_error_naming_the_variable(
    environ: dict[str, str], says: str
) -> None:
    with pytest.raises(HttpSettingsError) as caught:
        HttpSettings.from_environ(environ)
    assert says in str(caught.value)
    assert " padded" not in str(caught.value)  # a token is never echoed back
    assert isinstance(caught.value, PipelineStateError)
    assert isinstance(caught.value, ValueError)


def _refused(host: str, port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex((host, port)) != 0


async def test_http_open_serves_the_app_on_a_real_socket_and_shuts_it_down() -> None:
    service = PipelineService(InMemoryStore())
    settings = Settings.from_environ(
        {}, http_api_token=API_TOKEN, http_internal_token="i", http_ops_token="o"
    )
    async with open(service, settings, port=0) as served:
        assert isinstance(served, HttpServer)
        assert served.port > 0
        assert served.url == f"http://127.0.0.1:{served.port}"
        async with httpx.AsyncClient(base_url=served.url) as http:
            assert (await http.get("/healthz")).status_code == 200
            assert (await http.get("/v1/batches/nope")).status_code == 401
            missing = await http.get("/v1/batches/nope", headers=bearer(API_TOKEN))
            assert missing.status_code == 404
        assert not served.task.done()
    assert served.task.done()
    assert _refused("127.0.0.1", served.port)


async def test_http_open_with_code_settings_and_a_taken_port() -> None:
    service = PipelineService(InMemoryStore())
    async with open(service, HttpSettings(**TOKENS), port=0) as first:
        with pytest.raises(OSError, match="could not start"):
            async with open(service, HttpSettings(**TOKENS), port=first.port):
                pass  # pragma: no cover - the port is taken
        async with httpx.AsyncClient(base_url=first.url) as http:
            assert (await http.get("/healthz")).status_code == 200  # the first one still serves
    assert _refused("127.0.0.1", first.port)


def test_http_public_names_are_the_documented_ones() -> None:
    assert_public_names(
        "pipeline_state_http",
        README,
        {
            "HttpApiError": http_errors.HttpApiError,
            "HttpServer": server.HttpServer,
            "HttpSettings": http_settings.HttpSettings,
            "HttpSettingsError": http_errors.HttpSettingsError,
            "PipelineDeniedError": http_errors.PipelineDeniedError,
            "PipelineStateClient": http_client.PipelineStateClient,
            "Settings": http_settings.Settings,
            "UnauthorizedError": http_errors.UnauthorizedError,
            "create_app": http_app.create_app,
            "install": http_app.install,
            "open": resources.open,
        },
    )
