"""Measurement 4: domain events appended, projected and rebuilt through asyncpg, against a raw COPY of the same rows.

The events are what the workflow really writes for a paid invoice (issued, reminder, warning,
late fee, payment: twelve events in five batches, each batch ending with the invoice's
snapshot), recorded once on the time-skipping test server and copied for every invoice. They
are appended with ``append_events`` in those batches (several invoices at once, as activity
slots would), projected by incremental catch-up, then the read models are rebuilt from scratch
(``rebuild``: set-based SQL in one transaction). The baseline COPYs the same rows into the same
table of a second database. The target is the rebuild: at least half the speed of that COPY.
"""

from __future__ import annotations

import functools
import json
import time
import uuid
from dataclasses import dataclass

import asyncpg

from activities.ledger import Batch, LedgerActivities, create_pool
from activities.projections import catch_up, projection_row_counts, rebuild
from bench.recorded_lifecycle import copied, record_paid_lifecycle
from bench.report import Figure, Measurement, Target
from bench.stack import BenchStack, new_database
from bench.workload import Say, run_bounded

RATIO_TARGET = Target(on="ratio", op=">=", bound=0.5)
COPY_COLUMNS = ["invoice_id", "sequence", "kind", "occurred_at", "data", "snapshot", "format"]


@dataclass(frozen=True)
class ProjectionSizes:
    invoices: int
    append_concurrency: int = 8  # appends in flight at once, as activity slots would run them


async def _append(pool: asyncpg.Pool, calls: list[Batch], concurrency: int) -> float:
    """Seconds to append ``calls`` (one ``append_events`` each, ``concurrency`` at a time)."""
    ledger = LedgerActivities(pool)
    began = time.perf_counter()
    outcomes = await run_bounded([functools.partial(ledger.append_events, c.events, c.snapshot) for c in calls], concurrency)
    failures = [o for o in outcomes if isinstance(o, BaseException)]
    if failures:
        raise RuntimeError(f"{len(failures)} appends failed: {failures[0]}")
    return time.perf_counter() - began


async def _timed(work) -> float:
    began = time.perf_counter()
    await work
    return time.perf_counter() - began


async def _copy(url: str, calls: list[Batch]) -> float:
    """Seconds to COPY the rows the appends wrote (snapshots included) into a new database's event log."""
    rows = [(*row[:4], json.dumps(row[4]), None if row[5] is None else json.dumps(row[5]), row[6])
            for batch in calls for row in batch.rows()]
    conn = await asyncpg.connect(url)
    try:
        began = time.perf_counter()
        await conn.copy_records_to_table("invoice_events", records=rows, columns=COPY_COLUMNS)
        return time.perf_counter() - began
    finally:
        await conn.close()


async def measure_projection(
    stack: BenchStack, sizes: ProjectionSizes, report_progress: Say = lambda text: None
) -> Measurement:
    """Append, catch up and rebuild against COPY, each in new databases on ``stack``'s Postgres."""
    report_progress("projection: recording one paid invoice's batches on the time-skipping server")
    recorded = await record_paid_lifecycle()
    per_invoice = [copied(recorded, f"P-{n}") for n in range(sizes.invoices)]
    # invoices progress side by side: first every invoice's first batch, then every second batch, ...
    calls = [batches[n] for n in range(len(recorded)) for batches in per_invoice]
    count = sum(len(batch.events) for batch in calls)
    run = uuid.uuid4().hex[:6]
    pool = await create_pool(await new_database(stack.server_url, f"projection_{run}"))
    try:
        report_progress(f"projection: appending {count} events, then catching up")
        append_s = await _append(pool, calls, sizes.append_concurrency)
        catch_up_s = await _timed(catch_up(pool))
        report_progress("projection: rebuilding the read models")
        rebuild_s = await _timed(rebuild(pool))
        rows = await projection_row_counts(pool)
    finally:
        await pool.close()
    report_progress(f"projection: COPY of {count} rows")
    copy_s = await _copy(await new_database(stack.server_url, f"copy_{run}"), calls)
    return Measurement(
        name="projection",
        figures=[
            Figure(
                name="events rebuilt into the read models per second",
                unit="/s",
                measured=count / rebuild_s,
                baseline=count / copy_s,
                target=RATIO_TARGET,
            ),
            Figure(
                name="events appended and projected per second",
                unit="/s",
                measured=count / (append_s + catch_up_s),
                baseline=count / copy_s,
            ),
        ],
        details={
            "events": count,
            "batches_per_invoice": len(recorded),
            "append_calls": len(calls),
            "append_concurrency": sizes.append_concurrency,
            "append_per_second": round(count / append_s),
            "catch_up_per_second": round(count / catch_up_s),
            "rebuild_per_second": round(count / rebuild_s),
            "copy_per_second": round(count / copy_s),
            "read_model_rows": rows,
        },
    )
