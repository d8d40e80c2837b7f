"""Measurement 4: domain events appended and projected through asyncpg, against a raw COPY of the same rows.

The events are those of paid invoices (issued, reminder, warning, late fee, payment: twelve
each), appended with ``append_events`` in the batches the workflow writes them (one per step,
several invoices at once, as activity slots would), then projected with ``catch_up``. The
baseline COPYs the same rows into the same table of a second database. Two variants show what
batching buys: every invoice's events in one call, and a few hundred events per call.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone

import asyncpg

from activities.ledger import LedgerActivities, create_pool
from activities.projections import catch_up
from bench.report import Figure, Measurement, Target
from bench.stack import BenchStack, new_database
from bench.workload import Say, boundary_invoice, paid_invoice_events, run_bounded
from workflows.models import DomainEvent

RATIO_TARGET = Target(on="ratio", op=">=", bound=0.5)
COPY_COLUMNS = ["invoice_id", "sequence", "kind", "occurred_at", "data"]
LARGE_BATCH = 500


@dataclass(frozen=True)
class ProjectionSizes:
    invoices: int
    append_concurrency: int = 8  # appends in flight at once, as activity slots would run them


def _batches(count: int) -> list[list[list[DomainEvent]]]:
    """Per invoice, its events in the batches its workflow appends."""
    boundary = datetime.combine(date.today() - timedelta(days=30), datetime.min.time(), timezone.utc)
    return [paid_invoice_events(boundary_invoice(f"P-{n}", boundary)) for n in range(count)]


async def _append_and_project(
    pool: asyncpg.Pool, calls: list[list[DomainEvent]], concurrency: int
) -> tuple[float, float]:
    """Seconds to append ``calls`` (one ``append_events`` each), then to project everything."""
    ledger = LedgerActivities(pool)
    began = time.perf_counter()
    outcomes = await run_bounded([lambda c=c: ledger.append_events(c) for c in calls], concurrency)
    failures = [o for o in outcomes if isinstance(o, BaseException)]
    if failures:
        raise RuntimeError(f"{len(failures)} appends failed: {failures[0]}")
    appended = time.perf_counter()
    await catch_up(pool)
    return appended - began, time.perf_counter() - appended


async def _copy(url: str, events: list[DomainEvent]) -> float:
    rows = [
        (e.invoice_id, e.sequence, e.kind.value, e.occurred_at, json.dumps(e.model_dump(mode="json")["data"]))
        for e in events
    ]
    conn = await asyncpg.connect(url)
    try:
        began = time.perf_counter()
        await conn.copy_records_to_table("invoice_events", records=rows, columns=COPY_COLUMNS)
        return time.perf_counter() - began
    finally:
        await conn.close()


async def _variant(server_url: str, name: str, calls: list[list[DomainEvent]], concurrency: int) -> dict[str, float]:
    pool = await create_pool(await new_database(server_url, name))
    try:
        append_s, project_s = await _append_and_project(pool, calls, concurrency)
    finally:
        await pool.close()
    events = sum(len(c) for c in calls)
    return {
        "append_and_project_s": append_s + project_s,
        "events_per_call": round(events / len(calls), 1),
        "append_per_second": round(events / append_s),
        "project_per_second": round(events / project_s),
        "append_and_project_per_second": round(events / (append_s + project_s)),
    }


def _without_seconds(variant: dict[str, float]) -> dict[str, float]:
    return {key: value for key, value in variant.items() if not key.endswith("_s")}


async def measure_projection(
    stack: BenchStack, sizes: ProjectionSizes, report_progress: Say = lambda text: None
) -> Measurement:
    """Append + project against COPY, each in new databases on ``stack``'s Postgres."""
    began = time.monotonic()
    per_invoice = _batches(sizes.invoices)
    # invoices progress side by side: first every invoice's first step, then every second step, ...
    calls = [steps[n] for n in range(len(per_invoice[0])) for steps in per_invoice]
    events = [e for steps in per_invoice for batch in steps for e in batch]
    run = uuid.uuid4().hex[:6]
    server = stack.server_url
    report_progress(f"projection: appending and projecting {len(events)} events")
    measured = await _variant(server, f"projection_{run}", calls, sizes.append_concurrency)
    measured_s = measured.pop("append_and_project_s")
    report_progress(f"projection: COPY of {len(events)} rows")
    copy_s = await _copy(await new_database(server, f"copy_{run}"), events)
    report_progress("projection: batching variants")
    variants = {
        "one_call_per_invoice": await _variant(
            server,
            f"per_invoice_{run}",
            [[e for b in steps for e in b] for steps in per_invoice],
            sizes.append_concurrency,
        ),
        f"{LARGE_BATCH}_events_per_call": await _variant(
            server,
            f"large_batches_{run}",
            [events[i : i + LARGE_BATCH] for i in range(0, len(events), LARGE_BATCH)],
            sizes.append_concurrency,
        ),
        "workflow_batches_one_at_a_time": await _variant(server, f"serial_{run}", calls, 1),
    }
    count = len(events)
    return Measurement(
        name="projection",
        seconds=round(time.monotonic() - began, 1),
        figures=[
            Figure(
                name="events appended and projected per second",
                unit="/s",
                measured=count / measured_s,
                baseline=count / copy_s,
                target=RATIO_TARGET,
            )
        ],
        details={
            "events": count,
            "append_calls": len(calls),
            "append_concurrency": sizes.append_concurrency,
            "workflow_batches": measured,
            "copy_per_second": round(count / copy_s),
            "variants": {name: _without_seconds(variant) for name, variant in variants.items()},
        },
    )
