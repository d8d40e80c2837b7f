"""Measurement 2: invoice starts per second, and ``record_payment`` round trips with many invoices open.

The bare workflows (a start and nothing else; an update that only answers) are started first,
then the invoices (full default policy, so each stays open for weeks). Once every invoice has
sent its invoice-issued notice, payments of EUR 1.00 go to invoices picked at random, each one
followed by a bare update to a bare workflow picked at random, so that both see the same moment.
A few such pairs are also timed while the worker is still issuing (rendering and sending the
invoice-issued notices): what a client paying then waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date

import asyncpg
from temporalio.client import Client, WorkflowUpdateRPCTimeoutOrCancelledError

from activities.projections import projection_lag
from bench.baseline import BareWorkflow
from bench.report import Figure, Measurement, Target
from bench.stack import BASELINE_QUEUE, INVOICE_QUEUE, BenchStack
from bench.workload import Say, open_invoice, poll, run_bounded
from client import invoices
from client.invoices import InvoiceError, Refusal
from workflows.models import Payment

START_TARGET = Target(on="ratio", op=">=", bound=0.8)
P99_TARGET = Target(on="ratio", op="<=", bound=1.5)
PAYMENT_MINOR = 100  # EUR 1.00: the invoice stays open
BUSY_SAMPLES = 30


@dataclass(frozen=True)
class StartSizes:
    open_invoices: int
    payments: int
    start_concurrency: int = 32
    drain_timeout: float = 7200.0  # for every invoice-issued notice to be sent


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank percentile ``q`` (0-100) of ``values``."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


async def _start_rate(jobs: list[Callable[[], Awaitable[object]]], concurrency: int) -> tuple[float, int]:
    """(starts per second, failures) of running the start jobs ``concurrency`` at a time."""
    began = time.monotonic()
    outcomes = await run_bounded(jobs, concurrency)
    elapsed = time.monotonic() - began
    failures = sum(isinstance(o, BaseException) for o in outcomes)
    return (len(jobs) - failures) / elapsed, failures


async def _issued_notices(pool: asyncpg.Pool, prefix: str) -> int:
    return await pool.fetchval(
        "SELECT count(*) FROM invoice_events WHERE kind = 'notice_sent' AND data->>'kind' = 'invoice_issued'"
        " AND invoice_id LIKE $1",
        prefix + "%",
    )


async def _timed(call: Callable[[], Awaitable[object]]) -> float:
    """Milliseconds ``call`` took."""
    began = time.perf_counter()
    await call()
    return (time.perf_counter() - began) * 1000


async def _payment_pair(
    client: Client, invoice_id: str, bare_id: str, payment_id: str
) -> tuple[float | None, float | None]:
    """Milliseconds of one ``record_payment`` of EUR 1.00, then of one bare update; None for either
    when it had no answer within ``client.invoices.ANSWER_TIMEOUT``."""
    payment = Payment(payment_id=payment_id, amount_minor=PAYMENT_MINOR, currency="EUR")
    try:
        real: float | None = await _timed(functools.partial(invoices.record_payment, client, invoice_id, payment))
    except InvoiceError as err:
        if err.refusal != Refusal.UNAVAILABLE:
            raise
        real = None
    handle = client.get_workflow_handle(bare_id, result_type=int)
    update = functools.partial(
        handle.execute_update, BareWorkflow.ping, PAYMENT_MINOR, rpc_timeout=invoices.ANSWER_TIMEOUT
    )
    try:
        bare: float | None = await _timed(update)
    except WorkflowUpdateRPCTimeoutOrCancelledError:
        bare = None
    return real, bare


async def _sample_while_busy(
    client: Client,
    invoice_ids: list[str],
    bare_ids: list[str],
    pick: random.Random,
    prefix: str,
    samples: list[tuple[float | None, float | None]],
    stop: asyncio.Event,
) -> None:
    """Every second, a payment pair while the worker is still issuing invoices, until ``stop`` is set.

    Not cancelled: the SDK turns a cancelled update into an error of its own, which would end the run.
    """
    while len(samples) < BUSY_SAMPLES:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)
        if stop.is_set():
            return
        payment_id = f"{prefix}-{len(samples)}"
        samples.append(await _payment_pair(client, pick.choice(invoice_ids), pick.choice(bare_ids), payment_id))


async def _sample_projection_lag(pool: asyncpg.Pool, lags: list[float], stop: asyncio.Event) -> None:
    """Every second until ``stop`` is set, how far the read models trail the event log (seconds)."""
    while not stop.is_set():
        lags.append((await projection_lag(pool)).seconds_behind)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)


async def measure_starts(stack: BenchStack, sizes: StartSizes, report_progress: Say = lambda text: None) -> Measurement:
    """Start rates of invoices and bare workflows, then payment and bare-update round trips, on ``stack``."""
    run = uuid.uuid4().hex[:6]
    count = sizes.open_invoices
    assert stack.client is not None and stack.pool is not None
    client: Client = stack.client
    pool = stack.pool
    bare_ids = [f"bare-{run}-{n}" for n in range(count)]
    invoice_ids = [f"S{run}-{n}" for n in range(count)]
    today = date.today()

    async def start_bare(workflow_id: str) -> object:
        return await client.start_workflow(BareWorkflow.run, id=workflow_id, task_queue=BASELINE_QUEUE)

    async def start_invoice(invoice_id: str) -> object:
        return await invoices.start_invoice(client, INVOICE_QUEUE, open_invoice(invoice_id, today))
    async with stack.watch() as watch:
        report_progress(f"starts: {count} bare workflows")
        bare_rate, bare_failed = await _start_rate(
            [functools.partial(start_bare, i) for i in bare_ids],
            sizes.start_concurrency,
        )
        report_progress(f"starts: {count} invoices")
        real_began = time.monotonic()
        real_rate, real_failed = await _start_rate(
            [functools.partial(start_invoice, i) for i in invoice_ids],
            sizes.start_concurrency,
        )
        report_progress(f"starts: waiting for {count} invoice-issued notices")
        pick = random.Random(7)
        busy_ms: list[tuple[float | None, float | None]] = []
        issued = asyncio.Event()
        sampler = asyncio.create_task(
            _sample_while_busy(client, invoice_ids, bare_ids, pick, f"BUSY-{run}", busy_ms, issued)
        )
        lags: list[float] = []
        lag_sampler = asyncio.create_task(_sample_projection_lag(pool, lags, issued))
        try:
            await poll(
                lambda: _issued_notices(pool, f"S{run}-"),
                lambda n: n >= count - real_failed,
                sizes.drain_timeout,
                1.0,
            )
        finally:
            issued.set()
            await sampler
            await lag_sampler
        open_s = time.monotonic() - real_began
        start_usage = watch.usage()

    report_progress(f"payments: {sizes.payments} record_payment and as many bare updates")
    pairs = []
    async with stack.watch() as watch:
        for n in range(sizes.payments):
            pairs.append(
                await _payment_pair(client, pick.choice(invoice_ids), pick.choice(bare_ids), f"PAY-{run}-{n}")
            )
        payment_usage = watch.usage()
    # no answer counts at the client's timeout: a lower bound, so a stall shows in p99 instead of ending the run
    no_answer_ms = invoices.ANSWER_TIMEOUT.total_seconds() * 1000
    real_ms = [no_answer_ms if real is None else real for real, _ in pairs]
    bare_ms = [no_answer_ms if bare is None else bare for _, bare in pairs]
    disk = await stack.disk_usage_mb()

    figures = [
        Figure(name="starts per second", unit="/s", measured=real_rate, baseline=bare_rate, target=START_TARGET),
        Figure(
            name="record_payment round trip p50",
            unit="ms",
            measured=percentile(real_ms, 50),
            baseline=percentile(bare_ms, 50),
        ),
        Figure(
            name="record_payment round trip p99",
            unit="ms",
            measured=percentile(real_ms, 99),
            baseline=percentile(bare_ms, 99),
            target=P99_TARGET,
        ),
    ]
    return Measurement(
        name="starts_and_payments",
        figures=figures,
        details={
            "open_invoices": count,
            "start_concurrency": sizes.start_concurrency,
            "start_failures": {"dunning": real_failed, "bare": bare_failed},
            "all_invoices_issued_in_s": round(open_s, 1),
            "invoices_issued_per_second": round((count - real_failed) / open_s, 2),
            "payments": sizes.payments,
            "record_payment_unanswered": sum(real is None for real, _ in pairs),
            "bare_update_unanswered": sum(bare is None for _, bare in pairs),
            "record_payment_ms": _summary(real_ms),
            "bare_update_ms": _summary(bare_ms),
            "while_issuing": {
                "samples": len(busy_ms),
                "record_payment_unanswered": sum(r is None for r, _ in busy_ms),
                "bare_update_unanswered": sum(b is None for _, b in busy_ms),
                "record_payment_ms": _summary([r for r, _ in busy_ms if r is not None]),
                "bare_update_ms": _summary([b for _, b in busy_ms if b is not None]),
            },
            "projection_lag_while_issuing_s": {"samples": len(lags), **(_summary(lags) or {})},
            "usage_while_starting": {k: vars(v) for k, v in start_usage.items()},
            "usage_while_paying": {k: vars(v) for k, v in payment_usage.items()},
            "disk_mb": disk,
            "worker_overload_signs": stack.workers["worker"].overload_signs(),
        },
    )


def _summary(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {
        "p50": round(percentile(values, 50), 2),
        "p90": round(percentile(values, 90), 2),
        "p99": round(percentile(values, 99), 2),
        "max": round(max(values), 2),
    }
