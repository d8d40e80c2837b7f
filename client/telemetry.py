"""Telemetry every process of the service carries: the SDK's Prometheus exporter and OpenTelemetry traces.

- ``temporal_runtime``: a Temporal runtime whose SDK metrics (workflow and activity task latencies,
  polls, failures, ...) are served in Prometheus format by the worker process itself.
- ``tracing_enabled`` / ``temporal_plugins``: when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set, a process-wide
  tracer provider exporting over OTLP/HTTP (FastAPI traces its requests with it), asyncpg and httpx
  instrumented, and Temporal's ``OpenTelemetryPlugin`` for client calls, workflows and activities (the
  OpenTelemetry SDK reads its standard ``OTEL_*`` variables itself: headers, batch delays). Unset,
  nothing is traced or patched. Every process sets it up through ``client.temporal.connect``.
"""

from __future__ import annotations

import functools
import os

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from temporalio.contrib.opentelemetry import OpenTelemetryPlugin, create_tracer_provider
from temporalio.plugin import SimplePlugin
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

# --- the Temporal SDK's metrics -------------------------------------------------------------


@functools.cache
def temporal_runtime(prometheus_bind: str | None) -> Runtime:
    """The runtime for ``Client.connect(runtime=...)``: with ``prometheus_bind`` (``host:port``) the
    SDK serves its metrics at ``http://<bind>/metrics``; without it, the default runtime (no export).

    One runtime per address and process: every client asking for the same address shares it.
    """
    if prometheus_bind is None:
        return Runtime.default()
    return Runtime(telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address=prometheus_bind)))


# --- traces ---------------------------------------------------------------------------------


OTLP_ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
SERVICE = "dunning"


@functools.cache
def tracing_enabled() -> bool:
    """Whether this process traces; the first call sets tracing up, once per process.

    Only when ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or its traces-only variant) is set: then the global tracer
    provider is Temporal's replay-safe one (workflow code may be traced with it), exporting over
    OTLP/HTTP in batches, named ``OTEL_SERVICE_NAME`` or ``dunning``, and every asyncpg query and httpx
    request of the process is a span; FastAPI (0.143 on) traces every request with the global provider.
    """
    if not any(os.environ.get(variable) for variable in OTLP_ENDPOINT_VARIABLES):
        return False
    provider = create_tracer_provider(resource=Resource.create({SERVICE_NAME: os.environ.get("OTEL_SERVICE_NAME") or SERVICE}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    AsyncPGInstrumentor().instrument()
    HTTPXClientInstrumentor().instrument()
    return True


def temporal_plugins() -> list[SimplePlugin]:
    """The plugins for ``Client.connect(plugins=...)`` (workers built on the client inherit them):
    ``OpenTelemetryPlugin`` with spans for starting and running workflows and activities, the trace
    context carried in Temporal headers from caller to workflow to activity; none when not tracing.
    """
    return [OpenTelemetryPlugin(add_temporal_spans=True)] if tracing_enabled() else []
