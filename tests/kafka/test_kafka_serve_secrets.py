"""``serve`` never logs the password of its store URL: not in the ``starting`` line, not when
the store cannot be opened.

Found by an attack: both lines logged the URL as given, password included (log files and
collectors keep it); now the password shows as ``***``."""

from __future__ import annotations

import asyncio
import gc
import io
import logging

import pytest
from kafka_harness import fast_settings
from pipeline_state_kafka.testing import LocalBroker
from pipeline_state_service.serve import serve
from pipeline_state_service.stores import shown_url
from proof_harness import postgres_schema, postgres_url
from sqlalchemy.engine import make_url

pytestmark = pytest.mark.kafka

PASSWORD = "S3cret-Pw"


def _logged(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)


async def test_serve_shows_the_store_url_without_its_password(
    broker: LocalBroker, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    url = postgres_url()
    with_password = make_url(url).set(password=PASSWORD).render_as_string(hide_password=False)
    async with postgres_schema(url) as schema:  # trust authentication: the password is not checked
        settings = fast_settings(
            broker.bootstrap, prefix, store_url=with_password, store_schema=schema, store_upgrade=True
        )
        stop = asyncio.Event()
        with caplog.at_level(logging.INFO):
            task = asyncio.create_task(serve(settings, stop=stop, out=io.StringIO()))
            try:
                for _ in range(400):
                    if any(r.getMessage() == "starting" for r in caplog.records) or task.done():
                        break
                    await asyncio.sleep(0.05)
            finally:
                stop.set()
                code = await asyncio.wait_for(task, 60)
                gc.unfreeze()  # serve froze its start-up: the rest of the session collects as before
    assert code == 0
    (starting,) = [r for r in caplog.records if r.getMessage() == "starting"]
    assert starting.__dict__["store"] == shown_url(with_password)
    assert ":***@" in starting.__dict__["store"]
    assert PASSWORD not in _logged(caplog)


async def test_serve_that_cannot_open_its_store_does_not_log_the_password(
    broker: LocalBroker, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    nobody = f"postgresql+asyncpg://admin:{PASSWORD}@127.0.0.1:1/nowhere"
    settings = fast_settings(broker.bootstrap, prefix, store_url=nobody)
    with caplog.at_level(logging.INFO):
        code = await asyncio.wait_for(serve(settings, stop=asyncio.Event(), out=io.StringIO()), 60)
    assert code == 1
    failed = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any(
        m.startswith("cannot open the store postgresql+asyncpg://admin:***@127.0.0.1:1/nowhere")
        for m in failed
    )
    assert PASSWORD not in _logged(caplog)


def test_a_url_that_does_not_parse_shows_its_scheme_only() -> None:
    assert shown_url(f"postgres ql://admin:{PASSWORD}@h/db") == "postgres ql://..."
    assert shown_url(f"postgresql://admin:{PASSWORD}@h:notaport/db") == "postgresql://..."
    assert shown_url(f"admin:{PASSWORD}") == "(not a URL)"
    assert shown_url("sqlite+aiosqlite:///tmp/s.db") == "sqlite+aiosqlite:///tmp/s.db"
    assert shown_url("memory://") == "memory://"
