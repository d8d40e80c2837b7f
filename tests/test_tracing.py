"""Traces, sent to a real OTLP/HTTP receiver on loopback: one API request that starts an invoice workflow
is one trace, from the HTTP client through FastAPI and the Temporal plugin to the activity's queries.

Tracing is per process (a global tracer provider, patched asyncpg and httpx), so this module turns it on
before its API stack starts and turns the instrumentation off again when the module is done.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from opentelemetry import trace
from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span as SpanProto

from client.telemetry import tracing_enabled
from tests.api_stack import ApiStack, eventually, invoice_json


@dataclass(frozen=True)
class ReceivedSpan:
    """A span as the receiver got it: ids in hex, the instrumentation scope that made it."""

    service: str
    scope: str
    name: str
    kind: int
    trace_id: str
    span_id: str
    parent_id: str


class OtlpReceiver(BaseHTTPRequestHandler):
    """An OTLP/HTTP trace receiver that keeps every span it is sent."""

    spans: list[ReceivedSpan]

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        request = ExportTraceServiceRequest.FromString(self.rfile.read(int(self.headers["Content-Length"])))
        for resource in request.resource_spans:
            service = next(a.value.string_value for a in resource.resource.attributes if a.key == "service.name")
            for scope in resource.scope_spans:
                self.spans.extend(
                    ReceivedSpan(
                        service, scope.scope.name, span.name, span.kind,
                        span.trace_id.hex(), span.span_id.hex(), span.parent_span_id.hex(),
                    )
                    for span in scope.spans
                )
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def otlp_receiver() -> Iterator[tuple[str, list[ReceivedSpan]]]:
    spans: list[ReceivedSpan] = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), type("Receiver", (OtlpReceiver,), {"spans": spans}))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", spans
    server.shutdown()
    thread.join(5)


@pytest.fixture(scope="module", autouse=True)
def traced(otlp_receiver: tuple[str, list[ReceivedSpan]]) -> Iterator[list[ReceivedSpan]]:
    """Tracing on for this module's stack (autouse: set up before ``api_stack`` connects), off after it."""
    endpoint, spans = otlp_receiver
    tracing_enabled.cache_clear()
    with pytest.MonkeyPatch.context() as env:
        env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
        env.setenv("OTEL_SERVICE_NAME", "dunning-traced")
        env.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
        assert tracing_enabled()
        yield spans
    AsyncPGInstrumentor().uninstrument()
    HTTPXClientInstrumentor().uninstrument()
    provider = trace.get_tracer_provider()
    assert hasattr(provider, "shutdown")
    provider.shutdown()
    tracing_enabled.cache_clear()


async def test_one_request_that_starts_a_workflow_is_one_trace(api_stack: ApiStack, traced: list[ReceivedSpan]):
    invoice = invoice_json()
    async with api_stack.http() as http:  # an inline policy: ops
        created = await http.post("/invoices", json=invoice)
    assert created.status_code == 201, created.text

    def spans_of(trace_id: str, **match: object) -> list[ReceivedSpan]:
        return [s for s in list(traced) if s.trace_id == trace_id and all(getattr(s, k) == v for k, v in match.items())]

    async def activity_queried() -> list[ReceivedSpan]:
        request = [s for s in list(traced) if s.scope.endswith(".httpx") and s.kind == SpanProto.SPAN_KIND_CLIENT]
        if not request:
            return []
        trace_id = request[-1].trace_id
        activities = {s.span_id for s in spans_of(trace_id) if s.name.startswith("RunActivity:")}
        return [s for s in spans_of(trace_id) if s.scope.endswith(".asyncpg") and s.parent_id in activities]

    queries = await eventually(activity_queried, timeout=30)
    trace_id = queries[0].trace_id
    (request,) = spans_of(trace_id, kind=SpanProto.SPAN_KIND_CLIENT, parent_id="")  # the root: the httpx call
    assert request.scope.endswith(".httpx")
    (server,) = spans_of(trace_id, kind=SpanProto.SPAN_KIND_SERVER, name="POST /invoices")
    assert server.scope == "fastapi" and server.parent_id == request.span_id
    (start,) = spans_of(trace_id, name="StartWorkflow:InvoiceWorkflow")
    parents = {s.span_id: s.parent_id for s in spans_of(trace_id)}
    ancestor = start.parent_id
    while ancestor and ancestor != server.span_id:
        ancestor = parents.get(ancestor, "")
    assert ancestor == server.span_id, "the workflow is started inside the request's span"
    assert {s.service for s in spans_of(trace_id)} == {"dunning-traced"}

