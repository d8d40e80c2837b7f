"""Workflow test harness: a worker with the recording activities (``bench.recording``), invoices, and polling."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import date, datetime, timedelta
from typing import Any

from temporalio.client import Client, WorkflowHandle

from client.invoices import initial_search_attributes
from workflows.invoice import InvoiceWorkflow
from workflows.models import DunningPolicy, Invoice
from workflows.state import InvoiceWorkflowInput

ROUND_THE_CLOCK = DunningPolicy.default().model_copy(update={"sending_window": None})


def make_invoice(today: date, **overrides: Any) -> Invoice:
    """An invoice issued today and due in 14 days (EUR 1,000.00), with any field overridden.

    Its policy sends at any hour (no sending window), so stage times are the policy's offsets exactly.
    """
    fields: dict[str, Any] = {
        "invoice_id": f"INV-{uuid.uuid4().hex[:8]}",
        "customer_id": "CUST-1",
        "contact": {"name": "Ana Pop", "email": "ana@client.example"},
        "amount_minor": 100_000,
        "currency": "EUR",
        "issue_date": today,
        "due_date": today + timedelta(days=14),
        "time_zone": "UTC",
        "terms": {"late_fee_percent_per_month": "2", "fixed_late_fee_minor": 1_500},
        "policy": ROUND_THE_CLOCK,
    }
    fields.update(overrides)
    return Invoice.model_validate(fields)


async def start_invoice(client: Client, queue: str, invoice: Invoice, **input_fields: Any) -> WorkflowHandle:
    """Start as the service does, with the invoice's search attributes."""
    return await client.start_workflow(
        InvoiceWorkflow.run,
        InvoiceWorkflowInput(invoice=invoice, **input_fields),
        id=invoice.workflow_id,
        task_queue=queue,
        search_attributes=initial_search_attributes(invoice),
    )


async def eventually(check: Callable[[], Any], timeout: float = 10.0) -> None:
    """Poll ``check`` (sync or async) in real time until it returns truthy."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.05)


def at_local(day: date, hour: int = 9) -> datetime:
    from datetime import timezone

    return datetime(day.year, day.month, day.day, hour, tzinfo=timezone.utc)
