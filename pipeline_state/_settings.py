"""The shape every adapter's settings share: a pydantic-settings model of ``PIPELINE_STATE_*``.

Each adapter (``pipeline_state_sql``, ``pipeline_state_kafka``, ``pipeline_state_http``) and
the composition root (``pipeline_state_service``) declares one ``Settings`` class on
:class:`EnvironmentSettings`: a field ``kafka_max_records`` is the variable
``PIPELINE_STATE_KAFKA_MAX_RECORDS``, its description and default are what the package
README's table of variables shows (:func:`variables_table`, regenerated from the models), and
a value that does not parse raises the adapter's own error (:attr:`EnvironmentSettings.error`,
a :class:`~pipeline_state.errors.PipelineStateError`) naming the variable.

Only the adapters import this module (``pydantic-settings`` is a dependency of the core all
the same, so every module of the package imports); the core itself reads no environment.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, Self

from pydantic import ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from .errors import PipelineStateError

__all__ = ["ENV_PREFIX", "EnvironmentSettings", "replace_block", "variables_table"]

ENV_PREFIX = "PIPELINE_STATE_"
"""Put before every field name to form its environment variable."""

_ENVIRON: contextvars.ContextVar[Mapping[str, str] | None] = contextvars.ContextVar(
    "pipeline_state_environ", default=None
)


class _MappingSource(EnvSettingsSource):
    """The environment source, reading a given mapping instead of ``os.environ``."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._given = environ
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return {name.lower(): value for name, value in self._given.items() if value != ""}


class EnvironmentSettings(BaseSettings):
    """Settings read from ``PIPELINE_STATE_<FIELD>`` variables of ``os.environ`` (empty ones
    count as unset), then from keyword arguments, which win; :meth:`from_environ` reads a
    given mapping instead. No ``.env`` file and no secrets directory are read: a deployment
    sets variables. A value that does not parse raises :attr:`error` naming the variable,
    however the settings are built."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_ignore_empty=True,
        extra="ignore",
        frozen=True,
        case_sensitive=False,
    )

    error: ClassVar[type[Exception]] = PipelineStateError
    """What :meth:`from_environ` raises for a value that does not parse (each adapter sets
    its own error class)."""

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise type(self).error(type(self).describe(exc)) from exc
        except SettingsError as exc:  # a source could not read a value at all
            raise type(self).error(f"{exc}: {exc.__cause__}" if exc.__cause__ else str(exc)) from exc

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        environ = _ENVIRON.get()
        return (init_settings, env_settings if environ is None else _MappingSource(settings_cls, environ))

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Self:
        """The settings of ``environ`` (default: ``os.environ``), with ``overrides`` (field
        names) on top. Raises :attr:`error` naming the variable whose value is unusable."""
        token = _ENVIRON.set(environ)
        try:
            return cls(**overrides)
        finally:
            _ENVIRON.reset(token)

    def replace(self, **overrides: Any) -> Self:
        """A copy with ``overrides`` (field names), validated as :meth:`from_environ` does;
        no variable is read again."""
        return type(self).from_environ({}, **{**dict(self), **overrides})

    @classmethod
    def variable(cls, field: str) -> str:
        """The environment variable of ``field``."""
        return f"{ENV_PREFIX}{field.upper()}"

    @classmethod
    def variables(cls) -> dict[str, str]:
        """Every variable this model reads, with its description."""
        return {cls.variable(name): info.description or "" for name, info in cls.model_fields.items()}

    @classmethod
    def describe(cls, error: ValidationError) -> str:
        """One line per problem: ``VARIABLE: what is wrong, got 'value'``."""
        lines = []
        for problem in error.errors():
            location = problem.get("loc") or ()
            field = str(location[0]) if location else ""
            message = str(problem.get("msg", "invalid value")).removeprefix("Value error, ")
            if field not in cls.model_fields:  # a check of several fields names them itself
                lines.append(message)
                continue
            if "got " not in message and "input" in problem:
                message = f"{message}, got {problem['input']!r}"
            lines.append(f"{cls.variable(field)}: {message}")
        return "; ".join(lines)


def _default_cell(info: FieldInfo) -> str:
    shown = info.json_schema_extra.get("shown_default") if isinstance(info.json_schema_extra, dict) else None
    if shown is not None:
        return str(shown)
    default = info.get_default(call_default_factory=True)
    if default is None or default == "" or default == ():
        return "(none)"
    if isinstance(default, bool):
        return f"`{int(default)}`"
    return f"`{default}`"


def variables_table(models: Iterable[type[EnvironmentSettings]]) -> list[str]:
    """A Markdown table of the variables of ``models``: variable, default, meaning."""
    lines = ["| variable | default | meaning |", "|---|---|---|"]
    for model in models:
        for name, info in model.model_fields.items():
            meaning = (info.description or "").replace("|", "\\|").replace("\n", " ")
            lines.append(f"| `{model.variable(name)}` | {_default_cell(info)} | {meaning} |")
    return lines


def replace_block(text: str, name: str, lines: Iterable[str]) -> str:
    """``text`` with the lines between ``<!-- BEGIN name -->`` and ``<!-- END name -->``
    replaced by ``lines``; raises :class:`ValueError` when the markers are missing."""
    begin, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
    head, found, rest = text.partition(begin)
    _, found_end, tail = rest.partition(end)
    if not found or not found_end:
        raise ValueError(f"the markers {begin} and {end} are missing")
    body = "\n".join(lines)
    return f"{head}{begin}\n{body}\n{end}{tail}"
