"""On the real server (the dev server), a rejected update adds nothing at all to history."""

from __future__ import annotations

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowUpdateFailedError
from temporalio.testing import WorkflowEnvironment

from bench.recording import Recorder, recording_worker, with_pydantic
from tests.harness import eventually, make_invoice, start_invoice
from workflows.invoice import InvoiceWorkflow
from workflows.models import DecideLegal, ResolveDispute

BAD_UPDATES = [
    ("record_payment", {"payment_id": "p1", "amount_minor": -100, "currency": "EUR"}),
    ("record_payment", {"payment_id": "p2", "amount_minor": 100, "currency": "USD"}),
    ("record_payment", {"payment_id": "p3", "amount_minor": "100", "currency": "EUR"}),
    ("record_payment", "garbage"),
    ("resolve_dispute", ResolveDispute(outcome="rejected")),
    ("decide_legal", DecideLegal(decision="sue")),
]


async def test_rejected_updates_leave_history_untouched(dev_env: WorkflowEnvironment):
    client = with_pydantic(dev_env.client)
    recorder = Recorder()
    async with recording_worker(client, recorder) as queue:
        invoice = make_invoice((await dev_env.get_current_time()).date())
        handle = await start_invoice(client, queue, invoice)
        await eventually(lambda: "notice_sent" in recorder.event_kinds(invoice.invoice_id))
        await eventually(lambda: _history_settled(handle))
        before = (await handle.fetch_history()).events
        for name, payload in BAD_UPDATES:
            with pytest.raises(WorkflowUpdateFailedError):
                await handle.execute_update(name, payload)
        after = (await handle.fetch_history()).events
        assert len(after) == len(before)
        status = await handle.query(InvoiceWorkflow.status)
        assert status.balance_minor == invoice.amount_minor and status.paid_minor == 0
        await handle.terminate("test finished")


async def _history_settled(handle) -> bool:
    return (await handle.fetch_history()).events[-1].event_type == EventType.EVENT_TYPE_TIMER_STARTED
