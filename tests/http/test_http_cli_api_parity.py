"""``run cancel`` / ``phase retry --api URL``: the HTTP route of the operator CLI against its
store route, the documented exit codes and the secrecy of messages. Were defects (found by an
attack on the operator commands): an unknown phase exited 1 ("refused") through the API and 2
through the store; a rejected ``--api`` URL was echoed whole, password included."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from pipeline_state_http import HttpSettings
from pipeline_state_sql import open_store

from pipeline_state import PipelineService
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes
from tests.cli_kit import Cli

from .conftest import API_TOKEN, TOKENS
from .serving import served


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    ran = Cli(capsys, [])(*argv)
    return ran.code, ran.out, ran.err


async def _ready(service: PipelineService) -> None:
    env = HuleEduEnvelopes()
    await service.handle_message(*env.register("b1", items=2))
    await service.handle_message(*env.provisioned("b1", env.item_ids("b1", 2)))


def test_an_unknown_phase_is_bad_input_through_the_api_as_through_the_store(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """docs/operations.md: "2 bad usage or input"; ops/exits.py: "2  usage or bad input
    (unknown option, malformed id, unknown topic or phase)". The store route answers an
    unknown phase with 2; the HTTP route answers the same command with 1 ("denied or refused
    by the engine: the batch's state does not allow it"), so a script cannot tell a typo from
    a refusal, and the two routes of one command disagree."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'state.db'}"

    async def seed() -> None:
        store = await open_store(url)
        try:
            await _ready(PipelineService(store))
        finally:
            await store.close()

    asyncio.run(seed())
    retry = ("phase", "retry", "b1", "no_such_phase", "--as", "alice", "--json")
    by_store = _run(capsys, *retry, "--store", url)
    assert by_store[0] == 2, by_store  # the store route: bad input

    monkeypatch.setenv("PIPELINE_STATE_API_TOKEN", API_TOKEN)
    with served("sqlite", HttpSettings(**TOKENS), seed=_ready) as api:
        by_api = _run(capsys, *retry, "--api", api)
    assert by_api[2].count("\n") == 1, by_api
    assert by_api[0] == by_store[0] == 2, (
        f"store route exit {by_store[0]}, API route exit {by_api[0]}: {by_api[2]!r}"
    )


@pytest.mark.parametrize(
    "url",
    ["ftp://admin:S3cretPw@127.0.0.1/", "https://admin:S3cretPw@/v1", "admin:S3cretPw@127.0.0.1:8080"],
    ids=["not-http", "no-host", "no-scheme"],
)
def test_a_password_in_a_rejected_api_url_is_never_shown(
    capsys: pytest.CaptureFixture[str], url: str
) -> None:
    """The store route never shows a password its URL holds (``shown_url``;
    tests/sql/test_sql_ops_cli.py::test_a_store_url_with_a_password_is_never_shown_with_it),
    and the brief of the operator CLI asks for no secrets in messages. ``--api`` URLs carry
    credentials too (``https://user:password@gateway``, which httpx sends as basic auth): one
    rejected for its scheme or host is echoed whole, password included, on standard error
    (into CI logs, terminal scrollback)."""
    code, out, err = _run(capsys, "run", "cancel", "b1", "--api", url, "--as", "alice", "--json")
    assert code == 2, (code, err)
    assert err.count("\n") == 1, err
    assert "S3cretPw" not in out + err, err
