"""The service's metrics, scraped over real HTTP from a real database, and the Temporal SDK's
Prometheus endpoint and OpenTelemetry traces from a real worker on the dev server."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import date, datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import asyncpg
import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from prometheus_client.parser import text_string_to_metric_families
from temporalio.client import Client
from temporalio.runtime import Runtime
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.equipment.journal import Outcome, record_action
from activities.ledger import LedgerActivities, create_pool
from activities.projections import catch_up
from activities.service import ServiceActivities
from api.metrics import metrics_router
from client.telemetry import temporal_runtime, tracing_interceptor
from tests.conftest import free_port
from tests.event_stories import Story, invoice
from tests.harness import eventually
from tests.metrics_workflow import GreetingWorkflow, greet
from worker.sandbox import workflow_runner
from workflows.models import DomainEvent, EquipmentRequest, EventKind, NoticeKind, ServiceAction, StageAction

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture
async def pool(db_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(db_url)
    yield pool
    await pool.close()


async def serve(app: FastAPI) -> AsyncIterator[str]:
    """Serve ``app`` with uvicorn on a free loopback port until the test ends; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    serving = asyncio.create_task(server.serve())
    await eventually(lambda: server.started or serving.done(), timeout=10)
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, 10)


@pytest.fixture
async def metrics_url(pool: asyncpg.Pool) -> AsyncIterator[str]:
    """``GET /metrics`` as the API mounts it, on the test's database."""
    app = FastAPI()
    app.include_router(metrics_router(lambda: pool))
    async for url in serve(app):
        yield url


async def scrape(url: str) -> Samples:
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.get(f"{url}/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=")  # the Prometheus text format
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def family(samples: Samples, name: str) -> dict[frozenset[tuple[str, str]], float]:
    return {labels: value for (sample, labels), value in samples.items() if sample == name}


def labels(**values: str) -> frozenset[tuple[str, str]]:
    return frozenset(values.items())


# --- a ledger as the activities write it ------------------------------------------------------


def today() -> date:
    return datetime.now(timezone.utc).date()


def moment(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, 9, tzinfo=timezone.utc)


def stories() -> list[Story]:
    """Two invoices overdue in EUR at different stages, one disputed, one paid in RON, one not yet due,
    one sold to a factor."""
    d = today()
    warned = Story(invoice("M-WARNED", "CUST-1", 100_000, d - timedelta(days=40), d - timedelta(days=26)), moment(d - timedelta(days=40)))
    warned.stages((StageAction.REMINDER, moment(d - timedelta(days=25))), (StageAction.WARNING, moment(d - timedelta(days=21))))
    warned.paid(moment(d - timedelta(days=20)), 30_000, "PAY-1", balance=70_000)
    warned.paid(moment(d - timedelta(days=19)), 10_000, "PAY-2", balance=60_000)

    suspended = Story(invoice("M-SUSP", "CUST-2", 50_000, d - timedelta(days=60), d - timedelta(days=46)), moment(d - timedelta(days=60)))
    suspended.stages(
        (StageAction.REMINDER, moment(d - timedelta(days=45))),
        (StageAction.WARNING, moment(d - timedelta(days=41))),
    )
    suspended.fee(moment(d - timedelta(days=36)), 1_500)
    suspended.stages(
        (StageAction.LATE_FEE, moment(d - timedelta(days=36))),
        (StageAction.ULTIMATUM, moment(d - timedelta(days=31))),
        (StageAction.SUSPEND, moment(d - timedelta(days=26))),
    )
    suspended.service(EventKind.SERVICE_SUSPENDED, moment(d - timedelta(days=26)))

    disputed = Story(invoice("M-DISP", "CUST-3", 20_000, d - timedelta(days=20), d - timedelta(days=6)), moment(d - timedelta(days=20)))
    disputed.stages((StageAction.REMINDER, moment(d - timedelta(days=5))))
    disputed.add(EventKind.DISPUTE_OPENED, moment(d - timedelta(days=4)), reason="work not delivered")

    paid = Story(
        invoice("M-PAID", "CUST-4", 200_000, d - timedelta(days=30), d - timedelta(days=16), currency="RON"),
        moment(d - timedelta(days=30)),
    )
    paid.paid(moment(d - timedelta(days=17)), 200_000, "PAY-3", balance=0)
    paid.closed(moment(d - timedelta(days=17)), "paid", paid=200_000)

    not_due = Story(
        invoice("M-NEW", "CUST-5", 80_000, d - timedelta(days=2), d + timedelta(days=12), currency="RON"),
        moment(d - timedelta(days=2)),
    )
    factored = Story(invoice("M-SOLD", "CUST-6", 30_000, d - timedelta(days=64), d - timedelta(days=50)), moment(d - timedelta(days=64)))
    factored.add(EventKind.INVOICE_FACTORED, moment(d - timedelta(days=40)), factor="FACTOR-1", advance_minor=24_000, balance_minor=30_000)
    factored.closed(moment(d - timedelta(days=40)), "factored")  # closed, though the client still owes the factor
    return [warned, suspended, disputed, paid, not_due, factored]


async def record_notice(pool: asyncpg.Pool, key: str, invoice_id: str, kind: str, channel: str, status: str) -> None:
    """A delivery record as the notice activity leaves it."""
    await pool.execute(
        "INSERT INTO notice_deliveries (idempotency_key, channel, invoice_id, kind, recipient, message_id, status)"
        " VALUES ($1, $2, $3, $4, 'ana@client.example', $5, $6)",
        key,
        channel,
        invoice_id,
        kind,
        f"<{key}@dunning.invalid>",
        status,
    )


def equipment(key: str, equipment_id: str = "srv-1") -> EquipmentRequest:
    return EquipmentRequest(
        idempotency_key=key,
        equipment_id=equipment_id,
        customer_id="CUST-2",
        invoice_id="M-SUSP",
        reason="suspension for non-payment",
        requested_by="invoice-M-SUSP",
    )


def service_action(key: str) -> ServiceAction:
    return ServiceAction(
        idempotency_key=key,
        customer_id="CUST-2",
        invoice_id="M-SUSP",
        remote_disconnect_authorized=True,
        equipment_ids=["srv-1"],
        reason="suspension for non-payment",
    )


@pytest.fixture
async def ledger(pool: asyncpg.Pool) -> None:
    ledger = LedgerActivities(pool)
    await ledger.append_events([event for story in stories() for event in story.events])
    await catch_up(pool)

    await record_notice(pool, "M-WARNED/reminder", "M-WARNED", NoticeKind.REMINDER, "email", "sent")
    await record_notice(pool, "M-WARNED/reminder", "M-WARNED", NoticeKind.REMINDER, "webhook", "failed")
    await record_notice(pool, "M-WARNED/warning", "M-WARNED", NoticeKind.WARNING, "email", "sent")
    await record_notice(pool, "M-SUSP/reminder", "M-SUSP", NoticeKind.REMINDER, "email", "sent")
    await record_notice(pool, "M-SUSP/ultimatum", "M-SUSP", NoticeKind.ULTIMATUM, "email", "sending")  # not ended yet

    await record_action(pool, equipment("M-SUSP/suspend/srv-1"), "suspend", Outcome.FAILED, detail="connection refused")
    await record_action(pool, equipment("M-SUSP/suspend/srv-1"), "suspend", Outcome.CHANGED, state="Off")
    await record_action(pool, equipment("M-SUSP/suspend/srv-1"), "suspend", Outcome.CHANGED, state="Off")  # a retry
    await record_action(pool, equipment("M-SUSP/suspend/port-7", "port-7"), "suspend", Outcome.CHANGED, state="down")
    await record_action(pool, equipment("M-SUSP/restore/srv-1"), "restore", Outcome.DRY_RUN, state="On", dry_run=True)

    service = ServiceActivities(pool)
    await service.suspend_service(service_action("M-SUSP/suspend"))
    await service.suspend_service(service_action("M-SUSP/suspend"))  # a retry
    await service.restore_service(service_action("M-SUSP/restore"))


# --- the service's metrics ----------------------------------------------------------------------


async def test_metrics_endpoint_serves_the_service_metrics_from_the_database(pool, ledger, metrics_url):
    behind = Story(invoice("M-LATE", "CUST-6", 5_000, today(), today() + timedelta(days=14)), moment(today()))
    behind.add(EventKind.INVOICE_RESENT, moment(today()), balance_minor=5_000)
    await LedgerActivities(pool).append_events(behind.events)  # not projected yet

    samples = await scrape(metrics_url)

    assert family(samples, "dunning_notices_total") == {
        labels(kind="reminder", channel="email", status="sent"): 2,
        labels(kind="reminder", channel="webhook", status="failed"): 1,
        labels(kind="warning", channel="email", status="sent"): 1,
    }
    assert family(samples, "dunning_equipment_actions_total") == {
        labels(action="suspend", outcome="changed"): 2,
        labels(action="suspend", outcome="failed"): 1,
        labels(action="restore", outcome="dry_run"): 1,
    }
    assert family(samples, "dunning_service_actions_total") == {labels(action="suspend"): 1, labels(action="restore"): 1}
    assert family(samples, "dunning_payments_recorded_total") == {labels(currency="EUR"): 2, labels(currency="RON"): 1}
    assert family(samples, "dunning_payments_recorded_amount_minor_total") == {
        labels(currency="EUR"): 40_000,
        labels(currency="RON"): 200_000,
    }
    assert family(samples, "dunning_overdue_amount_minor") == {
        labels(state="warned", currency="EUR"): 60_000,
        labels(state="suspended", currency="EUR"): 51_500,
        labels(state="disputed", currency="EUR"): 20_000,
    }
    assert family(samples, "dunning_overdue_invoices") == {
        labels(state="warned", currency="EUR"): 1,
        labels(state="suspended", currency="EUR"): 1,
        labels(state="disputed", currency="EUR"): 1,
    }
    assert family(samples, "dunning_projection_lag_events") == {labels(): 2}
    assert 0 <= family(samples, "dunning_projection_lag_seconds")[labels()] < 60
    assert family(samples, "dunning_projection_quarantined_events") == {labels(): 0}


async def test_metrics_follow_the_database_at_every_scrape(pool, ledger, metrics_url):
    before = await scrape(metrics_url)
    assert family(before, "dunning_projection_lag_events") == {labels(): 0}
    assert family(before, "dunning_projection_lag_seconds") == {labels(): 0}

    warned = stories()[0]
    paid_in_full = DomainEvent(
        invoice_id=warned.invoice.invoice_id,
        sequence=len(warned.events) + 1,
        kind=EventKind.PAYMENT_RECORDED,
        occurred_at=moment(today()),
        data={"payment_id": "PAY-4", "amount_minor": 60_000, "received_at": moment(today()).isoformat(), "balance_minor": 0},
    )
    await LedgerActivities(pool).append_events([paid_in_full])
    await catch_up(pool)

    after = await scrape(metrics_url)
    assert family(after, "dunning_payments_recorded_total")[labels(currency="EUR")] == 3
    assert family(after, "dunning_payments_recorded_amount_minor_total")[labels(currency="EUR")] == 100_000
    assert labels(state="warned", currency="EUR") not in family(after, "dunning_overdue_amount_minor")


async def test_metrics_answer_503_while_the_database_does_not(db_url):
    pool = await create_pool(db_url)
    app = FastAPI()
    app.include_router(metrics_router(lambda: pool))
    await pool.close()
    async for url in serve(app):
        async with httpx.AsyncClient(timeout=10) as http:
            response = await http.get(f"{url}/metrics")
        assert response.status_code == 503
        assert response.text.startswith("metrics unavailable: the database does not answer")


# --- the Temporal SDK's metrics and traces ----------------------------------------------------------


async def run_greeting(client: Client) -> str:
    queue = f"metrics-{uuid.uuid4().hex[:8]}"
    async with Worker(
        client, task_queue=queue, workflows=[GreetingWorkflow], activities=[greet], workflow_runner=workflow_runner()
    ):
        return await client.execute_workflow(
            GreetingWorkflow.run, "Ana", id=f"greeting-{uuid.uuid4().hex[:8]}", task_queue=queue,
            execution_timeout=timedelta(seconds=30),
        )


async def test_the_worker_serves_the_sdk_metrics_in_prometheus_format(dev_env: WorkflowEnvironment):
    bind = f"127.0.0.1:{free_port()}"
    client = await Client.connect(
        dev_env.client.service_client.config.target_host,
        namespace=dev_env.client.namespace,
        runtime=temporal_runtime(bind),
    )
    assert await run_greeting(client) == "Hello, Ana"
    assert temporal_runtime(bind) is client.service_client.config.runtime  # a second client shares the port

    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.get(f"http://{bind}/metrics")
    assert response.status_code == 200
    names = {family.name for family in text_string_to_metric_families(response.text)}
    assert {"temporal_workflow_completed", "temporal_activity_execution_latency", "temporal_request"} <= names


def test_without_a_bind_address_the_runtime_is_the_default_one():
    assert temporal_runtime(None) is Runtime.default()


class OtlpReceiver(BaseHTTPRequestHandler):
    """An OTLP/HTTP trace receiver that keeps the span names it is sent."""

    spans: list[str]

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers["Content-Length"]))
        request = ExportTraceServiceRequest.FromString(body)
        for resource in request.resource_spans:
            service = next(a.value.string_value for a in resource.resource.attributes if a.key == "service.name")
            for scope in resource.scope_spans:
                self.spans.extend(f"{service}: {span.name}" for span in scope.spans)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def otlp_receiver() -> Iterator[tuple[str, list[str]]]:
    spans: list[str] = []
    handler = type("Receiver", (OtlpReceiver,), {"spans": spans})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", spans
    server.shutdown()
    thread.join(5)


async def test_traces_go_to_the_otlp_endpoint_through_the_temporal_interceptor(dev_env, otlp_receiver, monkeypatch):
    endpoint, spans = otlp_receiver
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    client = await Client.connect(
        dev_env.client.service_client.config.target_host,
        namespace=dev_env.client.namespace,
        interceptors=[tracing_interceptor("dunning-test")],
    )
    assert await run_greeting(client) == "Hello, Ana"

    expected = {
        "dunning-test: StartWorkflow:GreetingWorkflow",
        "dunning-test: RunWorkflow:GreetingWorkflow",
        "dunning-test: StartActivity:greet",
        "dunning-test: RunActivity:greet",
    }
    await eventually(lambda: expected <= set(spans), timeout=10)


async def test_without_an_otlp_endpoint_no_span_is_exported(dev_env, otlp_receiver, monkeypatch):
    endpoint, spans = otlp_receiver
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    interceptor = tracing_interceptor("dunning-quiet")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)  # too late: the exporter is chosen at creation
    client = await Client.connect(
        dev_env.client.service_client.config.target_host, namespace=dev_env.client.namespace, interceptors=[interceptor]
    )
    assert await run_greeting(client) == "Hello, Ana"
    await asyncio.sleep(0.5)
    assert spans == []
