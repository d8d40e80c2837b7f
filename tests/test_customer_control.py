"""Ops control per customer on the time-skipping server (issue 19 item 5): a pause holds every invoice of the
customer and moves their steps by its length; an until-date ends it by itself; an exclusion from cuts leaves
the equipment alone at suspension; a refused request leaves no trace in the history."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.client import Client, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from bench.recording import Recorder
from client import customers
from tests.harness import eventually, make_invoice, start_invoice
from worker.sandbox import workflow_runner
from workflows import policy
from workflows import search_attributes as sa
from workflows.customer import CustomerWorkflow
from workflows.customer_control import CutsRequest, PauseCustomer, ResumeCustomer
from workflows.invoice import InvoiceWorkflow
from workflows.models import Invoice, customer_workflow_id
from workflows.state import CustomerPause, Dispute, InvoiceLedger

AUTHORISED = {"remote_disconnect_authorized": True, "equipment_ids": ["bmc-1"]}
WORKFLOW_TASK_EVENTS = {
    EventType.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED,
    EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED,
    EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED,
}
TOLERANCE = timedelta(seconds=30)  # the invoices hear of a decision a moment after the customer takes it


@pytest.fixture
def customer_id() -> str:
    return f"CUST-{uuid.uuid4().hex[:8]}"


async def open_invoice(env, client: Client, queue: str, recorder: Recorder, customer_id: str, **terms) -> tuple[Invoice, WorkflowHandle]:
    """An invoice started as the API does (its customer hears of it), due in 14 days."""
    today = (await env.get_current_time()).date()
    invoice = make_invoice(today, customer_id=customer_id, terms={**make_invoice(today).terms.model_dump(), **terms})
    handle = await start_invoice(client, queue, invoice)
    await customers.register_invoice(client, queue, invoice)
    await eventually(lambda: "invoice_issued" in recorder.notice_kinds(invoice.invoice_id))
    return invoice, handle


async def next_at(handle: WorkflowHandle) -> datetime | None:
    status = await handle.query(InvoiceWorkflow.status)
    return status.next_action.at if status.next_action else None


async def paused(handle: WorkflowHandle) -> bool:
    return await next_at(handle) is None


def pause(customer_id: str, until: datetime | None = None, reason: str = "CFO agreed a call on Friday") -> PauseCustomer:
    return PauseCustomer(customer_id=customer_id, reason=reason, requested_by="ops:maria", until=until)


async def test_a_pause_moves_both_invoices_steps_by_its_length_and_resume_ends_it_early(env, client, queue, recorder, customer_id):
    first, first_handle = await open_invoice(env, client, queue, recorder, customer_id)
    second, second_handle = await open_invoice(env, client, queue, recorder, customer_id)
    before = [await next_at(first_handle), await next_at(second_handle)]
    assert all(before)

    control = await customers.pause(client, queue, pause(customer_id, until=await env.get_current_time() + timedelta(days=60)))
    assert control.pause is not None and control.pause.requested_by == "ops:maria"
    await eventually(lambda: paused(first_handle))
    await eventually(lambda: paused(second_handle))
    customer = client.get_workflow_handle(customer_workflow_id(customer_id))
    assert (await customer.describe()).typed_search_attributes.get(sa.ON_HOLD) is True
    metadata = await customer.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
    assert "On hold since" in metadata.current_details and "ops:maria: CFO agreed a call on Friday" in metadata.current_details

    await env.sleep(timedelta(days=20))  # past the reminder, the warning and the late fee: none goes out
    assert [k for k in recorder.notice_kinds(first.invoice_id) if k != "invoice_issued"] == []
    assert [k for k in recorder.notice_kinds(second.invoice_id) if k != "invoice_issued"] == []

    control = await customers.resume(client, queue, ResumeCustomer(customer_id=customer_id, requested_by="ops:maria", reason="call held"))
    assert control.pause is None
    assert [(d.what.split(" ")[0], d.requested_by) for d in control.decisions] == [("paused", "ops:maria"), ("resumed", "ops:maria")]
    assert control.decisions[-1].what == "resumed after 20.0 days" and control.decisions[-1].reason == "call held"
    for handle, was in zip((first_handle, second_handle), before, strict=True):
        await eventually(lambda h=handle: _not_paused(h))
        moved = await next_at(handle)
        assert moved is not None and abs(moved - was - timedelta(days=20)) < TOLERANCE
    assert (await customer.describe()).typed_search_attributes.get(sa.ON_HOLD) is False
    story = [a.what for a in (await first_handle.query(InvoiceWorkflow.status)).actions]
    assert any(s.startswith("Escalation paused: customer on hold") and "ops:maria" in s for s in story)
    assert any(s.startswith("Escalation resumed") for s in story)

    # the customer's history and its invoices' (each took the messages in a signal handler, behind the patch) replay
    replayer = Replayer(
        workflows=[CustomerWorkflow, InvoiceWorkflow], data_converter=pydantic_data_converter, workflow_runner=workflow_runner()
    )
    markers = [e async for e in first_handle.fetch_history_events() if e.event_type == EventType.EVENT_TYPE_MARKER_RECORDED]
    assert any(b"customer-control" in m.SerializeToString() for m in markers)
    for handle in (customer, first_handle, second_handle):
        result = await replayer.replay_workflow(await handle.fetch_history(), raise_on_replay_failure=False)
        assert result.replay_failure is None, result.replay_failure


async def _not_paused(handle: WorkflowHandle) -> bool:
    return not await paused(handle)


async def test_an_until_date_ends_the_pause_by_itself(env, client, queue, recorder, customer_id):
    _, handle = await open_invoice(env, client, queue, recorder, customer_id)
    was = await next_at(handle)
    assert was is not None
    now = await env.get_current_time()
    first = pause(customer_id, until=now + timedelta(days=5))
    await customers.pause(client, queue, first)
    await customers.pause(client, queue, first)  # a repeat changes nothing
    await eventually(lambda: paused(handle))
    shortened = await customers.pause(client, queue, pause(customer_id, until=now + timedelta(days=3), reason="call moved"))
    assert [d.what for d in shortened.decisions] == [
        f"paused until {first.until.isoformat(timespec='minutes')}",
        f"pause changed: now until {(now + timedelta(days=3)).isoformat(timespec='minutes')}",
    ]
    await env.sleep(timedelta(days=3, minutes=1))
    await eventually(lambda: _not_paused(handle))
    moved = await next_at(handle)
    assert moved is not None and abs(moved - was - timedelta(days=3)) < TOLERANCE
    control = await customers.customer_control(client, customer_id)
    assert control.pause is None
    assert control.decisions[-1].what.startswith("pause ended: its until-date came")
    assert control.decisions[-1].requested_by == "ops:maria" and control.decisions[-1].reason == "call moved"


async def test_an_invoice_opened_during_the_pause_is_paused_too(env, client, queue, recorder, customer_id):
    await customers.pause(client, queue, pause(customer_id))
    _, handle = await open_invoice(env, client, queue, recorder, customer_id)
    await eventually(lambda: paused(handle))


async def test_excluded_from_cuts_suspension_blocks_support_but_cuts_no_equipment(env, client, queue, recorder, customer_id):
    control = await customers.set_cuts(
        client, queue, CutsRequest(customer_id=customer_id, excluded=True, reason="hospital", requested_by="ops:li")
    )
    assert control.cuts_excluded
    invoice, handle = await open_invoice(env, client, queue, recorder, customer_id, **AUTHORISED)
    await env.sleep(timedelta(days=14 + 20, minutes=1))  # past the suspend stage
    await eventually(lambda: recorder.events_of(invoice.invoice_id, "service_suspended"))
    assert [verb for verb, _ in recorder.service_calls] == ["suspend"]
    assert recorder.equipment_calls == []
    assert recorder.events_of(invoice.invoice_id, "equipment_suspended") == []
    assert recorder.events_of(invoice.invoice_id, "suspend_failed") == []
    customer = client.get_workflow_handle(customer_workflow_id(customer_id))
    ledger = await customer.query(CustomerWorkflow.holds)
    assert ledger.pieces["equipment:bmc-1"].holders == [invoice.invoice_id] and not ledger.pieces["equipment:bmc-1"].cut
    assert any("not cut: ops excluded the customer from automatic cuts" in a.what for a in ledger.story)
    metadata = await customer.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
    assert "Excluded from automatic cuts (ops:li: hospital)" in metadata.current_details

    balance = (await handle.query(InvoiceWorkflow.status)).balance_minor
    await handle.execute_update(InvoiceWorkflow.record_payment, {"payment_id": "full", "amount_minor": balance, "currency": "EUR"})
    await eventually(lambda: len(recorder.service_calls) == 2)
    assert [verb for verb, _ in recorder.service_calls] == ["suspend", "restore"]
    assert recorder.equipment_calls == []  # nothing cut, nothing to restore


async def test_included_again_the_held_equipment_is_cut(env, client, queue, recorder, customer_id):
    excluded = CutsRequest(customer_id=customer_id, excluded=True, reason="hospital", requested_by="ops:li")
    await customers.set_cuts(client, queue, excluded)
    invoice, _ = await open_invoice(env, client, queue, recorder, customer_id, **AUTHORISED)
    await env.sleep(timedelta(days=14 + 20, minutes=1))
    await eventually(lambda: recorder.events_of(invoice.invoice_id, "service_suspended"))
    assert recorder.equipment_calls == []
    await customers.set_cuts(client, queue, excluded.model_copy(update={"excluded": False, "reason": "contract ended"}))
    await eventually(lambda: [verb for verb, _ in recorder.equipment_calls] == ["suspend"])


async def test_a_bad_until_date_or_an_empty_reason_is_refused_and_leaves_no_trace(env, client, queue, recorder, customer_id):
    await customers.set_cuts(client, queue, CutsRequest(customer_id=customer_id, excluded=False, reason="start", requested_by="t"))
    handle = client.get_workflow_handle(customer_workflow_id(customer_id))
    length = len([e async for e in handle.fetch_history_events()])  # its update's acceptance and completion in it
    now = await env.get_current_time()
    for until, problem in ((now - timedelta(hours=1), "not in the future"), (now + timedelta(days=400), "more than 366 days")):
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await customers.pause(client, queue, pause(customer_id, until=until))
        assert problem in str(refused.value.cause)
    with pytest.raises(WorkflowUpdateFailedError):
        await handle.execute_update(
            "pause", {"customer_id": customer_id, "reason": "", "requested_by": "ops:maria"}, result_type=dict
        )
    with pytest.raises(WorkflowUpdateFailedError):
        await handle.execute_update(CustomerWorkflow.pause, pause("SOMEONE-ELSE"))  # another customer's request
    # the time-skipping server writes a workflow task for each refusal (the real one drops it): nothing else
    after = [e.event_type async for e in handle.fetch_history_events()][length:]
    assert after and set(after) <= WORKFLOW_TASK_EVENTS
    assert (await customers.customer_control(client, customer_id)).pause is None


async def test_a_closed_invoice_is_left_out_and_a_malformed_message_is_dropped(env, client, queue, recorder, customer_id):
    closed, closed_handle = await open_invoice(env, client, queue, recorder, customer_id)
    await closed_handle.execute_update(InvoiceWorkflow.record_payment, {"payment_id": "p", "amount_minor": 100_000, "currency": "EUR"})
    await closed_handle.result()
    _, handle = await open_invoice(env, client, queue, recorder, customer_id)
    for bad in ({"sequence": "x"}, {"customer_id": "SOMEONE-ELSE", "sequence": 99, "paused": True}):
        await handle.signal("customer_control", bad)
    assert not await paused(handle)  # dropped, and the invoice goes on
    await customers.pause(client, queue, pause(customer_id))
    await eventually(lambda: paused(handle))
    customer = client.get_workflow_handle(customer_workflow_id(customer_id))
    await eventually(lambda: _told_everyone(customer))
    assert closed.invoice_id not in (await customer.query(CustomerWorkflow.cash)).open_invoices


async def _told_everyone(customer: WorkflowHandle) -> bool:
    return not (await customer.query(CustomerWorkflow.control)).to_tell


def test_a_customer_pause_counts_once_beside_the_invoices_own_pause():
    start = datetime(2027, 1, 1, tzinfo=timezone.utc)
    ledger = InvoiceLedger(invoice=make_invoice(start.date()))
    ledger.customer_pause = CustomerPause(since=start, reason="r", requested_by="ops")
    assert policy.customer_pause_shift(ledger, start + timedelta(days=4)) == timedelta(days=4)
    ledger.dispute = Dispute(opened_at=start + timedelta(days=1), reason="hours")  # disputed during the pause
    assert policy.customer_pause_shift(ledger, start + timedelta(days=4)) == timedelta(days=1)
    ledger.dispute = Dispute(opened_at=start - timedelta(days=1), reason="hours")  # disputed before it
    assert policy.customer_pause_shift(ledger, start + timedelta(days=4)) == timedelta(0)
