"""``serve`` purges its store's bookkeeping rows past their retention (``PIPELINE_STATE_PURGE_SECONDS``,
``PIPELINE_STATE_RETENTION_*_HOURS``), on a real broker and a SQLite store.

Before, ``serve`` never deleted a row of the inbox, the transition log or the published
outbox: a service running for months kept every event id it ever saw.
"""

from __future__ import annotations

import argparse
import uuid
from pathlib import Path

import attrs
import pytest
from kafka_harness import fast_settings, running, wait_until
from pipeline_state_kafka import ProducerLike
from pipeline_state_kafka.testing import Collector, LocalBroker, send_envelopes
from pipeline_state_service import ServeSettings, SettingsError
from pipeline_state_service.cli import add_commands
from pipeline_state_sql import SqlStore
from sqlalchemy import text

from pipeline_state.ports import Retention
from pipeline_state.profiles.huleedu.events import OUTBOUND_TOPICS, Topic
from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes

pytestmark = pytest.mark.kafka

SECOND_IN_HOURS = 1 / 3600


async def _rows(store: SqlStore) -> dict[str, int]:
    async with store.engine.connect() as conn:
        return {
            table: (await conn.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one()
            for table in ("inbox", "transitions", "outbox", "batches", "runs")
        }


@pytest.mark.timeout(120)
async def test_serve_purges_what_its_retention_lets_go(
    broker: LocalBroker, producer: ProducerLike, prefix: str, tmp_path: Path
) -> None:
    settings = fast_settings(
        broker.bootstrap,
        prefix,
        store_url=f"sqlite+aiosqlite:///{tmp_path / 'store.db'}",
        purge_seconds=0.2,
        retention_published_hours=SECOND_IN_HOURS,
        retention_inbox_hours=SECOND_IN_HOURS,
        retention_transitions_hours=2 * SECOND_IN_HOURS,
    )
    env, batch, corr = HuleEduEnvelopes(), "kept-tidy", str(uuid.uuid4())
    items = env.item_ids(batch, 2)
    async with (
        running(settings) as runner,
        Collector(broker.bootstrap, OUTBOUND_TOPICS, topic_prefix=prefix) as out,
    ):
        assert runner.opened is not None
        store = runner.opened.store
        assert isinstance(store, SqlStore)
        steps = [
            (env.register(batch, items=2), Topic.ESSAYS_REGISTERED),
            (env.provisioned(batch, items), None),
            (env.request(batch, "nlp", correlation_id=corr), Topic.SPELLCHECK),
            (env.outcome(batch, "spellcheck", corr, processed=items), Topic.NLP),
            (env.outcome(batch, "nlp", corr, processed=items), Topic.PIPELINE_COMPLETED),
        ]
        for delivery, answer in steps:
            await send_envelopes(producer, [delivery], topic_prefix=prefix)
            if answer is not None:
                await out.wait_for(lambda c, t=answer: bool(c.on(t)), what=answer.value)
        assert len(out.on(Topic.PIPELINE_COMPLETED)) == 1

        async def tidy() -> bool:
            rows = await _rows(store)
            return rows["inbox"] == rows["transitions"] == rows["outbox"] == 0

        await wait_until(tidy, within=30, what="the purge of inbox, log and published outbox")
        rows = await _rows(store)
        assert (rows["batches"], rows["runs"]) == (1, 1)  # the state and its history stay
        assert len(out.on(Topic.PIPELINE_COMPLETED)) == 1


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(dest="command"))
    return parser.parse_args(["serve", "--kafka", "127.0.0.1:9092", *argv])


def test_retention_settings_default_to_a_week_a_month_and_for_ever() -> None:
    settings = ServeSettings.from_args(_parse(), {})
    assert settings.purge_seconds == 600.0
    assert settings.retention() == Retention(published=7 * 86_400.0, inbox=30 * 86_400.0, transitions=None)


def test_retention_settings_are_read_and_none_keeps_for_ever() -> None:
    settings = ServeSettings.from_args(
        _parse(),
        {
            "PIPELINE_STATE_PURGE_SECONDS": "60",
            "PIPELINE_STATE_RETENTION_PUBLISHED_HOURS": "none",
            "PIPELINE_STATE_RETENTION_INBOX_HOURS": "48",
            "PIPELINE_STATE_RETENTION_TRANSITIONS_HOURS": "72",
        },
    )
    assert settings.purge_seconds == 60.0
    assert settings.retention() == Retention(published=None, inbox=48 * 3600.0, transitions=72 * 3600.0)


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("PIPELINE_STATE_RETENTION_INBOX_HOURS", "-1", "positive number of hours"),
        ("PIPELINE_STATE_RETENTION_INBOX_HOURS", "nan", "positive number of hours"),
        ("PIPELINE_STATE_RETENTION_PUBLISHED_HOURS", "1e9", "at most 87600"),
        ("PIPELINE_STATE_RETENTION_TRANSITIONS_HOURS", "24", "at least the inbox's"),
        ("PIPELINE_STATE_PURGE_SECONDS", "-5", "PIPELINE_STATE_PURGE_SECONDS"),
    ],
)
def test_unusable_retention_settings_stop_serve_naming_the_variable(
    variable: str, value: str, says: str
) -> None:
    with pytest.raises(SettingsError, match=says) as caught:
        ServeSettings.from_args(_parse(), {variable: value})
    assert str(caught.value).startswith(variable.rsplit("_", 0)[0][:25])


def test_a_transition_log_kept_shorter_than_the_inbox_is_refused_in_code_too() -> None:
    settings = attrs.evolve(ServeSettings("127.0.0.1:9092"), retention_transitions_hours=1.0)
    with pytest.raises(SettingsError, match="at least the inbox's"):
        settings.retention()
