"""Transfers to customers through the API while the worker is killed twice and the API once: each transfer
is posted three times at once and again until answered, as an integration that got no answer does. Every
allocation reaches its invoice once, the allocations and the credit add up to the transfer, the invoices'
logs and the customer's cash book agree, and nothing is credited twice."""

from __future__ import annotations

import asyncio
import functools
import os
import time
import uuid
from datetime import UTC, date, datetime, timedelta

import httpx
import pytest

from tests.faults.intake import REQUEST_TIMEOUT_S
from tests.faults.stack import API_TOKEN, FaultStack, fault_stack, repeat_fault
from tests.harness import eventually

CUSTOMERS = 3
INVOICES_PER_CUSTOMER = 3
AMOUNT_MINOR = 100_000
RETRY_PAUSE_S = 1.0
DEADLINE_S = 4 * 60.0

# fault work beyond make test's budget: it runs in make soak (DUNNING_SOAK=1)
pytestmark = pytest.mark.skipif(os.environ.get("DUNNING_SOAK") != "1", reason="runs in make soak (DUNNING_SOAK=1)")


def invoice_body(invoice_id: str, customer_id: str, due: date) -> dict:
    """An invoice of 1,000.00 EUR on the default policy, due in days: nothing escalates while the test runs."""
    return {
        "invoice_id": invoice_id,
        "customer_id": customer_id,
        "contact": {"name": f"Billing {customer_id}", "email": f"billing@{customer_id.lower()}.example"},
        "amount_minor": AMOUNT_MINOR,
        "currency": "EUR",
        "issue_date": (due - timedelta(days=14)).isoformat(),
        "due_date": due.isoformat(),
        "time_zone": "UTC",
    }


async def post_until_answered(http: httpx.AsyncClient, url: str, body: dict, deadline: float) -> httpx.Response:
    """Post ``body`` again, unchanged, until an answer that is not a transport error or a 5xx."""
    while True:
        try:
            response = await http.post(url, json=body)
        except httpx.TransportError:
            response = None
        if response is not None and response.status_code < 500:
            return response
        assert asyncio.get_running_loop().time() < deadline, f"{url}: no answer in time ({response and response.text})"
        await asyncio.sleep(RETRY_PAUSE_S)


async def kill_worker_and_api(stack: FaultStack) -> None:
    await repeat_fault(functools.partial(stack.kill_workers, down_for=2.0), first_after=0.5, between=4.0, times=1)
    await stack.kill_api(down_for=1.0)
    await repeat_fault(functools.partial(stack.kill_workers, down_for=2.0), first_after=2.0, between=4.0, times=1)


async def test_transfers_to_customers_under_worker_and_api_kills():
    run = uuid.uuid4().hex[:6]
    due = datetime.now(UTC).date() + timedelta(days=10)
    customers = {f"C-{run}-{c}": [f"{run}-{c}-{n}" for n in range(INVOICES_PER_CUSTOMER)] for c in range(CUSTOMERS)}
    async with fault_stack({}, api=True) as stack:
        headers = {"Authorization": f"Bearer {API_TOKEN}"}
        async with httpx.AsyncClient(base_url=stack.api_url, headers=headers, timeout=REQUEST_TIMEOUT_S) as http:
            deadline = asyncio.get_running_loop().time() + DEADLINE_S
            for customer_id, invoice_ids in customers.items():
                for n, invoice_id in enumerate(invoice_ids):
                    created = await post_until_answered(
                        http, "/invoices", invoice_body(invoice_id, customer_id, due + timedelta(days=n)), deadline
                    )
                    assert created.status_code in (200, 201), created.text

            # each customer pays two invoices and a half in one transfer, the last invoice named first
            transfers = {
                customer_id: {
                    "payment_id": f"T-{customer_id}",
                    "amount_minor": 2 * AMOUNT_MINOR + AMOUNT_MINOR // 2,
                    "currency": "EUR",
                    "received_at": datetime.now(UTC).isoformat(),
                    "remittance": f"payment for {invoice_ids[-1]}",
                }
                for customer_id, invoice_ids in customers.items()
            }
            faults = asyncio.create_task(kill_worker_and_api(stack))
            answered_at: list[float] = []

            async def pay(customer_id: str, body: dict) -> httpx.Response:
                answer = await post_until_answered(http, f"/customers/{customer_id}/payments", body, deadline)
                answered_at.append(time.time())
                return answer

            answers = await asyncio.gather(*(pay(c, body) for c, body in transfers.items() for _ in range(3)))
            await faults
        stack.assert_workers_alive()
        first_fault = min(fault.started for fault in stack.faults)
        assert len(stack.faults) == 3 and max(answered_at) > first_fault  # the transfers were under way meanwhile

        for answer in answers:
            assert answer.status_code == 200, answer.text
        for customer_id, invoice_ids in customers.items():
            mine = [a.json() for a in answers if a.json()["payment"]["customer_id"] == customer_id]
            assert all(a["allocations"] == mine[0]["allocations"] for a in mine)  # one payment, one split
            split = {a["invoice_id"]: a["amount_minor"] for a in mine[0]["allocations"]}
            transfer = transfers[customer_id]
            assert sum(split.values()) + mine[0]["credit_minor"] == transfer["amount_minor"]
            named, oldest, middle = invoice_ids[-1], invoice_ids[0], invoice_ids[1]
            assert split == {named: AMOUNT_MINOR, oldest: AMOUNT_MINOR, middle: AMOUNT_MINOR // 2}

            async def logged_once(customer_id: str = customer_id, split: dict[str, int] = split) -> bool:
                return await payments_in_logs(stack, customers[customer_id]) == {
                    invoice_id: {f"T-{customer_id}--{invoice_id}": amount} for invoice_id, amount in split.items()
                }

            await eventually(logged_once, timeout=60)


async def payments_in_logs(stack: FaultStack, invoice_ids: list[str]) -> dict[str, dict[str, int]]:
    """``{invoice id: {payment id: amount}}`` of every ``payment_recorded`` event; a payment twice fails."""
    rows = await stack.pool.fetch(
        "SELECT invoice_id, data->>'payment_id' AS payment_id, (data->>'amount_minor')::bigint AS amount"
        " FROM invoice_events WHERE kind = 'payment_recorded' AND invoice_id = ANY($1::text[]) ORDER BY invoice_id, sequence",
        invoice_ids,
    )
    found: dict[str, dict[str, int]] = {}
    for row in rows:
        paid = found.setdefault(row["invoice_id"], {})
        assert row["payment_id"] not in paid, f"{row['payment_id']} recorded twice on {row['invoice_id']}"
        paid[row["payment_id"]] = row["amount"]
    return found
