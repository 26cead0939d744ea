"""The composition root's shape: its settings compose the adapters' (same variables as
before), flags override variables, its errors join the library's tree, its stores are opened
and closed through the SQL adapter's ``open``, and its public names are the documented ones."""

from __future__ import annotations

import argparse
from pathlib import Path

import pipeline_state_service
import pytest
from pipeline_state_service import (
    ServeSettings,
    Settings,
    SettingsError,
    extensions,
    open_store,
    results_stores,
    runner,
    stores,
)
from pipeline_state_service import errors as service_errors
from pipeline_state_service import serve as serve_module
from pipeline_state_service import settings as service_settings
from pipeline_state_service.cli import add_commands

from pipeline_state.errors import PipelineStateError
from tests.public_names import assert_public_names

README = Path(pipeline_state_service.__file__).parent / "README.md"


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(dest="command"))
    return parser.parse_args(["serve", *argv])


def test_serve_reads_every_package_s_variables_and_flags_win() -> None:
    env = {
        "PIPELINE_STATE_KAFKA": "env-broker:9092",
        "PIPELINE_STATE_STORE": "postgresql+asyncpg://env-host/db",  # a schema is a PostgreSQL option
        "PIPELINE_STATE_PROFILE": "no_such_module:profile",
        "PIPELINE_STATE_STORE_SCHEMA": "tenant",
        "PIPELINE_STATE_OUTBOX_LEASE_SECONDS": "9",
        "PIPELINE_STATE_KAFKA_LINGER_MS": "3",
        "PIPELINE_STATE_RELAY_BATCH_SIZE": "7",
    }
    flags = ServeSettings.from_args(
        _parse(
            "--kafka",
            "flag-broker:9092",
            "--store",
            "memory://",
            "--profile",
            "pipeline_state.profiles:default_profile",
        ),
        env,
    )
    assert (flags.kafka, flags.store_url) == ("flag-broker:9092", "memory://")
    assert flags.profile_spec == "pipeline_state.profiles:default_profile"
    assert flags.producer_settings().bootstrap_servers == "flag-broker:9092"
    assert (flags.store_schema, flags.outbox_lease_seconds, flags.relay_batch_size) == ("tenant", 9.0, 7)
    assert flags.producer_settings().linger_ms == 3
    env.pop("PIPELINE_STATE_PROFILE")
    variables = ServeSettings.from_args(_parse(), env)
    assert (variables.kafka, variables.store_url) == ("env-broker:9092", "postgresql+asyncpg://env-host/db")
    assert variables.consumer_settings().bootstrap_servers == "env-broker:9092"
    assert variables.kafka_settings().kafka == "env-broker:9092"


def test_serve_without_a_broker_names_the_flag_and_the_variable() -> None:
    with pytest.raises(SettingsError, match="PIPELINE_STATE_KAFKA: not set \\(or give --kafka\\)"):
        ServeSettings.from_args(_parse(), {})


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("PIPELINE_STATE_SQLITE_SYNCHRONOUS", "sometimes"),  # the SQL adapter's
        ("PIPELINE_STATE_KAFKA_ACKS", "most"),  # the Kafka adapter's
        ("PIPELINE_STATE_SUMMARY", "loud"),  # the service's own
        ("PIPELINE_STATE_LOG_LEVEL", "chatty"),
    ],
)
def test_a_wrong_value_of_any_package_stops_serve_naming_the_variable(variable: str, value: str) -> None:
    with pytest.raises(SettingsError, match=f"^{variable}: ") as caught:
        ServeSettings.from_args(_parse("--kafka", "h:9092"), {variable: value})
    assert isinstance(caught.value, PipelineStateError)
    assert isinstance(caught.value, ValueError)


def test_the_service_settings_own_the_service_variables_only() -> None:
    own = set(Settings.variables())
    assert "PIPELINE_STATE_RELAY_BATCH_SIZE" in own
    assert not {v for v in own if v.startswith(("PIPELINE_STATE_KAFKA_", "PIPELINE_STATE_HTTP_"))}
    assert {"PIPELINE_STATE_STORE_UPGRADE", "PIPELINE_STATE_SQLITE_SYNCHRONOUS"}.isdisjoint(own)
    assert set(service_settings.ENVIRONMENT) == {
        variable for model in service_settings.SETTINGS_MODELS for variable in model.variables()
    }


async def test_open_store_closes_the_sql_store_it_opened(tmp_path: Path) -> None:
    opened = await open_store(f"sqlite+aiosqlite:///{tmp_path / 'state.db'}", synchronous="NORMAL")
    engine = opened.store.engine  # type: ignore[attr-defined]
    assert await opened.store.load("none") is None
    assert engine.pool.checkedin() + engine.pool.checkedout() > 0
    await opened.close()
    assert engine.pool.checkedin() + engine.pool.checkedout() == 0


def test_service_public_names_are_the_documented_ones() -> None:
    assert_public_names(
        "pipeline_state_service",
        README,
        {
            "ENVIRONMENT": service_settings.ENVIRONMENT,
            "ConsumerPlugin": extensions.ConsumerPlugin,
            "OpenedResultsStore": results_stores.OpenedResultsStore,
            "OpenedStore": stores.OpenedStore,
            "OperatorError": service_errors.OperatorError,
            "ServeContext": extensions.ServeContext,
            "ServeSettings": service_settings.ServeSettings,
            "ServiceRunner": runner.ServiceRunner,
            "Settings": service_settings.Settings,
            "SettingsError": service_errors.SettingsError,
            "UnknownConsumerError": service_errors.UnknownConsumerError,
            "open_results_store": results_stores.open_results_store,
            "open_store": stores.open_store,
            "register_consumer": extensions.register_consumer,
            "register_results_store": results_stores.register_results_store,
            "serve_main": serve_module.serve_main,
        },
    )
    for error in (
        service_errors.SettingsError,
        service_errors.UnknownConsumerError,
        service_errors.OperatorError,
    ):
        assert issubclass(error, PipelineStateError)
