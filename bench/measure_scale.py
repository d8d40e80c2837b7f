"""Measurement 3: many open invoices waiting on timers, and the time for all of them to pass one boundary.

The invoices arrive as a migration at go-live brings them: imported (``dunning invoice import``'s
path, in customers of three), already overdue, their reminder sent by the other system, so that
opening sends nothing. All their warnings are due at one moment, placed ahead of the time importing
them takes (estimated from a warm-up batch, plus a margin). Measured: the import's pace against the
baseline's starts, how long after that moment the last warning notice is recorded, the worker's peak
memory meanwhile (its workflow cache bounded, as ``build_worker`` leaves it), and the size on disk of
Postgres and the dev server. The baseline does the same with as many baseline workflows (two no-op
activities at start and at the boundary).
"""

from __future__ import annotations

import functools
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg
from temporalio.client import Client, WorkflowHandle

from bench.baseline import BaselinePlan, BaselineWorkflow
from bench.report import Figure, Measurement, Target
from bench.stack import BASELINE_QUEUE, INVOICE_QUEUE, BenchStack
from bench.workload import ACTIVITIES_PER_STEP, Say, imported_invoice_line, poll, run_bounded, sleep_until, utc_now
from client import invoice_import
from client.invoice_import import STARTS_AT_ONCE, Outcome
from client.policies import PolicyBook
from workflows.bounds import DateWindow
from workflows.digests import DIGEST_GATHERING

MEMORY_TARGET = Target(on="value", op="<=", bound=600)
PASS_TARGET = Target(on="ratio", op=">=", bound=0.8)
FAR_AWAY = timedelta(days=30)
WARMUP_BOUNDARY = timedelta(days=2)  # the warm-up's warnings: out of the way, with their reminders in the past
INVOICES_PER_CUSTOMER = 3
RUNNING = "ExecutionStatus = 'Running' AND WorkflowId STARTS_WITH '{prefix}'"


@dataclass(frozen=True)
class ScaleSizes:
    invoices: int
    start_concurrency: int = 32
    warmup: int = 50
    margin: float = 120.0  # seconds between the estimated end of opening and the boundary
    timeout: float = 4 * 3600.0


@dataclass
class Phase:
    """One side of the measurement: how long opening took, when the boundary was, how long passing it took."""

    open_s: float = 0.0
    boundary_lead_s: float = 0.0
    opened_after_boundary: bool = False
    pass_s: float = 0.0


async def _count_notices(pool: asyncpg.Pool, prefix: str, notice: str) -> int:
    return await pool.fetchval(
        "SELECT count(*) FROM invoice_events WHERE kind = 'notice_sent' AND data->>'kind' = $1 AND invoice_id LIKE $2",
        notice,
        prefix + "%",
    )


async def _count_openings(pool: asyncpg.Pool, prefix: str) -> int:
    """Imported invoices that recorded their opening (the stage of the other system's last notice)."""
    return await pool.fetchval(
        "SELECT count(*) FROM invoice_events WHERE kind = 'stage_reached' AND invoice_id LIKE $1", prefix + "%"
    )


def _boundary(count: int, warmup_count: int, warmup_s: float, margin: float) -> datetime:
    """A moment after the estimated time to open ``count``, from the warm-up's pace, plus the margin."""
    return utc_now() + timedelta(seconds=count * warmup_s / max(1, warmup_count) * 1.25 + margin)


async def _invoice_phase(stack: BenchStack, sizes: ScaleSizes, run: str, report_progress: Say) -> Phase:
    assert stack.client is not None and stack.pool is not None
    client, pool, phase = stack.client, stack.pool, Phase()

    async def import_invoices(prefix: str, count: int, boundary: datetime) -> float:
        """Import ``count`` overdue invoices as a migration would (``dunning invoice import``'s path), in
        customers of three; the time until each has recorded its opening."""
        lines = [imported_invoice_line(f"{prefix}{n}", f"{prefix}C{n // INVOICES_PER_CUSTOMER}", boundary) for n in range(count)]
        step = max(1, count // 20)

        def progress(done: int, total: int) -> None:
            if done % step < STARTS_AT_ONCE or done == total:
                report_progress(f"scale: imported {done} of {total}")

        began = time.monotonic()
        window = DateWindow(now=utc_now(), days=365)
        summary = await invoice_import.import_invoices(
            client, INVOICE_QUEUE, lines, window, PolicyBook(), gathering=DIGEST_GATHERING, progress=progress
        )
        if summary.started != count:
            refused = next((line.reason for line in summary.lines if line.outcome != Outcome.STARTED), None)
            raise RuntimeError(f"{count - summary.started} invoices were not imported: {refused}")
        await poll(lambda: _count_openings(pool, prefix), lambda n: n >= count, sizes.timeout, 1.0)
        return time.monotonic() - began

    report_progress(f"scale: warming up with {sizes.warmup} imported invoices")
    warmup_s = await import_invoices(f"W{run}-", sizes.warmup, utc_now() + WARMUP_BOUNDARY)
    boundary = _boundary(sizes.invoices, sizes.warmup, warmup_s, sizes.margin)
    phase.boundary_lead_s = round((boundary - utc_now()).total_seconds(), 1)
    report_progress(f"scale: importing {sizes.invoices} invoices, their warnings due in {phase.boundary_lead_s:.0f} s")
    phase.open_s = await import_invoices(f"X{run}-", sizes.invoices, boundary)
    phase.opened_after_boundary = utc_now() > boundary
    await sleep_until(boundary)
    report_progress(f"scale: boundary reached, waiting for {sizes.invoices} warnings")
    await poll(lambda: _count_notices(pool, f"X{run}-", "warning"), lambda n: n >= sizes.invoices, sizes.timeout, 0.25)
    phase.pass_s = (utc_now() - boundary).total_seconds()
    return phase


async def _baseline_phase(client: Client, sizes: ScaleSizes, run: str, report_progress: Say) -> Phase:
    phase = Phase()

    async def open_baselines(prefix: str, count: int, boundary: datetime) -> float:
        plan = BaselinePlan(
            start_activities=ACTIVITIES_PER_STEP, steps=[(boundary, ACTIVITIES_PER_STEP)], wait_for_payment=False
        )
        async def start(n: int) -> WorkflowHandle[BaselineWorkflow, int]:
            return await client.start_workflow(BaselineWorkflow.run, plan, id=f"{prefix}{n}", task_queue=BASELINE_QUEUE)

        began = time.monotonic()
        jobs = [functools.partial(start, n) for n in range(count)]
        failures = [o for o in await run_bounded(jobs, sizes.start_concurrency) if isinstance(o, BaseException)]
        if failures:
            raise RuntimeError(f"{len(failures)} baseline workflows did not start: {failures[0]}")
        return time.monotonic() - began

    report_progress(f"scale: warming up with {sizes.warmup} baseline workflows")
    warmup_s = await open_baselines(f"BW{run}-", sizes.warmup, utc_now() + FAR_AWAY)
    boundary = _boundary(sizes.invoices, sizes.warmup, warmup_s, min(sizes.margin, 30.0))
    phase.boundary_lead_s = round((boundary - utc_now()).total_seconds(), 1)
    report_progress(f"scale: opening {sizes.invoices} baseline workflows, boundary in {phase.boundary_lead_s:.0f} s")
    phase.open_s = await open_baselines(f"BX{run}-", sizes.invoices, boundary)
    phase.opened_after_boundary = utc_now() > boundary
    await sleep_until(boundary)

    async def running() -> int:
        return (await client.count_workflows(RUNNING.format(prefix=f"BX{run}-"))).count

    await poll(running, lambda n: n == 0, sizes.timeout, 0.25)
    phase.pass_s = (utc_now() - boundary).total_seconds()
    return phase


async def measure_scale(stack: BenchStack, sizes: ScaleSizes, report_progress: Say = lambda text: None) -> Measurement:
    """Invoices, then baseline workflows, waiting on one boundary each, on ``stack`` (the invoices first: a run too
    long to wait for tells their figures as soon as they are known; the baseline then passes its boundary with the
    invoices still open in the same stores)."""
    run = uuid.uuid4().hex[:6]
    assert stack.client is not None
    async with stack.watch() as watch:
        real = await _invoice_phase(stack, sizes, run, report_progress)
        report_progress(
            f"scale: {sizes.invoices} invoices imported in {real.open_s:.0f} s, their warnings out {real.pass_s:.0f} s"
            f" after the boundary, worker peak {watch.usage()['worker'].peak_rss_mb:.0f} MB; now the baseline"
        )
        baseline = await _baseline_phase(stack.client, sizes, run, report_progress)
    usage = watch.usage()
    disk = await stack.disk_usage_mb()
    count = sizes.invoices
    figures = [
        Figure(
            name=f"{count} overdue invoices imported (baseline: workflows started)",
            unit="/s",
            measured=count / real.open_s,
            baseline=count / baseline.open_s,
        ),
        Figure(
            name=f"{count} waiting invoices passing one stage boundary",
            unit="/s",
            measured=count / real.pass_s,
            baseline=count / baseline.pass_s,
            target=PASS_TARGET,
        ),
        Figure(
            name=f"worker peak memory, {count} open",
            unit="MB",
            measured=usage["worker"].peak_rss_mb,
            baseline=usage["baseline_worker"].peak_rss_mb,
            target=MEMORY_TARGET,
        ),
    ]
    return Measurement(
        name="scale",
        figures=figures,
        details={
            "open_invoices": count,
            "warmup": sizes.warmup,
            "dunning": vars(real),
            "baseline": vars(baseline),
            "boundary_pass_s": {"dunning": round(real.pass_s, 1), "baseline": round(baseline.pass_s, 1)},
            "usage": {name: vars(u) for name, u in usage.items()},
            "disk_mb": disk,
            "worker_overload_signs": stack.workers["worker"].overload_signs(),
        },
    )
