"""Telemetry every Temporal client of the service carries: the SDK's Prometheus exporter and OpenTelemetry.

- ``temporal_runtime``: a Temporal runtime whose SDK metrics (workflow and activity task latencies,
  polls, failures, ...) are served in Prometheus format by the worker process itself.
- ``tracing_interceptor``: OpenTelemetry spans for client calls, workflows and activities,
  exported over OTLP/HTTP when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set (the OpenTelemetry SDK reads
  its standard ``OTEL_*`` variables itself: headers, service name, batch delays).
"""

from __future__ import annotations

import functools
import os

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from temporalio.contrib.opentelemetry import TracingInterceptor
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


def tracing_interceptor(service_name: str = "dunning") -> TracingInterceptor:
    """The interceptor for ``Client.connect(interceptors=[...])``: spans for client calls, workflows
    and activities, with the trace context carried in Temporal headers from caller to activity.

    Spans are exported over OTLP/HTTP only when ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or its traces-only
    variant) is set; otherwise they only carry the context along. ``OTEL_SERVICE_NAME`` overrides
    ``service_name``. Call it once per process: each call makes a tracer provider of its own.
    """
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: os.environ.get("OTEL_SERVICE_NAME") or service_name}))
    if any(os.environ.get(variable) for variable in OTLP_ENDPOINT_VARIABLES):
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return TracingInterceptor(provider.get_tracer("dunning"))
