"""The event batches a paid invoice's real workflow appends, with its snapshots, copied for many invoices.

The projection measurement needs what the workflow really writes (each batch ends with the
invoice's snapshot). One invoice runs through reminder, warning and late fee and is paid, on the
time-skipping test server with the recording activities (``bench.recording``); its batches
are then copied under other invoice ids.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

from activities.ledger import Batch
from bench.measure_timeskip import time_skipping_environment
from bench.recording import Recorder, recording_worker, with_pydantic
from bench.workload import AMOUNT_MINOR, LATE_FEE_MINOR, boundary_invoice
from workflows.invoice import InvoiceWorkflow
from workflows.models import DomainEvent, EventKind, Payment
from workflows.state import InvoiceWorkflowInput

PAID_AFTER = timedelta(days=11)  # after the late fee (day 10 of the default policy), before the ultimatum


async def record_paid_lifecycle() -> list[Batch]:
    """The batches of one invoice of the default policy (at any hour), paid in full after its late fee."""
    env = await time_skipping_environment()
    try:
        client, recorder = with_pydantic(env.client), Recorder()
        invoice = boundary_invoice(f"REC-{uuid.uuid4().hex[:6]}", await env.get_current_time() + timedelta(days=15))
        async with recording_worker(client, recorder) as queue:
            handle = await client.start_workflow(
                InvoiceWorkflow.run, InvoiceWorkflowInput(invoice=invoice), id=invoice.workflow_id, task_queue=queue
            )
            due = invoice.due_date
            await env.sleep(due - (await env.get_current_time()).date() + PAID_AFTER)
            payment = Payment(payment_id="PAY-1", amount_minor=AMOUNT_MINOR + LATE_FEE_MINOR, currency=invoice.currency)
            await handle.execute_update(InvoiceWorkflow.record_payment, payment)
            await handle.result()
        return recorder.batches
    finally:
        await env.shutdown()


def copied(batches: list[Batch], invoice_id: str) -> list[Batch]:
    """The same batches for another invoice id (the issued invoice inside says so too)."""

    def renamed(event: DomainEvent) -> DomainEvent:
        data = event.data
        if event.kind == EventKind.INVOICE_ISSUED:
            data = {**data, "invoice": {**data["invoice"], "invoice_id": invoice_id}}
        return event.model_copy(update={"invoice_id": invoice_id, "data": data})

    return [Batch([renamed(e) for e in batch.events], batch.snapshot) for batch in batches]
