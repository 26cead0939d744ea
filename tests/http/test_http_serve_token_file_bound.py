"""A ``..._TOKEN_FILE`` that never ends stops ``serve --http`` at once."""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path

import pytest

from tests.serve_process import serve_env

_MEMORY_CAP = 3 << 29
"""1.5 GiB of address space for the child: what the defect would otherwise take is all of it."""


def _capped() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (_MEMORY_CAP, _MEMORY_CAP))


def test_a_token_file_without_end_is_refused_not_read_into_memory(tmp_path: Path) -> None:
    """Was a defect (found by an attack on access control).

    Expected: a token file variable naming something that is no token file (here
    ``/dev/zero``, as a slip for another path would) stops ``serve --http`` at once with
    the documented one-line error naming the variable, exit 2 ("an unreadable or empty
    file ... stops serve with a message naming the variable"); a bearer token is a few
    hundred bytes at most. Actual: ``read_token_file`` (pipeline_state_http/settings.py:108)
    calls ``Path.read_text()`` with no bound, so the process reads until memory runs out:
    under a 1.5 GiB cap it dies with a ``MemoryError`` traceback after seconds (exit 1);
    without one it takes the machine's memory. Fix: read at most a few KiB (e.g. 64 KiB + 1
    bytes) and refuse a longer file as not a token."""
    argv = [sys.executable, "-m", "pipeline_state._cli", "serve", "--kafka", "127.0.0.1:1"]
    argv += ["--store", "memory://", "--http", "127.0.0.1:18765"]
    env = serve_env(
        PIPELINE_STATE_HTTP_API_TOKEN_FILE="/dev/zero",
        PIPELINE_STATE_HTTP_INTERNAL_TOKEN="internal-token",
        PIPELINE_STATE_HTTP_OPS_TOKEN="ops-token",
    )
    result = subprocess.run(
        argv, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60, preexec_fn=_capped
    )
    assert "Traceback" not in result.stderr, result.stderr[-1500:]
    assert result.returncode == 2, (result.returncode, result.stderr[-1500:])
    assert "PIPELINE_STATE_HTTP_API_TOKEN_FILE" in result.stderr, result.stderr[-1500:]


def test_read_token_file_refuses_a_file_longer_than_any_token(tmp_path: Path) -> None:
    from pipeline_state_http.settings import MAX_TOKEN_FILE_BYTES, read_token_file

    path = tmp_path / "token"
    path.write_text("t" * MAX_TOKEN_FILE_BYTES + "\n")
    with pytest.raises(ValueError, match="not a token"):
        read_token_file(path, variable="X_FILE")
    path.write_text("t" * 200 + "\n")
    assert read_token_file(path) == "t" * 200
