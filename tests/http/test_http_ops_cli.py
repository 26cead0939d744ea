"""``run cancel`` and ``phase retry`` with ``--api URL`` (issue 15.3): the action reaches a
running service through its HTTP API (a real uvicorn server over a SQLite store), keyed so
that a repeat is answered the same, with the exit codes of the store route."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from pipeline_state_http import HttpSettings

from pipeline_state import PipelineService
from pipeline_state._cli import main
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes

from .conftest import API_TOKEN, TOKENS
from .serving import served


async def _seed(service: PipelineService) -> None:
    env = HuleEduEnvelopes()
    for batch_id in ("b1", "b2"):
        await service.handle_message(*env.register(batch_id, items=2))
        await service.handle_message(*env.provisioned(batch_id, env.item_ids(batch_id, 2)))
    assert (await service.handle_message(*env.request("b1", "nlp"))).label == "applied"


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cancel_and_retry_through_a_running_service(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PIPELINE_STATE_API_TOKEN", API_TOKEN)
    with served("sqlite", HttpSettings(**TOKENS), seed=_seed) as url:
        snapshot: Any = httpx.get(f"{url}/v1/batches/b1", headers={"Authorization": f"Bearer {API_TOKEN}"})
        run_id = snapshot.json()["active_run"]["run_id"]

        code, out, err = _run(capsys, "run", "cancel", "b1", "--api", url, "--as", "alice", "--json")
        assert code == 0, err
        first = json.loads(out)
        assert (first["result"], first["run_id"], first["requested_by"]) == ("accepted", run_id, "alice")
        code, out, _ = _run(capsys, "run", "cancel", "b1", "--api", url, "--as", "alice", "--json")
        assert code == 0  # the repeat is answered with the same run, nothing cancelled twice
        assert json.loads(out)["run_id"] == run_id

        code, out, err = _run(
            capsys, "phase", "retry", "b1", "spellcheck", "--api", url, "--as", "bob", "--json"
        )
        assert code == 0, err
        retried = json.loads(out)["run_id"]
        assert retried != run_id
        code, out, _ = _run(
            capsys, "phase", "retry", "b1", "spellcheck", "--api", url, "--as", "bob", "--json"
        )
        assert (code, json.loads(out)["run_id"]) == (0, retried)

        code, out, err = _run(capsys, "phase", "retry", "b2", "nlp", "--api", url, "--as", "bob")
        assert code == 1  # denied: spellcheck never ran on b2
        assert out == ""
        assert err.count("\n") == 1
        assert "dependencies_not_completed" in err
        assert _run(capsys, "run", "cancel", "nope", "--api", url)[0] == 3

        monkeypatch.setenv("PIPELINE_STATE_API_TOKEN", "wrong")
        assert _run(capsys, "run", "cancel", "b1", "--api", url)[0] == 2
    code, _, err = _run(capsys, "run", "cancel", "b1", "--api", "http://127.0.0.1:1")
    assert code == 4
    assert err.count("\n") == 1
    assert _run(capsys, "run", "cancel", "b1", "--api", "ftp://x")[0] == 2
