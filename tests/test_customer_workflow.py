"""CustomerWorkflow on the time-skipping server: invoices of one customer hold and release its service and
equipment; a piece is cut once for the first hold and restored once after the last release."""

from __future__ import annotations

import uuid
from datetime import date, timedelta

import pytest
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.client import Client, WithStartWorkflowOperation, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from bench.recording import Recorder, recording_worker
from tests.harness import eventually, make_invoice, start_invoice
from worker.sandbox import workflow_runner
from workflows import policy
from workflows import search_attributes as sa
from workflows.customer import CustomerWorkflow
from workflows.holds import CustomerWorkflowInput, HoldOutcome, HoldRequest, ReleaseRequest
from workflows.invoice import InvoiceWorkflow
from workflows.models import (
    DecideLegal,
    Invoice,
    InvoiceState,
    Payment,
    StageAction,
    customer_workflow_id,
    format_money,
)

AUTHORISED = {"remote_disconnect_authorized": True, "equipment_ids": ["bmc-1"]}


@pytest.fixture
def customer_id() -> str:
    return f"CUST-{uuid.uuid4().hex[:8]}"


async def invoice_of(env, client, queue, recorder, customer_id, *, days_later: int = 0, terms=AUTHORISED):
    today = (await env.get_current_time()).date() + timedelta(days=days_later)
    invoice = make_invoice(today, customer_id=customer_id, terms={**make_invoice(today).terms.model_dump(), **terms})
    handle = await start_invoice(client, queue, invoice)
    await eventually(lambda: "invoice_issued" in recorder.notice_kinds(invoice.invoice_id))
    return invoice, handle


async def suspend(env: WorkflowEnvironment, recorder: Recorder, *invoices: Invoice) -> None:
    """Skip to the latest suspension of ``invoices`` and wait until each has told its client and recorded it."""
    due = max(policy.stage_due_at(i, i.policy.stage(StageAction.SUSPEND), timedelta(0)) for i in invoices)
    await env.sleep(due - await env.get_current_time() + timedelta(seconds=1))
    for invoice in invoices:  # the events are written after the notice: wait for the one that records it
        await eventually(lambda i=invoice: _told(recorder, i, "suspended"))


def _told(recorder: Recorder, invoice: Invoice, kind: str) -> bool:
    return any(e.data["kind"] == kind for e in recorder.events_of(invoice.invoice_id, "notice_sent"))


async def pay_in_full(env: WorkflowEnvironment, handle: WorkflowHandle) -> None:
    balance = (await handle.query(InvoiceWorkflow.status)).balance_minor
    await handle.execute_update(InvoiceWorkflow.record_payment, Payment(payment_id="full", amount_minor=balance, currency="EUR"))
    # waiting on a result skips time to the next thing due: an idle customer's would be its 10-year run timeout
    with env.auto_time_skipping_disabled():
        assert (await handle.result()).state == InvoiceState.PAID


def calls(recorder: Recorder) -> list[tuple[str, str]]:
    """Every service and equipment action, in order, by its idempotency key (without the customer's first run id)."""
    return [(verb, short(r.idempotency_key)) for verb, r in recorder.service_calls + recorder.equipment_calls]


def short(key: str) -> str:
    """``customer-X/<first run id>/<piece>/<step>`` as ``customer-X/<piece>/<step>``."""
    workflow_id, _, piece, step = key.split("/")
    return f"{workflow_id}/{piece}/{step}"


async def test_two_invoices_share_one_cut_and_the_last_release_restores_once(env, client, queue, recorder, customer_id):
    first, first_handle = await invoice_of(env, client, queue, recorder, customer_id)
    second, second_handle = await invoice_of(env, client, queue, recorder, customer_id, days_later=2)
    await env.sleep(timedelta(days=2))
    await suspend(env, recorder, first, second)
    customer = f"customer-{customer_id}"
    assert sorted(calls(recorder)) == [
        ("suspend", f"{customer}/equipment:bmc-1/cut-1"),
        ("suspend", f"{customer}/service/cut-1"),
    ]
    # both invoices record the cut; only the first one's hold changed the equipment
    assert [e.data["changed"] for e in recorder.events_of(first.invoice_id, "equipment_suspended")] == [True]
    assert [e.data["changed"] for e in recorder.events_of(second.invoice_id, "equipment_suspended")] == [False]
    described = await client.get_workflow_handle(customer).describe()
    assert described.typed_search_attributes.get(sa.SUSPENDED_INVOICES) == 2.0
    assert described.typed_search_attributes.get(sa.CUSTOMER_STANDING) == "suspended"
    assert described.typed_search_attributes.get(sa.DAYS_OVERDUE) == 22
    details = (await client.get_workflow_handle(customer).query("__temporal_workflow_metadata", result_type=WorkflowMetadata)).current_details
    owed = format_money(sum([(await h.query(InvoiceWorkflow.status)).balance_minor for h in (first_handle, second_handle)]), "EUR")
    assert details == (
        f"Owes {owed} (as its invoices last said) with 2 invoice(s) suspended"
        f" ({', '.join(sorted([first.invoice_id, second.invoice_id]))});"
        " support and orders, equipment bmc-1 cut, restored when no invoice holds it any more."
    )

    await pay_in_full(env, first_handle)
    assert [verb for verb, _ in recorder.equipment_calls] == ["suspend"]  # the second invoice still holds it
    assert [verb for verb, _ in recorder.service_calls] == ["suspend"]
    assert recorder.events_of(first.invoice_id, "equipment_restored") == []
    assert recorder.events_of(first.invoice_id, "service_restored")[0].data["support_and_orders_blocked"] is True
    assert "restored" not in recorder.notice_kinds(first.invoice_id)  # the client's service is still cut

    await pay_in_full(env, second_handle)
    assert sorted(calls(recorder)) == [
        ("restore", f"{customer}/equipment:bmc-1/restore-1"),
        ("restore", f"{customer}/service/restore-1"),
        ("suspend", f"{customer}/equipment:bmc-1/cut-1"),
        ("suspend", f"{customer}/service/cut-1"),
    ]
    assert recorder.equipment_calls[-1][1].invoice_id == first.invoice_id  # under the invoice whose hold cut it
    assert [e.data["state"] for e in recorder.events_of(second.invoice_id, "equipment_restored")] == ["On"]
    assert recorder.events_of(second.invoice_id, "service_restored")[0].data["support_and_orders_blocked"] is False
    assert "restored" in recorder.notice_kinds(second.invoice_id)
    await eventually(lambda: _attribute_is(client, customer, sa.CUSTOMER_STANDING, "current"))


async def _attribute_is(client: Client, workflow_id: str, key, value) -> bool:
    return (await client.get_workflow_handle(workflow_id).describe()).typed_search_attributes.get(key) == value


async def test_a_written_off_invoice_keeps_holding_after_the_other_is_paid(env, client, queue, recorder, customer_id):
    written_off, written_off_handle = await invoice_of(env, client, queue, recorder, customer_id)
    paid, paid_handle = await invoice_of(env, client, queue, recorder, customer_id)
    await suspend(env, recorder, written_off, paid)
    review = policy.stage_due_at(written_off, written_off.policy.stage(StageAction.LEGAL_REVIEW), timedelta(0))
    await env.sleep(review - await env.get_current_time() + timedelta(seconds=1))
    await eventually(lambda: _state_is(written_off_handle, InvoiceState.LEGAL_REVIEW))
    await written_off_handle.execute_update(InvoiceWorkflow.decide_legal, DecideLegal(decision="write_off"))
    # (it stays open for recoveries a while, holding what it held)
    await eventually(lambda: _state_is(written_off_handle, InvoiceState.WRITTEN_OFF))
    await pay_in_full(env, paid_handle)
    assert [verb for verb, _ in recorder.equipment_calls] == ["suspend"]
    assert [verb for verb, _ in recorder.service_calls] == ["suspend"]
    ledger = await client.get_workflow_handle(f"customer-{customer_id}").query(CustomerWorkflow.holds)
    assert ledger.pieces["equipment:bmc-1"].holders == [written_off.invoice_id]
    assert ledger.pieces["equipment:bmc-1"].cut


async def _state_is(handle: WorkflowHandle, state: InvoiceState) -> bool:
    return (await handle.query(InvoiceWorkflow.status)).state == state


async def test_a_failed_cut_is_tried_again_when_the_next_invoice_holds(env, client, queue, recorder, customer_id):
    recorder.unreachable_equipment.add("bmc-1")
    first, _ = await invoice_of(env, client, queue, recorder, customer_id)
    await suspend(env, recorder, first)
    assert recorder.events_of(first.invoice_id, "suspend_failed")[0].data["equipment_id"] == "bmc-1"
    recorder.unreachable_equipment.clear()
    second, _ = await invoice_of(env, client, queue, recorder, customer_id)
    await suspend(env, recorder, second)
    customer = f"customer-{customer_id}"
    keys = [short(r.idempotency_key) for _, r in recorder.equipment_calls]
    assert keys == [f"{customer}/equipment:bmc-1/cut-1", f"{customer}/equipment:bmc-1/cut-2"]
    assert recorder.events_of(second.invoice_id, "equipment_suspended")[0].data["changed"] is True



async def test_a_failed_restore_is_tried_again_when_the_next_invoice_releases(env, client, queue, recorder, customer_id):
    first, first_handle = await invoice_of(env, client, queue, recorder, customer_id)
    await suspend(env, recorder, first)
    recorder.unreachable_equipment.add("bmc-1")
    await pay_in_full(env, first_handle)
    assert recorder.events_of(first.invoice_id, "restore_failed")[0].data["equipment_id"] == "bmc-1"
    assert (await first_handle.describe()).typed_search_attributes.get(sa.FAILED_EQUIPMENT) == ["bmc-1"]
    recorder.unreachable_equipment.clear()
    second, second_handle = await invoice_of(env, client, queue, recorder, customer_id)
    await suspend(env, recorder, second)
    assert recorder.events_of(second.invoice_id, "equipment_suspended")[0].data["changed"] is False  # still cut
    await pay_in_full(env, second_handle)
    customer = f"customer-{customer_id}"
    assert [(verb, short(r.idempotency_key)) for verb, r in recorder.equipment_calls] == [
        ("suspend", f"{customer}/equipment:bmc-1/cut-1"),
        ("restore", f"{customer}/equipment:bmc-1/restore-1"),
        ("restore", f"{customer}/equipment:bmc-1/restore-1"),  # the same restore, tried again
    ]
    assert [e.data["state"] for e in recorder.events_of(second.invoice_id, "equipment_restored")] == ["On"]

# --- the customer's own requests: idempotency, validation, continue-as-new -----------------


def hold_request(customer_id: str, invoice_id: str, key: str) -> HoldRequest:
    return HoldRequest(
        idempotency_key=key,
        customer_id=customer_id,
        invoice_id=invoice_id,
        equipment_ids=["bmc-1"],
        remote_disconnect_authorized=True,
        due_date=date(2026, 1, 15),
        balance_minor=100_000,
        currency="EUR",
    )


async def ask(client: Client, queue: str, update: str, request, customer_id: str, history_limit: int = 10_000) -> HoldOutcome:
    """What ``activities.customer`` does, from the test: an update-with-start under the request's key."""
    start = WithStartWorkflowOperation(
        CustomerWorkflow.run,
        CustomerWorkflowInput(customer_id=customer_id, history_limit=history_limit),
        id=customer_workflow_id(customer_id),
        task_queue=queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
    )
    return await client.execute_update_with_start_workflow(
        update, request, start_workflow_operation=start, id=request.idempotency_key, result_type=HoldOutcome
    )


async def test_a_repeated_request_gets_the_same_answer_and_acts_once_even_after_continue_as_new(
    client, queue, recorder, customer_id
):
    first = await ask(client, queue, "hold", hold_request(customer_id, "INV-A", "invoice-INV-A/hold-equipment"), customer_id, 60)
    assert first.pieces[0].cut and first.pieces[0].changed_now
    handle = client.get_workflow_handle(customer_workflow_id(customer_id))
    first_run = (await handle.describe()).run_id
    # other invoices come and go until the history is long enough to continue as new
    for n in range(12):
        await ask(client, queue, "hold", hold_request(customer_id, f"INV-{n}", f"invoice-INV-{n}/hold-equipment"), customer_id)
        await ask(client, queue, "release", ReleaseRequest(
            idempotency_key=f"invoice-INV-{n}/release", customer_id=customer_id, invoice_id=f"INV-{n}", state="paid"
        ), customer_id)
    await eventually(lambda: _run_changed(handle, first_run))
    again = await ask(client, queue, "hold", hold_request(customer_id, "INV-A", "invoice-INV-A/hold-equipment"), customer_id)
    assert again == first
    assert [verb for verb, _ in recorder.equipment_calls] == ["suspend"]  # INV-A held it throughout
    released = ReleaseRequest(idempotency_key="invoice-INV-A/release", customer_id=customer_id, invoice_id="INV-A", state="paid")
    answer = await ask(client, queue, "release", released, customer_id)
    assert await ask(client, queue, "release", released, customer_id) == answer
    assert not answer.pieces[0].cut and answer.pieces[0].changed_now
    assert [verb for verb, _ in recorder.equipment_calls] == ["suspend", "restore"]


async def _run_changed(handle: WorkflowHandle, run_id: str) -> bool:
    return (await handle.describe()).run_id != run_id


async def test_a_request_for_another_customer_is_refused_and_changes_nothing(client, queue, recorder, customer_id):
    await ask(client, queue, "hold", hold_request(customer_id, "INV-A", "k-1"), customer_id)
    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await ask(client, queue, "hold", hold_request("CUST-OTHER", "INV-B", "k-2"), customer_id)
    assert "CUST-OTHER" in str(refused.value.cause)
    ledger = await client.get_workflow_handle(customer_workflow_id(customer_id)).query(CustomerWorkflow.holds)
    assert ledger.pieces["equipment:bmc-1"].holders == ["INV-A"]


async def test_a_worker_gone_during_the_cut_leaves_one_cut_and_one_answer(env, client, recorder, customer_id):
    """The worker stops while the customer's block is being recorded and the invoice waits for its answer:
    the next worker retries both under the same keys, and the customer acts once."""
    queue = f"restarted-{customer_id}"
    held = recorder.hold("suspend_service")
    # no sticky queue: the test server would leave the next workflow task on the stopped worker's
    async with Worker(client, task_queue=queue, workflows=[InvoiceWorkflow, CustomerWorkflow],
                      activities=recorder.activities, workflow_runner=workflow_runner(), max_cached_workflows=0):
        invoice, handle = await invoice_of(env, client, queue, recorder, customer_id)
        due = policy.stage_due_at(invoice, invoice.policy.stage(StageAction.SUSPEND), timedelta(0))
        await env.sleep(due - await env.get_current_time() + timedelta(seconds=1))
        await held.reached.wait()
    async with recording_worker(client, recorder, task_queue=queue):
        await eventually(lambda: _told(recorder, invoice, "suspended"), timeout=30)
        assert calls(recorder) == [
            ("suspend", f"customer-{customer_id}/service/cut-1"),
            ("suspend", f"customer-{customer_id}/equipment:bmc-1/cut-1"),
        ]
        assert len(recorder.events_of(invoice.invoice_id, "service_suspended")) == 1
        assert len(recorder.events_of(invoice.invoice_id, "equipment_suspended")) == 1
        await pay_in_full(env, handle)
    assert [verb for verb, _ in recorder.service_calls + recorder.equipment_calls] == ["suspend", "restore", "suspend", "restore"]
