"""Settings of ``pipeline-state serve``: command-line flags plus ``PIPELINE_STATE_*`` variables.

The flags name what every deployment sets (``--kafka``, ``--store``, ``--http``,
``--group-id``, ``--consumers``); tuning lives in environment variables, listed in
:data:`ENVIRONMENT` with their defaults (the package README repeats the table).
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable, Mapping
from typing import Any, Literal

import attrs
from pipeline_state_kafka.consumer import ConsumerSettings
from pipeline_state_kafka.dlq import DEFAULT_DLQ_MAX_MESSAGE_BYTES
from pipeline_state_kafka.publisher import ProducerSettings

from pipeline_state.errors import DefinitionError
from pipeline_state.flags import parse_flag
from pipeline_state.intake import DEFAULT_MAX_JSON_DEPTH, DEFAULT_MAX_MESSAGE_BYTES, IntakeLimits
from pipeline_state.profile import DEFAULT_MAX_RESENDS, Profile
from pipeline_state.profiles import load_profile
from pipeline_state.profiles.huleedu.profile import HULEEDU_DEFAULT_DEADLINE_SECONDS, huleedu_profile
from pipeline_state.service import DEFAULT_WAITING_WINDOW_SECONDS

__all__ = ["ENVIRONMENT", "ServeSettings", "SettingsError", "parse_host_port"]

DEFAULT_STORE = "sqlite+aiosqlite:///pipeline_state.db"


class SettingsError(ValueError):
    """A flag or environment variable has an unusable value."""


def parse_host_port(text: str, *, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """``"HOST:PORT"`` (or ``":PORT"``) as a pair; raises :class:`SettingsError`."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise SettingsError(f"expected HOST:PORT, got {text!r}")
    return (host.strip("[]") or default_host), int(port)


_bool = parse_flag


def _choice(*options: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in options:
            raise ValueError(f"expected one of {', '.join(options)}, got {text!r}")
        return text

    return parse


def _seconds_or_none(text: str) -> float | None:
    """A positive number of seconds, or ``none``/``0`` for no deadline."""
    if text.strip().lower() in ("none", "0", "0.0"):
        return None
    value = float(text)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"expected a positive number of seconds or none, got {text!r}")
    return value


def _phase_deadlines(text: str) -> tuple[tuple[str, float | None], ...]:
    """``phase=seconds`` pairs separated by commas (``phase=none``: that phase has none)."""
    pairs: list[tuple[str, float | None]] = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        phase, sep, seconds = item.partition("=")
        if not sep or not phase.strip():
            raise ValueError(f"expected phase=seconds, got {item!r}")
        pairs.append((phase.strip(), _seconds_or_none(seconds)))
    return tuple(pairs)


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError(f"expected a whole number >= 0, got {text!r}")
    return value


def _acks(text: str) -> str | int:
    if text == "all":
        return text
    if text in ("0", "1"):
        return int(text)
    raise ValueError(f"expected all, 0 or 1, got {text!r}")


# variable -> (section, field, parser, description)
ENVIRONMENT: Mapping[str, tuple[str, str, Callable[[str], Any], str]] = {
    "PIPELINE_STATE_PROFILE": (
        "serve",
        "profile_spec",
        str,
        "the profile to serve, FILE.py:NAME or MODULE:NAME (default: the shipped HuleEdu profile)",
    ),
    "PIPELINE_STATE_TOPIC_PREFIX": ("serve", "topic_prefix", str, "put before every topic name"),
    "PIPELINE_STATE_STORE_UPGRADE": (
        "serve",
        "store_upgrade",
        _bool,
        "create/migrate the SQL schema at start",
    ),
    "PIPELINE_STATE_STORE_SCHEMA": ("serve", "store_schema", str, "PostgreSQL schema of the store"),
    "PIPELINE_STATE_SQLITE_SYNCHRONOUS": (
        "serve",
        "sqlite_synchronous",
        _choice("OFF", "NORMAL", "FULL", "EXTRA"),
        "SQLite synchronous level (the SQL adapter's default: FULL)",
    ),
    "PIPELINE_STATE_OUTBOX_LEASE_SECONDS": ("serve", "outbox_lease_seconds", float, "relay claim lease"),
    "PIPELINE_STATE_RELAY": ("serve", "relay_enabled", _bool, "run the outbox relay (1) or not (0)"),
    "PIPELINE_STATE_CREATE_TOPICS": ("serve", "create_topics", _bool, "create missing topics at start"),
    "PIPELINE_STATE_TOPIC_PARTITIONS": ("serve", "topic_partitions", int, "partitions of created topics"),
    "PIPELINE_STATE_REPLICATION_FACTOR": ("serve", "replication_factor", int, "replicas of created topics"),
    "PIPELINE_STATE_SWEEP_SECONDS": ("serve", "sweep_seconds", float, "deadline sweeper period (0: off)"),
    "PIPELINE_STATE_SUMMARY": ("serve", "summary", _choice("auto", "live", "plain", "off"), "summary mode"),
    "PIPELINE_STATE_SUMMARY_SECONDS": ("serve", "summary_seconds", float, "plain summary period"),
    "PIPELINE_STATE_LOG_LEVEL": ("serve", "log_level", str.upper, "DEBUG, INFO, WARNING or ERROR"),
    "PIPELINE_STATE_LOG_FORMAT": (
        "serve",
        "log_format",
        _choice("auto", "kv", "json"),
        "auto (json unless stderr is a terminal), kv or json",
    ),
    "PIPELINE_STATE_METRICS": ("serve", "metrics", _bool, "keep Prometheus metrics, served at /metrics (1)"),
    "PIPELINE_STATE_METRICS_STORE_SECONDS": (
        "serve",
        "metrics_store_seconds",
        float,
        "least time between two store readings for the metrics' gauges (10)",
    ),
    "PIPELINE_STATE_RELAY_BATCH_SIZE": ("serve", "relay_batch_size", int, "rows per relay pass"),
    "PIPELINE_STATE_RELAY_MAX_ATTEMPTS": (
        "serve",
        "relay_max_attempts",
        int,
        "failures before a row is parked",
    ),
    "PIPELINE_STATE_RELAY_IDLE_SECONDS": (
        "serve",
        "relay_idle_seconds",
        float,
        "relay poll period when idle",
    ),
    "PIPELINE_STATE_RELAY_LINGER_SECONDS": (
        "serve",
        "relay_linger_seconds",
        float,
        "delay after a wake-up, to relay several units of work in one pass",
    ),
    "PIPELINE_STATE_SHUTDOWN_SECONDS": ("serve", "shutdown_seconds", float, "bound on the final relay flush"),
    "PIPELINE_STATE_RESULTS_PURGE_SECONDS": (
        "serve",
        "results_purge_seconds",
        float,
        "period of the results inbox purge (0: off)",
    ),
    "PIPELINE_STATE_RESULTS_COMPLETION_RETENTION_HOURS": (
        "serve",
        "results_completion_retention_hours",
        float,
        "how long the results inbox remembers completion event ids",
    ),
    "PIPELINE_STATE_MAX_MESSAGE_BYTES": (
        "serve",
        "max_message_bytes",
        int,
        "largest inbound message accepted, bytes (1048576); larger ones are dead-lettered",
    ),
    "PIPELINE_STATE_MAX_JSON_DEPTH": (
        "serve",
        "max_json_depth",
        int,
        "deepest JSON nesting of an inbound message (32); deeper ones are dead-lettered",
    ),
    "PIPELINE_STATE_DLQ_MAX_MESSAGE_BYTES": (
        "serve",
        "dlq_max_message_bytes",
        int,
        "size limit of a dead letter, bytes (1048576; lowered to the broker's limit at start)",
    ),
    "PIPELINE_STATE_WAITING_WINDOW_SECONDS": (
        "serve",
        "waiting_window_seconds",
        float,
        "how long an early fact waits for its batch before it is dead-lettered (900)",
    ),
    "PIPELINE_STATE_PHASE_DEADLINE_SECONDS": (
        "serve",
        "phase_deadline_seconds",
        _seconds_or_none,
        "deadline of every phase without its own (3600; none: no default deadline)",
    ),
    "PIPELINE_STATE_PHASE_DEADLINES": (
        "serve",
        "phase_deadlines",
        _phase_deadlines,
        "per-phase deadlines, e.g. cj_assessment=7200,nlp=none (override the default and the catalog)",
    ),
    "PIPELINE_STATE_PHASE_MAX_RESENDS": (
        "serve",
        "phase_max_resends",
        _count,
        "times an overdue phase's command is re-sent (same event id) before the phase fails (2)",
    ),
    "PIPELINE_STATE_STRICT_CORRELATION": (
        "serve",
        "strict_correlation",
        _bool,
        "ignore outcomes whose correlation id belongs to no run instead of applying them (off)",
    ),
    "PIPELINE_STATE_KAFKA_CLIENT_ID": ("both", "client_id", str, "Kafka client id"),
    "PIPELINE_STATE_KAFKA_AUTO_OFFSET_RESET": (
        "consumer",
        "auto_offset_reset",
        _choice("earliest", "latest"),
        "where a new group starts",
    ),
    "PIPELINE_STATE_KAFKA_STARTUP_TIMEOUT_SECONDS": (
        "consumer",
        "startup_timeout_seconds",
        float,
        "how long to retry reaching the broker at start",
    ),
    "PIPELINE_STATE_KAFKA_MAX_RECORDS": ("consumer", "max_records", int, "records per fetch"),
    "PIPELINE_STATE_KAFKA_POLL_TIMEOUT_MS": ("consumer", "poll_timeout_ms", int, "fetch wait per loop turn"),
    "PIPELINE_STATE_KAFKA_FETCH_MAX_WAIT_MS": ("consumer", "fetch_max_wait_ms", int, "broker fetch wait"),
    "PIPELINE_STATE_KAFKA_SESSION_TIMEOUT_MS": (
        "consumer",
        "session_timeout_ms",
        int,
        "group session timeout",
    ),
    "PIPELINE_STATE_KAFKA_HEARTBEAT_MS": ("consumer", "heartbeat_interval_ms", int, "group heartbeat period"),
    "PIPELINE_STATE_KAFKA_MAX_POLL_INTERVAL_MS": (
        "consumer",
        "max_poll_interval_ms",
        int,
        "max work per fetch",
    ),
    "PIPELINE_STATE_KAFKA_METADATA_MAX_AGE_MS": ("consumer", "metadata_max_age_ms", int, "metadata refresh"),
    "PIPELINE_STATE_KAFKA_PARTITION_CONCURRENCY": (
        "consumer",
        "partition_concurrency",
        int,
        "lanes (by batch key) of one fetch handled at once",
    ),
    "PIPELINE_STATE_KAFKA_ACKS": ("producer", "acks", _acks, "producer acks: all, 1 or 0"),
    "PIPELINE_STATE_KAFKA_IDEMPOTENCE": ("producer", "enable_idempotence", _bool, "idempotent producer"),
    "PIPELINE_STATE_KAFKA_REQUEST_TIMEOUT_MS": (
        "producer",
        "request_timeout_ms",
        int,
        "producer send timeout",
    ),
    "PIPELINE_STATE_KAFKA_LINGER_MS": ("producer", "linger_ms", int, "producer batching delay"),
}


_LOADED: dict[str, Profile] = {}


def _load_profile(spec: str) -> Profile:
    """The profile ``spec`` names, loaded once per process (its module runs once)."""
    profile = _LOADED.get(spec)
    if profile is None:
        profile = _LOADED[spec] = load_profile(spec)
    return profile


@attrs.frozen
class ServeSettings:
    """Everything ``serve`` needs; build it with :meth:`from_args` or directly in code."""

    kafka: str
    store_url: str = DEFAULT_STORE
    http: tuple[str, int] | None = None
    group_id: str = "pipeline-state"
    consumers: tuple[str, ...] = ()
    topic_prefix: str = ""
    store_upgrade: bool | None = None
    store_schema: str | None = None
    outbox_lease_seconds: float | None = None
    sqlite_synchronous: Literal["OFF", "NORMAL", "FULL", "EXTRA"] | None = None
    relay_enabled: bool = True
    create_topics: bool = True
    topic_partitions: int = 4
    replication_factor: int = 1
    sweep_seconds: float = 5.0
    summary: Literal["auto", "live", "plain", "off"] = "auto"
    summary_seconds: float = 10.0
    log_level: str = "INFO"
    log_format: Literal["auto", "kv", "json"] = "auto"
    metrics: bool = True
    """Keep Prometheus metrics (:class:`~pipeline_state_kafka.metrics.ServiceMetrics`); with
    ``--http`` they are served at ``/metrics``."""
    metrics_store_seconds: float = attrs.field(default=10.0, validator=attrs.validators.ge(0))
    relay_batch_size: int = 100
    relay_max_attempts: int = 10
    relay_idle_seconds: float = 0.5
    relay_linger_seconds: float = 0.005
    shutdown_seconds: float = 15.0
    results_purge_seconds: float = 600.0
    results_completion_retention_hours: float = 72.0
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    max_json_depth: int = DEFAULT_MAX_JSON_DEPTH
    dlq_max_message_bytes: int = DEFAULT_DLQ_MAX_MESSAGE_BYTES
    waiting_window_seconds: float = DEFAULT_WAITING_WINDOW_SECONDS
    phase_deadline_seconds: float | None = HULEEDU_DEFAULT_DEADLINE_SECONDS
    phase_deadlines: tuple[tuple[str, float | None], ...] = ()
    phase_max_resends: int = DEFAULT_MAX_RESENDS
    strict_correlation: bool = False
    profile_spec: str | None = None
    """``--profile``: the profile to serve (``FILE.py:NAME`` or ``MODULE:NAME``); ``None``
    serves the shipped HuleEdu profile."""
    http_insecure_no_auth: bool = False
    """``--insecure-no-auth``: serve HTTP scopes without a token open (loopback addresses only)."""
    consumer: ConsumerSettings | None = None
    producer: ProducerSettings | None = None

    def store_options(self) -> dict[str, Any]:
        """Keyword arguments of :func:`~pipeline_state_service.stores.open_store`."""
        return {
            "upgrade": self.store_upgrade,
            "schema": self.store_schema,
            "lease": self.outbox_lease_seconds,
            "synchronous": self.sqlite_synchronous,
        }

    def profile(self) -> Profile:
        """The profile to serve, with this deployment's deadlines, re-sends and correlation
        rule. Without ``profile_spec``: the HuleEdu profile built from those settings. With
        it: the named profile as its author built it, with ``phase_deadlines`` laid over its
        own deadlines and ``strict_correlation`` turned on when set. Raises
        :class:`SettingsError` naming the problem (an unknown phase, a profile that cannot
        be loaded)."""
        try:
            if self.profile_spec is None:
                return huleedu_profile(
                    deadlines=dict(self.phase_deadlines),
                    default_deadline_seconds=self.phase_deadline_seconds,
                    max_resends=self.phase_max_resends,
                    strict_correlation=self.strict_correlation,
                )
            loaded = _load_profile(self.profile_spec)
        except DefinitionError as exc:
            variable = "PIPELINE_STATE_PROFILE" if self.profile_spec else "PIPELINE_STATE_PHASE_DEADLINES"
            raise SettingsError(f"{variable}: {exc.problem}") from exc
        try:
            return attrs.evolve(
                loaded,
                deadlines={**loaded.deadlines, **dict(self.phase_deadlines)},
                strict_correlation=loaded.strict_correlation or self.strict_correlation,
            )
        except DefinitionError as exc:
            raise SettingsError(f"PIPELINE_STATE_PHASE_DEADLINES: {exc.problem}") from exc

    def intake_limits(self) -> IntakeLimits:
        """The bounds every inbound message is checked against before it is parsed."""
        return IntakeLimits(self.max_message_bytes, self.max_json_depth)

    def consumer_settings(self) -> ConsumerSettings:
        base = self.consumer or ConsumerSettings(self.kafka)
        return attrs.evolve(
            base, bootstrap_servers=self.kafka, group_id=self.group_id, topic_prefix=self.topic_prefix
        )

    def producer_settings(self) -> ProducerSettings:
        return attrs.evolve(self.producer or ProducerSettings(self.kafka), bootstrap_servers=self.kafka)

    @classmethod
    def from_args(cls, args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> ServeSettings:
        """Settings from the parsed ``serve`` flags and ``environ`` (default: ``os.environ``)."""
        env = os.environ if environ is None else environ
        sections: dict[str, dict[str, Any]] = {"serve": {}, "consumer": {}, "producer": {}}
        for variable, (section, field, parse, _) in ENVIRONMENT.items():
            text = env.get(variable)
            if text is None or text == "":
                continue
            try:
                value = parse(text)
            except ValueError as exc:
                raise SettingsError(f"{variable}: {exc}") from exc
            targets = ("consumer", "producer") if section == "both" else (section,)
            for target in targets:
                sections[target][field] = value
        kafka = str(args.kafka)
        parse_host_port(kafka.split(",")[0])
        try:
            consumer = ConsumerSettings(kafka, **sections["consumer"])
            producer = ProducerSettings(kafka, **sections["producer"])
        except (TypeError, ValueError) as exc:
            raise SettingsError(str(exc)) from exc
        http = getattr(args, "http", None)
        try:
            IntakeLimits(
                sections["serve"].get("max_message_bytes", DEFAULT_MAX_MESSAGE_BYTES),
                sections["serve"].get("max_json_depth", DEFAULT_MAX_JSON_DEPTH),
            )
        except ValueError as exc:
            raise SettingsError(f"intake limits: {exc}") from exc
        if sections["serve"].get("dlq_max_message_bytes", DEFAULT_DLQ_MAX_MESSAGE_BYTES) < 4096:
            raise SettingsError("PIPELINE_STATE_DLQ_MAX_MESSAGE_BYTES: expected at least 4096")
        if sections["serve"].get("waiting_window_seconds", DEFAULT_WAITING_WINDOW_SECONDS) <= 0:
            raise SettingsError("PIPELINE_STATE_WAITING_WINDOW_SECONDS: expected a positive number")
        if sections["serve"].get("metrics_store_seconds", 0.0) < 0:
            raise SettingsError("PIPELINE_STATE_METRICS_STORE_SECONDS: expected a number >= 0")
        if getattr(args, "profile", None):
            sections["serve"]["profile_spec"] = args.profile
        settings = cls(
            kafka=kafka,
            store_url=getattr(args, "store", None) or DEFAULT_STORE,
            http=None if not http else parse_host_port(http),
            group_id=getattr(args, "group_id", None) or "pipeline-state",
            consumers=tuple(getattr(args, "consumers", None) or ()),
            http_insecure_no_auth=bool(getattr(args, "insecure_no_auth", False)),
            consumer=consumer,
            producer=producer,
            **sections["serve"],
        )
        settings.profile()  # an unusable deadline setting fails here, before anything starts
        return settings
