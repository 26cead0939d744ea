"""``pipeline-state serve`` run as a process to its end, for the start-up tests of several
directories (a broker that is never reached: nothing listens on port 1)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

__all__ = ["WORK", "StderrLines", "assert_clean_failure", "run_serve", "serve_env"]

WORK = Path(__file__).resolve().parents[1]
"""The checkout: what the process imports."""


def serve_env(**extra: str) -> dict[str, str]:
    """The test process's environment without its ``PIPELINE_STATE_*`` and ``OTEL_*`` variables
    (but the test database's URL), the checkout on the path, then ``extra``."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PIPELINE_STATE_", "OTEL_")) or key == "PIPELINE_STATE_TEST_POSTGRES"
    }
    env.update(
        {
            "PYTHONPATH": f"{WORK}{os.pathsep}{WORK / 'adapters'}",
            "PIPELINE_STATE_SUMMARY": "off",
            "PIPELINE_STATE_LOG_FORMAT": "kv",
            # An unreachable broker fails a start-up that gets past the settings and the store
            # quickly ("service failed: KafkaConnectionError", status 1).
            "PIPELINE_STATE_KAFKA_STARTUP_TIMEOUT_SECONDS": "0.5",
        }
    )
    env.update(extra)
    return env


def run_serve(
    cwd: Path, *args: str, kafka: str = "127.0.0.1:1", timeout: float = 60.0, **extra: str
) -> subprocess.CompletedProcess[str]:
    """``pipeline-state serve --kafka KAFKA ARGS`` in ``cwd`` (a default SQLite file lands
    there), to its end."""
    return subprocess.run(
        [sys.executable, "-m", "pipeline_state._cli", "serve", "--kafka", kafka, *args],
        env=serve_env(**extra),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def assert_clean_failure(result: subprocess.CompletedProcess[str], codes: tuple[int, ...]) -> None:
    """The process ended with one of ``codes`` and printed no traceback."""
    assert "Traceback" not in result.stderr, f"a traceback instead of one line:\n{result.stderr[-3000:]}"
    assert result.returncode in codes, (result.returncode, result.stderr[-2000:])


class StderrLines:
    """A child's stderr read on a thread, line by line: a test waits for a line (the child
    got that far: its signal handlers are in place, say) instead of sleeping for a guessed
    time, and still has the whole text once the child ended."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        assert process.stderr is not None, "start the process with stderr=subprocess.PIPE"
        self._stream = process.stderr
        self._lines: list[str] = []
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for line in self._stream:
            with self._changed:
                self._lines.append(line)
                self._changed.notify_all()

    def wait_for(self, text: str, within: float = 60.0) -> bool:
        """Whether a line containing ``text`` came within ``within`` seconds."""
        with self._changed:
            return self._changed.wait_for(lambda: any(text in line for line in self._lines), within)

    def text(self, within: float = 10.0) -> str:
        """Everything read; first waits up to ``within`` seconds for the stream to end."""
        self._thread.join(within)
        with self._changed:
            return "".join(self._lines)
