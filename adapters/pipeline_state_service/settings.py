"""Settings of ``pipeline-state serve``: command-line flags plus ``PIPELINE_STATE_*`` variables.

The flags name what every deployment sets (``--kafka``, ``--store``, ``--http``,
``--group-id``, ``--consumers``); tuning lives in environment variables. Each adapter reads
the variables of its technology with its own pydantic-settings model
(:class:`pipeline_state_sql.Settings`, :class:`pipeline_state_kafka.Settings`, and
:class:`pipeline_state_http.Settings` with ``--http``); :class:`Settings` here reads the
service's own (profile, deadlines, relay, sweeper, summary, logs, metrics, intake limits).
:meth:`ServeSettings.from_args` composes them, flags over variables, into the one
:class:`ServeSettings` that ``serve`` runs with. :data:`ENVIRONMENT` lists every variable
(the package READMEs' tables are generated from the models).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal

import attrs
from pipeline_state_kafka import KafkaSettingsError
from pipeline_state_kafka import Settings as KafkaSettings
from pipeline_state_kafka.consumer import ConsumerSettings
from pipeline_state_kafka.dlq import DEFAULT_DLQ_MAX_MESSAGE_BYTES
from pipeline_state_kafka.publisher import ProducerSettings
from pipeline_state_sql import Settings as SqlSettings
from pipeline_state_sql import SqlSettingsError
from pipeline_state_sql.engine import check_store_url
from pydantic import BeforeValidator, Field, model_validator
from pydantic_settings import NoDecode

from pipeline_state._catalog import MAX_DEADLINE_SECONDS
from pipeline_state._flags import parse_flag
from pipeline_state._intake import DEFAULT_MAX_JSON_DEPTH, DEFAULT_MAX_MESSAGE_BYTES, IntakeLimits
from pipeline_state._profile import DEFAULT_MAX_RESENDS, Profile
from pipeline_state._retention import DEFAULT_RETENTION, Retention
from pipeline_state._service import DEFAULT_WAITING_WINDOW_SECONDS
from pipeline_state._settings import ENV_PREFIX, EnvironmentSettings
from pipeline_state.errors import DefinitionError
from pipeline_state.profiles import load_profile
from pipeline_state.profiles.huleedu.profile import HULEEDU_DEFAULT_DEADLINE_SECONDS, huleedu_profile

from .errors import SettingsError
from .stores import SQL_FIELDS, is_memory_url

__all__ = ["ENVIRONMENT", "SETTINGS_MODELS", "ServeSettings", "Settings", "SettingsError", "parse_host_port"]

DEFAULT_STORE = "sqlite+aiosqlite:///pipeline_state.db"


def _hours(seconds: float | None) -> float | None:
    return None if seconds is None else seconds / 3600


DEFAULT_RETENTION_HOURS: tuple[float | None, float | None, float | None] = (
    _hours(DEFAULT_RETENTION.published),
    _hours(DEFAULT_RETENTION.inbox),
    _hours(DEFAULT_RETENTION.transitions),
)
"""Published outbox rows, inbox entries, transition log rows: the library's default
:class:`~pipeline_state.ports.Retention` in hours."""


def retention_of(published: float | None, inbox: float | None, transitions: float | None) -> Retention:
    """A :class:`~pipeline_state.ports.Retention` from three periods in hours (``None``: for ever)."""
    return Retention(*(None if hours is None else hours * 3600 for hours in (published, inbox, transitions)))


MAX_RETENTION_HOURS = 24 * 366 * 100
"""The longest retention a setting accepts: a hundred years (further back than that, the
times a purge computes leave the calendar)."""


def parse_host_port(text: str, *, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """``"HOST:PORT"`` (or ``":PORT"``) as a pair; raises :class:`SettingsError`."""
    host, sep, port = text.rpartition(":")
    if not sep or not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
        raise SettingsError(f"expected HOST:PORT, got {text!r}")
    return (host.strip("[]") or default_host), int(port)


def _flag(value: Any) -> Any:
    return parse_flag(value) if isinstance(value, str) else value


def _upper(value: Any) -> Any:
    return value.upper() if isinstance(value, str) else value


def _span_or_none(value: Any, unit: str, per_unit: int, nothing: str) -> float | None:
    """A positive number of ``unit`` (``per_unit`` seconds each) up to ten years, or
    ``none``/``0`` for ``nothing``."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "0", "0.0")):
        return None
    amount = float(value)
    if amount == 0:
        return None
    if not math.isfinite(amount) or amount < 0 or amount * per_unit > MAX_DEADLINE_SECONDS:
        raise ValueError(
            f"expected a positive number of {unit}, at most {MAX_DEADLINE_SECONDS // per_unit} (ten years), "
            f"or none for {nothing}, got {value!r}"
        )
    return amount


def _seconds_or_none(value: Any) -> float | None:
    """A positive number of seconds, or ``none``/``0`` for no deadline."""
    return _span_or_none(value, "seconds", 1, "no deadline")


def _phase_deadlines(value: Any) -> Any:
    """``phase=seconds`` pairs separated by commas (``phase=none``: that phase has none)."""
    if not isinstance(value, str):
        return value
    pairs: list[tuple[str, float | None]] = []
    for item in filter(None, (part.strip() for part in value.split(","))):
        phase, sep, seconds = item.partition("=")
        if not sep or not phase.strip():
            raise ValueError(f"expected phase=seconds, got {item!r}")
        if any(phase.strip() == named for named, _ in pairs):
            raise ValueError(f"phase {phase.strip()!r} is given twice")
        pairs.append((phase.strip(), _seconds_or_none(seconds)))
    return tuple(pairs)


def _hours_or_none(value: Any) -> float | None:
    """A positive number of hours, or ``none``/``0`` to keep for ever."""
    return _span_or_none(value, "hours", 3600, "for ever")


Flag = Annotated[bool, BeforeValidator(_flag)]
Hours = Annotated[float | None, BeforeValidator(_hours_or_none)]
Seconds = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class Settings(EnvironmentSettings):
    """The service's own ``PIPELINE_STATE_*`` variables (the adapters read theirs)."""

    error: ClassVar[type[Exception]] = SettingsError

    profile: str | None = Field(
        default=None,
        description="the profile to serve, `FILE.py:NAME` or `MODULE:NAME` (a `Profile` or a function "
        "returning one; `--profile` overrides it): its inbound topics are consumed, its commands and "
        "events produced; `PIPELINE_STATE_PHASE_DEADLINES` and `PIPELINE_STATE_STRICT_CORRELATION` still "
        "apply, the other `PIPELINE_STATE_PHASE_*` settings only to the shipped profile",
        json_schema_extra={"shown_default": "the shipped HuleEdu profile"},
    )
    relay: Flag = Field(
        default=True, description="`0` runs without relay (rows stay pending; for maintenance and tests)"
    )
    sweep_seconds: Seconds = Field(
        default=5.0,
        description="period of the sweeper: overdue phases (`expire_overdue`), then waiting facts "
        "(`sweep_waiting`: re-attempted, and dead-lettered once they waited too long or were found never "
        "to apply); `0` turns it off",
    )
    waiting_window_seconds: float = Field(
        default=DEFAULT_WAITING_WINDOW_SECONDS,
        gt=0,
        le=MAX_DEADLINE_SECONDS,
        allow_inf_nan=False,
        description="how long an early fact waits for its batch before the sweeper dead-letters it (a "
        "waiting pipeline request is denied instead)",
    )
    phase_deadline_seconds: Annotated[float | None, BeforeValidator(_seconds_or_none)] = Field(
        default=HULEEDU_DEFAULT_DEADLINE_SECONDS,
        description="deadline of every phase without one of its own; `none` opts out (a silent worker "
        "then blocks its batch until an operator cancels the run)",
    )
    phase_deadlines: Annotated[
        tuple[tuple[str, float | None], ...], NoDecode, BeforeValidator(_phase_deadlines)
    ] = Field(
        default=(),
        description="per-phase deadlines for this deployment, `cj_assessment=7200,nlp=none`; they "
        "override the default and the catalog's `deadline_seconds`; an unknown phase stops `serve` at "
        "start",
    )
    phase_max_resends: int = Field(
        default=DEFAULT_MAX_RESENDS,
        ge=0,
        description="how often an overdue phase's command is re-sent (same `event_id`) before the phase "
        "fails with `timeout`",
    )
    strict_correlation: Flag = Field(
        default=False,
        description="ignore (`stale_run`) an outcome whose correlation id belongs to no run of its batch, "
        "instead of applying it to the active run and flagging `correlation_mismatch`",
    )
    max_message_bytes: int = Field(
        default=DEFAULT_MAX_MESSAGE_BYTES,
        description="largest inbound message value accepted; a larger one is dead-lettered "
        "(`InvalidMessageError`)",
    )
    max_json_depth: int = Field(
        default=DEFAULT_MAX_JSON_DEPTH,
        description="deepest JSON nesting of an inbound message (the envelope is level 1); a deeper one "
        "is dead-lettered before it is parsed",
    )
    summary: Literal["auto", "live", "plain", "off"] = Field(
        default="auto",
        description="`live` (rich table), `plain` (lines on stdout), `off`; `auto`: live on a terminal",
    )
    summary_seconds: Seconds = Field(
        default=10.0, gt=0, description="period of the plain summary lines (more than 0)"
    )
    log_level: Annotated[
        Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], BeforeValidator(_upper)
    ] = Field(
        default="INFO", description="`DEBUG`, `INFO` (one line per record handled), `WARNING` or `ERROR`"
    )
    log_format: Literal["auto", "kv", "json"] = Field(
        default="auto",
        description="`json` (one object per line, with `trace_id` and `span_id` when a span is current), "
        "`kv` (logfmt `key=value`), or `auto`: `json` unless stderr is a terminal",
    )
    metrics: Flag = Field(
        default=True,
        description="keep Prometheus metrics (`pipeline_state_*` families, see `docs/operations.md`); "
        "with `--http` they are served at `/metrics` (operations token)",
    )
    metrics_store_seconds: Seconds = Field(
        default=10.0,
        description="the gauges read from the store (outbox, active runs, waiting facts) are read again "
        "at most this often, however often `/metrics` is scraped",
    )
    relay_batch_size: int = Field(default=100, ge=1, le=100_000, description="rows per relay pass")
    relay_max_attempts: int = Field(
        default=10, ge=1, description="failed publications before a row is parked"
    )
    relay_idle_seconds: Seconds = Field(default=0.5, description="relay poll period when nothing wakes it")
    relay_linger_seconds: Seconds = Field(
        default=0.005,
        description="after a wake-up, wait this long so one pass takes the rows of several units of work "
        "(passes that claim; rows handed off in memory go at once)",
    )
    relay_hand_off: Flag = Field(
        default=True,
        description="the SQL store hands the rows its commits write to this process's relay in memory "
        "(published without a claim); `0`: every row goes through the claim",
    )
    shutdown_seconds: Seconds = Field(
        default=15.0, description="bound on the relay's final flush at shutdown"
    )
    purge_seconds: Seconds = Field(
        default=600.0,
        description="period of the store's retention purge (published outbox rows, inbox entries, "
        "transition log, per the three `RETENTION_*` settings); `0` turns it off",
    )
    retention_published_hours: Hours = Field(
        default=DEFAULT_RETENTION_HOURS[0],
        description="how long a published outbox row is kept (those of a batch with a phase deadline "
        "pending stay); `none` keeps them for ever",
    )
    retention_inbox_hours: Hours = Field(
        default=DEFAULT_RETENTION_HOURS[1],
        description="how long the inbox remembers a processed `event_id` (a redelivery of it is a "
        "no-op until then): set it above the topics' retention and the longest dead-letter re-injection "
        "delay; `none` keeps it for ever",
    )
    retention_transitions_hours: Hours = Field(
        default=DEFAULT_RETENTION_HOURS[2],
        description="how long a transition log row (the audit trail) is kept; at least the inbox's; "
        "`none` (the default) keeps it for ever",
    )
    results_purge_seconds: Seconds = Field(
        default=600.0,
        description="`--consumers results`: period of the results inbox purge; `0` turns it off",
    )
    results_completion_retention_hours: float = Field(
        default=72.0,
        gt=0,
        le=MAX_RETENTION_HOURS,
        allow_inf_nan=False,
        description="`--consumers results`: how long the results inbox remembers a completion's "
        "`event_id` (outcomes, phase commands and skipped phases 24 h, registrations 72 h)",
    )

    @model_validator(mode="after")
    def _retention(self) -> Settings:
        try:
            retention_of(
                self.retention_published_hours, self.retention_inbox_hours, self.retention_transitions_hours
            )
        except ValueError as exc:
            raise ValueError(f"PIPELINE_STATE_RETENTION_TRANSITIONS_HOURS: {exc}") from exc
        return self

    @model_validator(mode="after")
    def _intake_limits(self) -> Settings:
        try:
            IntakeLimits(self.max_message_bytes, self.max_json_depth)
        except ValueError as exc:
            raise ValueError(
                f"intake limits (PIPELINE_STATE_MAX_MESSAGE_BYTES, ..._MAX_JSON_DEPTH): {exc}"
            ) from exc
        return self


SETTINGS_MODELS: tuple[type[EnvironmentSettings], ...] = (KafkaSettings, SqlSettings, Settings)
"""The models whose variables ``serve`` reads (besides the HTTP adapter's, with ``--http``)."""

ENVIRONMENT: Mapping[str, str] = {
    variable: meaning for model in SETTINGS_MODELS for variable, meaning in model.variables().items()
}
"""Every variable ``serve`` reads besides the HTTP adapter's, with its meaning."""


OTHER_VARIABLES = frozenset(
    {
        "PIPELINE_STATE_API",  # the operator commands' --api, --api-token, --as
        "PIPELINE_STATE_API_TOKEN",
        "PIPELINE_STATE_OPERATOR",
    }
)
"""Variables of the operator commands, which ``serve`` does not read but may share an
environment with."""


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """The ``PIPELINE_STATE_*`` names of ``environ`` that no setting reads (a misspelt one
    is otherwise ignored without a word): ``serve``'s, the HTTP adapter's (and their token
    ``_FILE`` forms) and the operator commands'; ``PIPELINE_STATE_TEST_*`` (the test suite's)
    are left out."""
    from pipeline_state_http.settings import Settings as HttpEnvSettings

    known = set(ENVIRONMENT) | set(HttpEnvSettings.variables()) | OTHER_VARIABLES
    return sorted(
        name
        for name in environ
        if name.startswith(ENV_PREFIX) and name not in known and not name.startswith(f"{ENV_PREFIX}TEST_")
    )


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
    relay_hand_off: bool = True
    shutdown_seconds: float = 15.0
    purge_seconds: float = 600.0
    retention_published_hours: float | None = DEFAULT_RETENTION_HOURS[0]
    retention_inbox_hours: float | None = DEFAULT_RETENTION_HOURS[1]
    retention_transitions_hours: float | None = DEFAULT_RETENTION_HOURS[2]
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
        return {option: getattr(self, field) for option, field in SQL_FIELDS.items()}

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

    def retention(self) -> Retention:
        """How long the store keeps its bookkeeping rows (:class:`~pipeline_state.ports.Retention`);
        raises :class:`SettingsError` when the three periods do not fit together."""
        try:
            return retention_of(
                self.retention_published_hours, self.retention_inbox_hours, self.retention_transitions_hours
            )
        except ValueError as exc:
            raise SettingsError(f"PIPELINE_STATE_RETENTION_*: {exc}") from exc

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

    def kafka_settings(self) -> KafkaSettings:
        """The Kafka adapter's settings of this deployment (for :func:`pipeline_state_kafka.open`)."""
        return KafkaSettings.from_environ(
            {},
            kafka=self.kafka,
            topic_prefix=self.topic_prefix,
            kafka_startup_timeout_seconds=self.consumer_settings().startup_timeout_seconds,
        )

    @classmethod
    def from_args(cls, args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> ServeSettings:
        """Settings from the parsed ``serve`` flags over the variables of ``environ`` (default:
        ``os.environ``): the SQL and Kafka adapters' :class:`~pipeline_state_sql.Settings` and
        :class:`~pipeline_state_kafka.Settings`, and this package's :class:`Settings`. Raises
        :class:`SettingsError` naming the flag or variable whose value is unusable."""
        try:
            own = Settings.from_environ(environ)
            sql = SqlSettings.from_environ(environ, **_given(store=getattr(args, "store", None)))
            if not is_memory_url(sql.store):
                check_store_url(sql.store, schema=sql.store_schema)
            kafka = KafkaSettings.from_environ(environ, **_given(kafka=getattr(args, "kafka", None)))
            bootstrap = kafka.bootstrap_servers()
        except (SqlSettingsError, KafkaSettingsError) as exc:
            raise SettingsError(str(exc)) from exc
        parse_host_port(bootstrap.split(",")[0])
        group_id = getattr(args, "group_id", None) or "pipeline-state"
        http = getattr(args, "http", None)
        settings = cls(
            kafka=bootstrap,
            store_url=sql.store,
            http=None if not http else parse_host_port(http),
            group_id=group_id,
            consumers=tuple(getattr(args, "consumers", None) or ()),
            http_insecure_no_auth=bool(getattr(args, "insecure_no_auth", False)),
            consumer=kafka.consumer_settings(group_id=group_id),
            producer=kafka.producer_settings(),
            topic_prefix=kafka.topic_prefix,
            create_topics=kafka.create_topics,
            topic_partitions=kafka.topic_partitions,
            replication_factor=kafka.replication_factor,
            dlq_max_message_bytes=kafka.dlq_max_message_bytes,
            store_upgrade=sql.store_upgrade,
            store_schema=sql.store_schema,
            outbox_lease_seconds=sql.outbox_lease_seconds,
            sqlite_synchronous=sql.sqlite_synchronous,
            profile_spec=getattr(args, "profile", None) or own.profile,
            relay_enabled=own.relay,
            **own.model_dump(exclude={"profile", "relay"}),
        )
        settings.profile()  # an unusable deadline setting fails here, before anything starts
        return settings


def _given(**values: Any) -> dict[str, Any]:
    """The flags that were given (``None``: not given, the variable or default applies)."""
    return {name: value for name, value in values.items() if value is not None}
