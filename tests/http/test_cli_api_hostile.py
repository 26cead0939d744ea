"""``run cancel`` / ``phase retry`` with ``--api URL`` (the operator CLI acting through a
running service's HTTP API) against hostile input: bad URLs, hostile operator names,
oversized reasons, repeats, and a retry asked before the batch was ready."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from pipeline_state_http import HttpSettings
from pipeline_state_http.schemas import CancelBody, RetryPhaseBody
from pipeline_state_service.ops.session import MAX_REASON_LENGTH

from pipeline_state import PipelineService
from pipeline_state._cli import main
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes

from .conftest import API_TOKEN, TOKENS
from .serving import served


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


async def _seed(service: PipelineService) -> None:
    env = HuleEduEnvelopes()
    for batch_id in ("b1", "b2"):
        await service.handle_message(*env.register(batch_id, items=2))
        await service.handle_message(*env.provisioned(batch_id, env.item_ids(batch_id, 2)))
    for batch_id in ("b1", "b2"):
        assert (await service.handle_message(*env.request(batch_id, "nlp"))).label == "applied"


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:99999",
        "http://[::1",
        "http://127.0.0.1:0",
        "http://",
        "ftp://127.0.0.1/",
    ],
    ids=["port-out-of-range", "bad-host", "port-zero", "no-host", "not-http"],
)
def test_a_malformed_api_url_is_a_one_line_usage_error(capsys: pytest.CaptureFixture[str], url: str) -> None:
    """Was a defect (fixed): ``--api`` was checked for its scheme only. A port above 65535
    escaped ``main()`` as a traceback (an ExceptionGroup around OverflowError from the socket
    layer); a URL httpx cannot parse was reported as "cannot be reached" (exit 4). Now the
    URL is checked with httpx before any connection (scheme, host, port 1 to 65535): bad
    input, exit 2, one line."""
    try:
        code, out, err = _run(capsys, "run", "cancel", "b1", "--api", url, "--as", "alice", "--json")
    except BaseException as exc:  # the defect: it escapes main()
        pytest.fail(f"--api {url}: {type(exc).__name__} escaped main(): {exc}")
    assert err.count("\n") == 1, err
    assert err.startswith("error: --api"), err
    assert code == 2, f"--api {url}: exit {code}: {err.strip()}"
    assert out == ""


def test_the_reason_bound_of_the_cli_is_the_http_apis() -> None:
    """Was a defect (fixed): the store route stored a ``--reason`` of any size while the HTTP
    API bounds it (``RetryPhaseBody.retry_reason``, ``CancelBody.reason``). The CLI now
    holds the same bound, kept apart so the store route needs no HTTP extra: both agree."""
    for field in (RetryPhaseBody.model_fields["retry_reason"], CancelBody.model_fields["reason"]):
        bounds = [getattr(m, "max_length", None) for m in field.metadata]
        assert MAX_REASON_LENGTH in bounds, (field, bounds)
    assert MAX_REASON_LENGTH == 2000


@pytest.mark.parametrize("action", [("run", "cancel", "b1"), ("phase", "retry", "b1", "spellcheck")])
def test_an_oversized_reason_is_refused_before_the_api_is_called(
    capsys: pytest.CaptureFixture[str], action: tuple[str, ...]
) -> None:
    """Was a defect (fixed), as on the store route: the reason bound is checked before the
    request is sent (the port below is closed: reaching it would exit 4)."""
    reason = "R" * (MAX_REASON_LENGTH + 1)
    code, out, err = _run(
        capsys, *action, "--api", "http://127.0.0.1:9", "--as", "alice", "--reason", reason, "--json"
    )
    assert (code, out) == (2, ""), err
    assert err.count("\n") == 1, err
    assert err.startswith("error: --reason "), err


def test_an_api_retry_denied_before_the_batch_was_ready_runs_once_it_is(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Was a defect (fixed): the retry's ``Idempotency-Key`` was derived from (batch, phase,
    last finished run) only; the service recorded the denial under it (not ready yet), and
    once the batch was ready the same command was answered with that denial again (exit 1).
    Now the key holds the batch's status while it is not ready: the retry runs once the
    batch is, and a repeat in either state gets the same answer as the first."""
    monkeypatch.setenv("PIPELINE_STATE_API_TOKEN", API_TOKEN)
    headers = {"Authorization": f"Bearer {API_TOKEN}"}
    env = HuleEduEnvelopes()
    held: dict[str, Any] = {}

    async def registered(service: PipelineService) -> None:
        await service.handle_message(*env.register("b1", items=2))
        held.update(service=service, loop=asyncio.get_running_loop())

    def provision() -> None:
        work = held["service"].handle_message(*env.provisioned("b1", env.item_ids("b1", 2)))
        asyncio.run_coroutine_threadsafe(work, held["loop"]).result(timeout=30)

    retry = ("phase", "retry", "b1", "spellcheck", "--as", "alice", "--json")
    with served("sqlite", HttpSettings(**TOKENS), seed=registered) as url:
        early = _run(capsys, *retry, "--api", url)
        assert early[0] == 1, early
        assert _run(capsys, *retry, "--api", url)[0] == 1  # a repeat on the same state: the same
        provision()
        status = httpx.get(f"{url}/v1/batches/b1", headers=headers).json()["status"]
        assert status == "ready_for_pipeline_execution"

        code, out, err = _run(capsys, *retry, "--api", url)
        assert code == 0, (code, err)
        started = json.loads(out)["run_id"]
        active = httpx.get(f"{url}/v1/batches/b1", headers=headers).json()["active_run"]
        assert active is not None
        assert active["run_id"] == started
        code, out, err = _run(capsys, *retry, "--api", url)  # the repeat: the same run
        assert (code, json.loads(out)["run_id"]) == (0, started), err


def test_hostile_operator_names_never_reach_the_log_through_the_api(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Held: names with line breaks, ANSI escapes, bidi overrides or over 200 characters
    exit 2 with one line before anything is sent, and nothing is cancelled."""
    monkeypatch.setenv("PIPELINE_STATE_API_TOKEN", API_TOKEN)
    headers = {"Authorization": f"Bearer {API_TOKEN}"}
    with served("sqlite", HttpSettings(**TOKENS), seed=_seed) as url:
        for actor in ("alice\nroot", "alice\x1b[2K", "alice\u202eeliforp", "x" * 201):
            code, out, err = _run(capsys, "run", "cancel", "b1", "--api", url, "--as", actor, "--json")
            assert code == 2, (actor, code, out, err)
            assert err.count("\n") == 1, err
            assert out == ""
        snapshot: Any = httpx.get(f"{url}/v1/batches/b1", headers=headers).json()
        assert snapshot["active_run"] is not None  # nothing was cancelled by a hostile name


def test_a_repeated_api_cancel_never_cancels_the_next_run(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Held: cancel, a new run starts, the same cancel naming its run is repeated: the new
    run stays."""
    monkeypatch.setenv("PIPELINE_STATE_API_TOKEN", API_TOKEN)
    headers = {"Authorization": f"Bearer {API_TOKEN}"}
    with served("sqlite", HttpSettings(**TOKENS), seed=_seed) as url:
        first: Any = httpx.get(f"{url}/v1/batches/b2", headers=headers).json()["active_run"]["run_id"]
        code, out, err = _run(
            capsys, "run", "cancel", "b2", "--run", first, "--api", url, "--as", "a", "--json"
        )
        assert code == 0, err
        assert json.loads(out)["run_id"] == first
        body = {"requested_pipeline": "nlp", "user_id": "teacher-1"}
        started = httpx.post(f"{url}/v1/batches/b2/pipelines", json=body, headers=headers)
        assert started.status_code in (200, 201, 202), started.text
        second = httpx.get(f"{url}/v1/batches/b2", headers=headers).json()["active_run"]["run_id"]
        assert second != first
        code, out, err = _run(
            capsys, "run", "cancel", "b2", "--run", first, "--api", url, "--as", "a", "--json"
        )
        assert code in (0, 3), (code, out, err)
        after = httpx.get(f"{url}/v1/batches/b2", headers=headers).json()["active_run"]
        assert after is not None
        assert after["run_id"] == second
