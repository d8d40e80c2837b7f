"""Measurement 1: invoices through their lifecycle per second, at several levels of concurrency.

Each invoice is started and registered with its customer (as the API and the CLI do; invoices come
in customers of three), passes reminder, warning and late fee on real-time timers (its notices go to
the loopback mail sink, its events to Postgres), and is then paid in full by a transfer to its
customer naming it (the customer's ``record_payment``, which hands the invoice its part). The baseline
workflow has the same timers, activities and one update, and its activities do nothing. At each level
the two run one after the other on the same stack.
"""

from __future__ import annotations

import functools
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from statistics import median

from temporalio.client import Client

from bench.baseline import BaselinePlan, BaselineWorkflow
from bench.report import Figure, Measurement, Target
from bench.stack import BASELINE_QUEUE, INVOICE_QUEUE, BenchStack, Usage
from bench.workload import (
    ACTIVITIES_PER_STEP,
    Say,
    history_shape,
    lifecycle_invoice,
    poll,
    run_bounded,
    sleep_until,
    stage_moments,
    utc_now,
)
from client import customers, invoices
from workflows.cash import CustomerPayment
from workflows.models import InvoiceState

THROUGHPUT_TARGET = Target(on="ratio", op=">=", bound=0.8)
INVOICES_PER_CUSTOMER = 3  # the lifecycle's invoices come in customers of three (a level's last may have fewer)


@dataclass(frozen=True)
class LifecycleSizes:
    concurrency: list[int]
    rounds: int  # each level runs rounds x concurrency invoices
    gap: float = 1.0  # seconds from the due moment to the reminder, and between stages
    timeout: float = 600.0  # for one invoice's whole lifecycle


@dataclass(frozen=True)
class Lifecycle:
    """One invoice (or baseline workflow) driven through its lifecycle."""

    seconds: float
    workflow_id: str


def customer_of(invoice_id: str) -> str:
    """Invoices ``<prefix>-<n>`` share a customer ``INVOICES_PER_CUSTOMER`` at a time: ``<prefix>-C<n // k>``."""
    prefix, n = invoice_id.rsplit("-", 1)
    return f"{prefix}-C{int(n) // INVOICES_PER_CUSTOMER}"


async def _real_lifecycle(client: Client, invoice_id: str, gap: timedelta, timeout: float) -> Lifecycle:
    began = time.monotonic()
    invoice = lifecycle_invoice(invoice_id, customer_of(invoice_id), utc_now() + gap, gap)
    handle = await invoices.start_invoice(client, INVOICE_QUEUE, invoice)
    await customers.register_invoice(client, INVOICE_QUEUE, invoice)
    await sleep_until(stage_moments(invoice)[-1])
    current = await poll(
        lambda: invoices.status(client, invoice_id),
        lambda s: s.state == InvoiceState.LATE_FEE and s.fees_minor > 0,
        timeout,
    )
    transfer = CustomerPayment(
        payment_id=f"PAY-{invoice_id}",
        customer_id=invoice.customer_id,
        amount_minor=current.balance_minor,
        currency=invoice.currency,
        received_at=utc_now(),
        remittance=invoice_id,
    )
    application = await customers.record_payment(client, INVOICE_QUEUE, transfer)
    if [(a.invoice_id, a.amount_minor) for a in application.allocations] != [(invoice_id, current.balance_minor)]:
        raise RuntimeError(f"the transfer for {invoice_id} was split {application.allocations}")
    outcome = await handle.result(rpc_timeout=timedelta(seconds=timeout))
    if outcome.state != InvoiceState.PAID or outcome.fees_minor <= 0:
        raise RuntimeError(f"{invoice_id} ended {outcome.state} with fees {outcome.fees_minor}")
    return Lifecycle(time.monotonic() - began, handle.id)


async def _baseline_lifecycle(client: Client, workflow_id: str, gap: timedelta, timeout: float) -> Lifecycle:
    began = time.monotonic()
    moments = [utc_now() + gap * n for n in (2, 3, 4)]  # as the invoice: due after one gap, stages each gap after
    plan = BaselinePlan(
        start_activities=ACTIVITIES_PER_STEP,
        steps=[(moment, ACTIVITIES_PER_STEP) for moment in moments],
        payment_activities=ACTIVITIES_PER_STEP,
    )
    handle = await client.start_workflow(BaselineWorkflow.run, plan, id=workflow_id, task_queue=BASELINE_QUEUE)
    await sleep_until(moments[-1])
    await poll(lambda: handle.query(BaselineWorkflow.steps_done), lambda done: done == len(moments), timeout)
    await handle.execute_update(BaselineWorkflow.pay, 1)
    await handle.result(rpc_timeout=timedelta(seconds=timeout))
    return Lifecycle(time.monotonic() - began, workflow_id)


def _cpu_per_lifecycle(usage: dict[str, Usage], worker: str, lifecycles: int) -> dict[str, float]:
    """CPU seconds per lifecycle of the side's worker, the dev server, PostgreSQL and the driver (with the mail sink)."""
    return {
        name: round(usage[name].cpu_seconds / max(1, lifecycles), 3)
        for name in (worker, "dev_server", "postgres", "driver")
    }


def _per_lifecycle_seconds(task_seconds: dict[str, float], lifecycles: int) -> dict[str, float]:
    """The worker's task seconds per lifecycle, by workflow and activity type (the SDK's histograms)."""
    return {name: round(seconds / max(1, lifecycles), 4) for name, seconds in sorted(task_seconds.items()) if seconds > 0}


def _customer_share(task_seconds: dict[str, float], worker_cpu_seconds: float) -> float:
    """The customer workflow's tasks and its activities, as a share of the worker's CPU seconds (an upper bound:
    a task's time includes waiting for the interpreter while other tasks run)."""
    customer = sum(seconds for name, seconds in task_seconds.items() if "customer" in name.lower())
    return round(customer / worker_cpu_seconds, 3) if worker_cpu_seconds > 0 else 0.0


def _per_lifecycle(requests: Counter[str], lifecycles: int) -> dict[str, float]:
    """The dev server's requests per lifecycle, those made at least once in ten lifecycles."""
    per = {name: round(count / max(1, lifecycles), 1) for name, count in sorted(requests.items())}
    return {name: value for name, value in per.items() if value >= 0.1}


async def _level(
    drive: Callable[[str], Awaitable[Lifecycle]], prefix: str, concurrency: int, count: int
) -> tuple[float, list[Lifecycle], list[str]]:
    """Run ``count`` lifecycles, ``concurrency`` at a time: (per second, the lifecycles, the failures)."""
    began = time.monotonic()
    outcomes = await run_bounded([functools.partial(drive, f"{prefix}-{n}") for n in range(count)], concurrency)
    elapsed = time.monotonic() - began
    done = [o for o in outcomes if isinstance(o, Lifecycle)]
    failed = [f"{type(o).__name__}: {o}"[:300] for o in outcomes if isinstance(o, BaseException)]
    return len(done) / elapsed, done, failed


async def measure_lifecycle(
    stack: BenchStack, sizes: LifecycleSizes, report_progress: Say = lambda text: None
) -> Measurement:
    """Lifecycle throughput of invoices and of baseline workflows, level by level, on ``stack``."""
    gap = timedelta(seconds=sizes.gap)
    run = uuid.uuid4().hex[:6]
    levels, figures = [], []
    shapes: dict[str, dict[str, int]] = {}
    assert stack.client is not None
    client = stack.client
    for concurrency in sizes.concurrency:
        count = sizes.rounds * concurrency
        report_progress(f"lifecycle: {count} invoices, {concurrency} in flight")
        requests_before = await stack.dev_server_requests()
        tasks_before = await stack.worker_task_seconds()
        async with stack.watch() as watch:
            real_rate, real, real_failed = await _level(
                lambda i: _real_lifecycle(client, i, gap, sizes.timeout), f"L{run}-{concurrency}", concurrency, count
            )
        requests_between = await stack.dev_server_requests()
        task_seconds = {
            name: seconds - tasks_before.get(name, 0.0) for name, seconds in (await stack.worker_task_seconds()).items()
        }
        report_progress(f"lifecycle: {count} baseline workflows, {concurrency} in flight")
        async with stack.watch() as base_watch:
            base_rate, base, base_failed = await _level(
                lambda i: _baseline_lifecycle(client, i, gap, sizes.timeout),
                f"B{run}-{concurrency}",
                concurrency,
                count,
            )
        requests_after = await stack.dev_server_requests()
        if not shapes and real and base:
            shapes = {
                "dunning": history_shape(await client.get_workflow_handle(real[0].workflow_id).fetch_history()),
                "baseline": history_shape(await client.get_workflow_handle(base[0].workflow_id).fetch_history()),
            }
        usage, base_usage = watch.usage(), base_watch.usage()
        levels.append(
            {
                "concurrency": concurrency,
                "invoices": count,
                "dunning_per_second": round(real_rate, 3),
                "baseline_per_second": round(base_rate, 3),
                "dunning_median_lifecycle_s": round(median(r.seconds for r in real), 2) if real else None,
                "baseline_median_lifecycle_s": round(median(b.seconds for b in base), 2) if base else None,
                "failures": real_failed + base_failed,
                # every process on the machine that works for the run, per lifecycle: where the cores went
                "cpu_s_per_invoice": _cpu_per_lifecycle(usage, "worker", len(real)),
                "cpu_s_per_baseline_workflow": _cpu_per_lifecycle(base_usage, "baseline_worker", len(base)),
                "worker_peak_rss_mb": usage["worker"].peak_rss_mb,
                "worker_task_s_per_invoice": _per_lifecycle_seconds(task_seconds, len(real)),
                "customer_share_of_worker_cpu": _customer_share(task_seconds, usage["worker"].cpu_seconds),
                "dev_server_requests_per_invoice": _per_lifecycle(requests_between - requests_before, len(real)),
                "dev_server_requests_per_baseline_workflow": _per_lifecycle(requests_after - requests_between, len(base)),
            }
        )
        if real and base:
            figures.append(
                Figure(
                    name=f"invoices through the lifecycle, {concurrency} in flight",
                    unit="/s",
                    measured=real_rate,
                    baseline=base_rate,
                    target=THROUGHPUT_TARGET,
                )
            )
    return Measurement(
        name="lifecycle",
        figures=figures,
        details={
            "ideal_lifecycle_s": round(4 * sizes.gap, 2),
            "levels": levels,
            "history_shapes": shapes,
            "worker_overload_signs": stack.workers["worker"].overload_signs(),
        },
    )
