"""The service's own metrics (notices, equipment cuts and restores, payments, amounts overdue,
projection lag and quarantine), read from Postgres at scrape time, so every process serves the same
truth and a restart loses nothing: ``scrape_service_metrics`` renders them, ``metrics_router`` serves
them at ``GET /metrics`` of the API.

The Temporal SDK's own metrics and the OpenTelemetry traces are wired into the client
(``client.telemetry``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

import asyncpg
from fastapi import APIRouter
from fastapi.responses import PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from activities.projections import CLOSED_STATES, projection_lag


@dataclass(frozen=True)
class ServiceMetric:
    """One metric family of the service. A queried one selects its label values (in ``labels``
    order) followed by its value; ``arguments`` are the query's parameters."""

    name: str
    help: str
    type: Literal["counter", "gauge"]
    labels: tuple[str, ...] = ()
    query: str = ""
    arguments: tuple[object, ...] = ()


PAYMENTS_BY_CURRENCY = """
SELECT issued.data->'invoice'->>'currency' AS currency, {value}
FROM invoice_events payment
JOIN invoice_events issued ON issued.invoice_id = payment.invoice_id AND issued.kind = 'invoice_issued'
WHERE payment.kind = 'payment_recorded'
GROUP BY 1 ORDER BY 1
"""

# Open invoices past their due date (by the UTC date, as the projections' customer view counts).
OVERDUE_BY_STATE = """
SELECT state, currency, {value}
FROM projected_invoices
WHERE state <> ALL($1::text[]) AND balance_minor > 0 AND due_date < (now() AT TIME ZONE 'UTC')::date
GROUP BY 1, 2 ORDER BY 1, 2
"""

QUERIED_METRICS = (
    ServiceMetric(
        "dunning_notices",
        "Notice deliveries that ended, by notice kind, channel and status (sent, or failed for good).",
        "counter",
        ("kind", "channel", "status"),
        "SELECT kind, channel, status, count(*) FROM notice_deliveries"
        " WHERE status IN ('sent', 'failed') GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
    ),
    ServiceMetric(
        "dunning_equipment_actions",
        "Equipment cuts (suspend) and restores, every attempt by its outcome.",
        "counter",
        ("action", "outcome"),
        "SELECT action, outcome, count(*) FROM equipment_actions GROUP BY 1, 2 ORDER BY 1, 2",
    ),
    ServiceMetric(
        "dunning_service_actions",
        "Support and new orders blocked (suspend) or unblocked (restore) for an invoice.",
        "counter",
        ("action",),
        "SELECT action, count(*) FROM service_actions GROUP BY 1 ORDER BY 1",
    ),
    ServiceMetric(
        "dunning_payments_recorded",
        "Payments recorded on invoices, by the invoice's currency.",
        "counter",
        ("currency",),
        PAYMENTS_BY_CURRENCY.format(value="count(*)"),
    ),
    ServiceMetric(
        "dunning_payments_recorded_amount_minor",
        "Amount of the payments recorded on invoices, in minor units (cents) of the currency.",
        "counter",
        ("currency",),
        PAYMENTS_BY_CURRENCY.format(value="sum((payment.data->>'amount_minor')::bigint)"),
    ),
    ServiceMetric(
        "dunning_overdue_amount_minor",
        "Balance of open invoices past their due date, in minor units, by state (the escalation stage,"
        " or disputed / payment_plan while paused) and currency.",
        "gauge",
        ("state", "currency"),
        OVERDUE_BY_STATE.format(value="sum(balance_minor)"),
        (tuple(CLOSED_STATES),),
    ),
    ServiceMetric(
        "dunning_overdue_invoices",
        "Open invoices past their due date, by state and currency.",
        "gauge",
        ("state", "currency"),
        OVERDUE_BY_STATE.format(value="count(*)"),
        (tuple(CLOSED_STATES),),
    ),
    ServiceMetric(
        "dunning_projection_quarantined_events",
        "Events the projector could not apply, left out of the read models until a retry applies them"
        " (dunning projections quarantine list).",
        "gauge",
        (),
        "SELECT count(*) FROM projection_quarantine",
    ),
)
PROJECTION_LAG_EVENTS = ServiceMetric("dunning_projection_lag_events", "Events appended but not yet projected.", "gauge")
PROJECTION_LAG_SECONDS = ServiceMetric(
    "dunning_projection_lag_seconds", "Age of the oldest event not yet projected (0 when caught up).", "gauge"
)

Sample = tuple[tuple[str, ...], float]


@dataclass(frozen=True)
class Reading:
    """The samples of one metric family at one scrape."""

    metric: ServiceMetric
    samples: list[Sample]


async def read_service_metrics(pool: asyncpg.Pool) -> list[Reading]:
    """Every service metric; the counts and sums come from one consistent snapshot of the database."""
    readings = []
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        for metric in QUERIED_METRICS:
            rows = await conn.fetch(metric.query, *metric.arguments)
            readings.append(Reading(metric, [(tuple(str(v) for v in row[:-1]), float(row[-1])) for row in rows]))
    lag = await projection_lag(pool)
    readings.append(Reading(PROJECTION_LAG_EVENTS, [((), float(lag.events_behind))]))
    readings.append(Reading(PROJECTION_LAG_SECONDS, [((), lag.seconds_behind)]))
    return readings


class ReadingsCollector(Collector):
    """Serves readings taken beforehand (a Prometheus collector must be synchronous, asyncpg is not)."""

    def __init__(self, readings: list[Reading]) -> None:
        self.readings = readings

    def collect(self) -> Iterator[Metric]:
        for reading in self.readings:
            kind = CounterMetricFamily if reading.metric.type == "counter" else GaugeMetricFamily
            family = kind(reading.metric.name, reading.metric.help, labels=reading.metric.labels)
            for labels, value in reading.samples:
                family.add_metric(labels, value)
            yield family


async def scrape_service_metrics(pool: asyncpg.Pool) -> bytes:
    """The service's metrics in the Prometheus text format, read now."""
    registry = CollectorRegistry()
    registry.register(ReadingsCollector(await read_service_metrics(pool)))
    return generate_latest(registry)


def metrics_router(pool: Callable[[], asyncpg.Pool]) -> APIRouter:
    """``GET /metrics`` for the API: the service's metrics; 503 while the database does not answer.

    ``pool`` returns the pool when a scrape comes (the API opens it in its lifespan).
    """
    router = APIRouter()

    @router.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        try:
            body = await scrape_service_metrics(pool())
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as err:
            return PlainTextResponse(f"metrics unavailable: the database does not answer ({err})", status_code=503)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return router
