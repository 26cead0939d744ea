"""Turning on the OpenTelemetry SDK for ``serve``, from the standard ``OTEL_*`` variables.

The library itself only uses ``opentelemetry-api`` (no-op until a provider is installed).
``serve`` installs the SDK when the environment asks for traces, and only then:

* ``OTEL_SDK_DISABLED=true``: never;
* ``OTEL_TRACES_EXPORTER``: a comma-separated list of ``otlp`` (OTLP over HTTP/protobuf) and
  ``console`` (spans as JSON on stdout); ``none`` turns tracing off;
* without ``OTEL_TRACES_EXPORTER``: ``otlp`` when ``OTEL_EXPORTER_OTLP_ENDPOINT`` or
  ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is set, otherwise nothing.

The exporter, the batch span processor and the sampler read their own variables
(``OTEL_EXPORTER_OTLP_*``, ``OTEL_BSP_*``, ``OTEL_TRACES_SAMPLER``); ``OTEL_SERVICE_NAME``
defaults to ``pipeline-state``. The SDK and the exporter come with the ``otel`` extra
(``pip install 'pipeline-state[otel]'``).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

from opentelemetry import trace

from .settings import SettingsError

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

__all__ = ["DEFAULT_SERVICE_NAME", "EXPORTERS", "requested_exporters", "tracer_provider", "tracing_from"]

log = logging.getLogger("pipeline_state_service")

DEFAULT_SERVICE_NAME = "pipeline-state"
EXPORTERS = ("otlp", "console")
"""The values of ``OTEL_TRACES_EXPORTER`` that ``serve`` understands (besides ``none``)."""

_OTLP_PROTOCOLS = ("http/protobuf", "")


def requested_exporters(env: Mapping[str, str]) -> tuple[str, ...]:
    """The span exporters ``env`` asks for (empty: leave tracing off); raises
    :class:`~pipeline_state_service.settings.SettingsError` for a value it cannot honour."""
    disabled = env.get("OTEL_SDK_DISABLED", "").strip().lower()
    if disabled == "true":
        return ()
    if disabled not in ("", "false"):
        # The specification's boolean is "true" or not: anything else leaves the SDK on.
        log.warning("OTEL_SDK_DISABLED=%r is not 'true': tracing stays on as asked otherwise", disabled[:40])
    listed = env.get("OTEL_TRACES_EXPORTER", "").strip()
    if not listed:
        endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        names: tuple[str, ...] = ("otlp",) if endpoint and endpoint.strip() else ()
    else:
        names = tuple(dict.fromkeys(n.strip().lower() for n in listed.split(",") if n.strip()))
    if "none" in names:
        return ()
    unknown = [n for n in names if n not in EXPORTERS]
    if unknown:
        raise SettingsError(
            f"OTEL_TRACES_EXPORTER: unsupported exporter {unknown[0]!r} (use {', '.join(EXPORTERS)} or none)"
        )
    if "otlp" in names:  # asked for by name or by an endpoint alone: the protocol must be ours
        variable = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
        if not env.get(variable):
            variable = "OTEL_EXPORTER_OTLP_PROTOCOL"
        protocol = env.get(variable, "")
        if protocol.strip() not in _OTLP_PROTOCOLS:
            raise SettingsError(f"{variable}: only http/protobuf is supported, not {protocol!r}")
    return names


def _span_limits_error(exc: Exception) -> SettingsError:
    """The SDK's refusal of an ``OTEL_SPAN_*``/``OTEL_ATTRIBUTE_*`` limit, on one short line."""
    return SettingsError(f"OTEL_* span limits: {' '.join(str(exc).split())[:200]}")


def tracer_provider(env: Mapping[str, str]) -> TracerProvider | None:
    """An SDK tracer provider exporting to what ``env`` asks for, or ``None`` (tracing off).

    Raises :class:`~pipeline_state_service.settings.SettingsError` when the SDK is missing
    or refuses a setting (``OTEL_BSP_*``, the span limits ``OTEL_SPAN_*``/``OTEL_ATTRIBUTE_*``).
    """
    names = requested_exporters(env)
    if not names:
        return None
    try:
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        raise SettingsError(
            "OTEL_* asks for traces but opentelemetry-sdk is not installed: "
            "pip install 'pipeline-state[otel]'"
        ) from exc
    except (ValueError, OverflowError) as exc:  # the SDK reads its limits when first imported
        raise _span_limits_error(exc) from exc
    resource = Resource.create({SERVICE_NAME: env.get("OTEL_SERVICE_NAME") or DEFAULT_SERVICE_NAME})
    try:  # the provider reads OTEL_SPAN_*/OTEL_ATTRIBUTE_* limits itself and refuses bad ones
        provider = TracerProvider(resource=resource)
    except (ValueError, OverflowError) as exc:
        raise _span_limits_error(exc) from exc
    for name in names:
        exporter = _exporter(name)
        try:  # the processor reads OTEL_BSP_* itself and refuses values out of its range
            processor = BatchSpanProcessor(exporter)
        except ValueError as exc:
            raise SettingsError(f"OTEL_BSP_*: {exc}") from exc
        provider.add_span_processor(processor)
    return provider


def _exporter(name: str) -> SpanExporter:
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError as exc:
        raise SettingsError(
            "OTEL_* asks for OTLP traces but opentelemetry-exporter-otlp-proto-http is not installed: "
            "pip install 'pipeline-state[otel]'"
        ) from exc
    return OTLPSpanExporter()  # endpoint, headers, timeout: from OTEL_EXPORTER_OTLP_*


@contextlib.contextmanager
def tracing_from(env: Mapping[str, str] | None = None) -> Iterator[TracerProvider | None]:
    """Install :func:`tracer_provider` of ``env`` (default: the process environment) as the
    global provider for the body, then flush and shut it down."""
    provider = tracer_provider(os.environ if env is None else env)
    if provider is None:
        yield None
        return
    trace.set_tracer_provider(provider)
    try:
        yield provider
    finally:
        provider.shutdown()
