"""Payments come through the API's intake and the provider's signed webhook while the worker is killed, or while
PostgreSQL is down: every payment is recorded once, none is lost, none doubled, none left unapplied."""

from __future__ import annotations

import asyncio
import functools
import os
import uuid

import pytest

from tests.faults.checks import run_under_fault
from tests.faults.fates import Fate, scripted_invoices
from tests.faults.stack import FaultStack, repeat_fault

SOAK = os.environ.get("DUNNING_SOAK") == "1"
PAYING = [Fate.PAID_WHEN_ISSUED, Fate.PAID_EARLY, Fate.PAID_IN_TWO, Fate.PAID_AFTER_SUSPENSION]
INVOICES = 60 if SOAK else 12
STARTS_PER_SECOND = 2.0
WORKER_KILLS = 6 if SOAK else 2
POSTGRES_DOWN_S = 20.0
DEADLINE_S = 6 * 60.0

# in ``make test`` through ``test_together`` (all the newer faults in one run); alone, at volume, in ``make soak``
pytestmark = pytest.mark.skipif(not SOAK, reason="runs in make soak (DUNNING_SOAK=1); make test runs test_together")


async def kill_worker_and_api(stack: FaultStack) -> None:
    """The worker SIGKILLed while the first payments come in, then the API, then the worker again."""
    await repeat_fault(functools.partial(stack.kill_workers, down_for=2.0), first_after=4.0, between=6.0, times=1)
    await asyncio.sleep(3.0)
    await stack.kill_api(down_for=2.0)
    await repeat_fault(
        functools.partial(stack.kill_workers, down_for=2.0), first_after=3.0, between=6.0, times=WORKER_KILLS - 1
    )


async def postgres_down(stack: FaultStack) -> None:
    await asyncio.sleep(5.0)
    await stack.stop_postgres(down_for=POSTGRES_DOWN_S)


async def nothing_unapplied(stack: FaultStack) -> list[str]:
    """No payment of these open invoices may end aside, unapplied: that money would be lost to its invoice. And
    the webhook did take payments (it keeps its answers), so both ways in were under the fault."""
    rows = await stack.pool.fetch("SELECT payment_id, invoice_id, reason FROM unapplied_payments")
    problems = [f"payment {r['payment_id']} for {r['invoice_id']} kept unapplied: {r['reason']}" for r in rows]
    if not await stack.pool.fetchval("SELECT count(*) FROM payment_notifications WHERE status_code = 200"):
        problems.append("the webhook applied no payment")
    return problems


@pytest.mark.parametrize("fault", ["worker_and_api_killed", "postgres_down"])
async def test_payments_through_api_and_webhook_under_fault(fault: str):
    """12 invoices (soak: 60) of the paying fates, started 2 a second; each pays through the API's intake and
    the signed webhook in turn, resending the same request (the webhook: the same signed notification) until
    answered. Meanwhile either the worker is SIGKILLed twice and the API once, or PostgreSQL is down for
    20 s. Each invoice's paid, fees and balance agree between its workflow, its log and its projection, and
    with its script; every payment is recorded once with its amount; none is kept unapplied."""
    scripts = scripted_invoices(INVOICES, run=f"AI{uuid.uuid4().hex[:4]}", fates=PAYING)
    cause = kill_worker_and_api if fault == "worker_and_api_killed" else postgres_down
    await run_under_fault(
        scripts,
        STARTS_PER_SECOND,
        DEADLINE_S,
        cause,
        f"payments through the API and the webhook, {fault.replace('_', ' ')}",
        through_api=True,
        also_check=nothing_unapplied,
    )
