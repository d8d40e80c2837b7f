"""Cash application on the time-skipping server: a customer's payment split across its open invoices
(the remittance's first, then oldest due), the rest kept as credit for the next invoice, once per payment id."""

from __future__ import annotations

import asyncio
import gc
import uuid
from datetime import date, datetime, timedelta, timezone

import pytest
from temporalio import activity
from temporalio.client import (
    WithStartWorkflowOperation,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError
from temporalio.worker import Replayer, Worker

from activities.customer_payments import deliver_allocation
from bench.recording import Recorder, recording_worker
from client import customers
from tests.harness import eventually, make_invoice, start_invoice
from worker.sandbox import workflow_runner
from workflows import creditor_reference, policy
from workflows.cash import (
    AllocationRule,
    CashBook,
    CustomerPayment,
    DeliverAllocation,
    Delivered,
    InvoiceBalance,
    allocate,
    allocation_id,
    named_invoices,
)
from workflows.customer import CustomerWorkflow
from workflows.customer_view import details
from workflows.holds import CustomerLedger, CustomerWorkflowInput
from workflows.invoice import InvoiceWorkflow
from workflows.models import Invoice, StageAction, customer_workflow_id, format_money, invoice_workflow_id

VALUE_DATE = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(hours=1)  # the same for every repeat


@pytest.fixture
def customer_id() -> str:
    return f"CUST-{uuid.uuid4().hex[:8]}"


async def open_invoice(env, client, queue, customer_id: str, due_in_days: int, amount_minor: int = 100_000) -> Invoice:
    """Start an invoice as the API does: its workflow, then its customer hears of it."""
    today = (await env.get_current_time()).date()
    invoice = make_invoice(today, customer_id=customer_id, due_date=today + timedelta(days=due_in_days), amount_minor=amount_minor)
    await start_invoice(client, queue, invoice)
    await customers.register_invoice(client, queue, invoice)
    return invoice


def payment(customer_id: str, amount_minor: int, payment_id: str = "TRF-1", **fields) -> CustomerPayment:
    return CustomerPayment(
        payment_id=payment_id,
        customer_id=customer_id,
        amount_minor=amount_minor,
        currency="EUR",
        received_at=VALUE_DATE,
        **fields,
    )


def recorded(recorder: Recorder, invoice: Invoice) -> dict[str, int]:
    """The payments the invoice recorded in its events: payment id -> amount."""
    return {e.data["payment_id"]: e.data["amount_minor"] for e in recorder.events_of(invoice.invoice_id, "payment_recorded")}


async def paid(client, invoice: Invoice) -> int:
    status = await client.get_workflow_handle(invoice_workflow_id(invoice.invoice_id)).query(InvoiceWorkflow.status)
    return status.paid_minor


async def test_the_remittance_goes_first_then_oldest_due_and_the_rest_is_credit_for_the_next_invoice(
    env, client, queue, recorder, customer_id
):
    later = await open_invoice(env, client, queue, customer_id, due_in_days=20)
    older = await open_invoice(env, client, queue, customer_id, due_in_days=10)
    named = await open_invoice(env, client, queue, customer_id, due_in_days=30)
    newest = await open_invoice(env, client, queue, customer_id, due_in_days=25)

    answer = await customers.record_payment(
        client, queue, payment(customer_id, 350_000 - 40_000 + 10_000, remittance=f"Rechnung {named.invoice_id.lower()} + rest")
    )

    split = [(a.invoice_id, a.amount_minor, a.named) for a in answer.allocations]
    assert split == [
        (named.invoice_id, 100_000, True),
        (older.invoice_id, 100_000, False),
        (later.invoice_id, 100_000, False),
        (newest.invoice_id, 20_000, False),
    ]
    assert answer.credit_minor == 0 and all(a.delivered for a in answer.allocations)
    assert [a.balance_minor for a in answer.allocations] == [0, 0, 0, 80_000]
    await eventually(lambda: recorded(recorder, newest) == {allocation_id("TRF-1", newest.invoice_id): 20_000})

    # paid beyond every open invoice: the rest is the customer's credit, shown in its details
    second = await customers.record_payment(client, queue, payment(customer_id, 130_000, "TRF-2"))
    assert [(a.invoice_id, a.amount_minor) for a in second.allocations] == [(newest.invoice_id, 80_000)]
    assert second.credit_minor == 50_000
    customer = client.get_workflow_handle(customer_workflow_id(customer_id))
    assert f"Credit {format_money(50_000, 'EUR')}" in details(await customer.query(CustomerWorkflow.holds))
    assert (await customer.query(CustomerWorkflow.cash)).credit() == {"EUR": 50_000}

    # the next invoice that opens takes the credit, as a payment that names the customer payment and the invoice
    following = await open_invoice(env, client, queue, customer_id, due_in_days=40)

    await eventually(lambda: recorded(recorder, following) == {allocation_id("TRF-2", following.invoice_id): 50_000})
    assert (await customer.query(CustomerWorkflow.cash)).credit() == {}

    # the customer's history with its payments replays with this code
    replayer = Replayer(workflows=[CustomerWorkflow], data_converter=pydantic_data_converter, workflow_runner=workflow_runner())
    result = await replayer.replay_workflow(await customer.fetch_history(), raise_on_replay_failure=False)
    assert result.replay_failure is None, result.replay_failure


async def test_payments_and_credit_survive_continue_as_new_and_old_payments_are_kept_as_fingerprints(
    env, client, queue, recorder, customer_id
):
    start = WithStartWorkflowOperation(
        CustomerWorkflow.run,
        # continuing as new beyond 50 events, keeping the newest 2 fully applied payments whole
        CustomerWorkflowInput(
            customer_id=customer_id,
            history_limit=50,
            carried=CustomerLedger(customer_id=customer_id, cash=CashBook(applications_kept=2)),
        ),
        id=customer_workflow_id(customer_id),
        task_queue=queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
    )
    first = await client.execute_update_with_start_workflow(
        CustomerWorkflow.record_payment, payment(customer_id, 10_000, "P-0"), start_workflow_operation=start
    )
    assert (first.allocations, first.credit_minor) == ([], 10_000)  # no open invoice yet: all credit
    customer = client.get_workflow_handle(customer_workflow_id(customer_id))
    first_run = (await customer.describe()).run_id
    invoice = await open_invoice(env, client, queue, customer_id, due_in_days=10)
    for n in range(1, 7):
        await customers.record_payment(client, queue, payment(customer_id, 20_000, f"P-{n}"))
    assert (await customer.describe()).run_id != first_run  # it continued as new meanwhile
    repeat = await customers.record_payment(client, queue, payment(customer_id, 20_000, "P-6"))
    assert [(a.invoice_id, a.amount_minor) for a in repeat.allocations] == [] and repeat.credit_minor == 20_000
    cash = await customer.query(CustomerWorkflow.cash)
    assert cash.credit() == {"EUR": 30_000}
    # the oldest fully applied payments are kept as fingerprints: a repeat is recognised, other content refused
    assert list(cash.settled) == ["P-0", "P-1", "P-2"] and list(cash.payments) == ["P-3", "P-4", "P-5", "P-6"]
    old = await customers.record_payment(client, queue, payment(customer_id, 10_000, "P-0"))
    assert old.settled_earlier and old.payment == first.payment
    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await customers.record_payment(client, queue, payment(customer_id, 10_001, "P-0"))
    assert refused.value.cause.type == "PaymentConflict"
    assert await paid(client, invoice) == 100_000


async def test_credit_rule_pays_only_the_named_invoices(env, client, queue, recorder, customer_id):
    first = await open_invoice(env, client, queue, customer_id, due_in_days=5)
    named = await open_invoice(env, client, queue, customer_id, due_in_days=9)
    answer = await customers.record_payment(
        client, queue, payment(customer_id, 120_000, remittance=f"for {named.invoice_id}", rule=AllocationRule.CREDIT)
    )
    assert [(a.invoice_id, a.amount_minor) for a in answer.allocations] == [(named.invoice_id, 100_000)]
    assert answer.credit_minor == 20_000
    assert await paid(client, first) == 0 and await paid(client, named) == 100_000


async def test_one_payment_id_is_one_payment_repeats_get_the_same_answer_and_other_content_is_refused(
    env, client, queue, recorder, customer_id
):
    invoices = [await open_invoice(env, client, queue, customer_id, due_in_days=d) for d in (10, 20, 30)]
    # concurrent posts of one payment id, each naming another invoice: one payment, the others refused
    posts = [payment(customer_id, 100_000, "TRF-9", remittance=i.invoice_id) for i in invoices]
    results = await asyncio.gather(*(customers.record_payment(client, queue, p) for p in posts), return_exceptions=True)
    applied = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, WorkflowUpdateFailedError)]
    assert len(applied) == 1 and len(refused) == 2, results
    assert all(isinstance(r.cause, ApplicationError) and r.cause.type == "PaymentConflict" for r in refused)
    assert sum([await paid(client, i) for i in invoices]) == 100_000

    # the same payment again, concurrently: the same answer, nothing recorded twice
    winner = posts[results.index(applied[0])]
    again = await asyncio.gather(*(customers.record_payment(client, queue, winner) for _ in range(3)))
    assert all(a == applied[0] for a in again)
    cash = await client.get_workflow_handle(customer_workflow_id(customer_id)).query(CustomerWorkflow.cash)
    assert list(cash.payments) == ["TRF-9"] and cash.credit() == {}


async def test_the_signal_records_a_valid_payment_and_rejects_a_malformed_one(env, client, queue, recorder, customer_id):
    invoice = await open_invoice(env, client, queue, customer_id, due_in_days=10)
    customer = client.get_workflow_handle(customer_workflow_id(customer_id))
    await customer.signal("payment_received", {"payment_id": "bad", "amount_minor": -5})
    await customers.send_payment(client, queue, payment(customer_id, 30_000, "TRF-S"))

    async def applied() -> bool:
        cash = await customer.query(CustomerWorkflow.cash)
        return "TRF-S" in cash.payments and cash.payments["TRF-S"].done

    await eventually(applied)
    cash = await customer.query(CustomerWorkflow.cash)
    assert cash.rejected == 1
    assert await paid(client, invoice) == 30_000
    story = [a.what for a in (await customer.query(CustomerWorkflow.holds)).story]
    assert any(line.startswith("Payment rejected: malformed payment:") and "amount_minor: Input should be greater than 0" in line for line in story), story


async def test_a_payment_for_another_customer_is_refused_before_history(client, queue, customer_id):
    other = payment("CUST-other", 10_000)
    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await client.execute_update_with_start_workflow(
            CustomerWorkflow.record_payment,
            other,
            start_workflow_operation=customers._start(customer_id, queue),
        )
    assert isinstance(refused.value.cause, ApplicationError) and refused.value.cause.type == "InvalidRequest"


def test_a_creditor_reference_names_an_invoice_and_long_ids_stay_identifiers():
    printed = creditor_reference.printed(creditor_reference.for_invoice("INV-7"))
    assert named_invoices(f"thanks {printed} and inv-3", ["INV-3", "INV-7", "INV-9"]) == ["INV-7", "INV-3"]
    parts, left = allocate(
        250,
        f"paying {printed}",
        AllocationRule.OLDEST_DUE_FIRST,
        [InvoiceBalance(invoice_id=i, open=True, balance_minor=100) for i in ("INV-3", "INV-7", "INV-9")],
        {"INV-3": date(2026, 12, 1), "INV-9": date(2026, 11, 1)},
    )
    assert (parts, left) == ([("INV-7", 100, True), ("INV-9", 100, False), ("INV-3", 50, False)], 0)
    long_id = allocation_id("P" * 64, "I" * 64)
    assert len(long_id) == 64 and long_id != allocation_id("P" * 64, "I" * 63)


async def test_a_worker_gone_after_the_invoice_took_its_part_delivers_it_once(env, client, recorder, customer_id):
    """The worker stops after the invoice recorded an allocation but before the activity answered: the next
    worker delivers the same part again under the same payment id, and the invoice records it once."""
    queue = f"restarted-{customer_id}"
    delivered = asyncio.Event()

    @activity.defn(name="deliver_allocation")
    async def deliver_then_vanish(allocation: DeliverAllocation) -> Delivered:
        await deliver_allocation(allocation)
        delivered.set()
        await asyncio.Event().wait()  # the worker is gone before it answers
        raise AssertionError("unreachable")

    first_worker = [a for a in recorder.activities if a != deliver_allocation]
    async with Worker(client, task_queue=queue, workflows=[InvoiceWorkflow, CustomerWorkflow], workflow_runner=workflow_runner(),
                      activities=[*first_worker, deliver_then_vanish], max_cached_workflows=0):
        invoice = await open_invoice(env, client, queue, customer_id, due_in_days=10)
        paying = asyncio.create_task(customers.record_payment(client, queue, payment(customer_id, 40_000, "TRF-X")))
        await delivered.wait()
    async with recording_worker(client, recorder, task_queue=queue):
        answer = await paying
        assert [(a.invoice_id, a.amount_minor, a.delivered, a.balance_minor) for a in answer.allocations] == [
            (invoice.invoice_id, 40_000, True, 60_000)
        ]
        status = await client.get_workflow_handle(invoice.workflow_id).query(InvoiceWorkflow.status)
        assert status.paid_minor == 40_000
        assert [a.what for a in status.actions if a.what.startswith("Payment ")] == [
            f"Payment {allocation_id('TRF-X', invoice.invoice_id)}: {format_money(40_000, 'EUR')}"
        ]


async def test_an_invoice_started_before_registration_is_paid_once_it_holds_its_service(env, client, queue, customer_id):
    """An invoice the customer was never told of (started before cash application) is known once it holds."""
    today = (await env.get_current_time()).date()
    invoice = make_invoice(today, customer_id=customer_id)
    handle = await start_invoice(client, queue, invoice)  # no invoice_opened
    suspension = policy.stage_due_at(invoice, invoice.policy.stage(StageAction.SUSPEND), timedelta(0))
    await env.sleep(suspension - await env.get_current_time() + timedelta(seconds=1))
    customer = client.get_workflow_handle(customer_workflow_id(customer_id))

    async def holds() -> bool:
        return invoice.invoice_id in (await customer.query(CustomerWorkflow.holds)).invoices

    await eventually(holds)
    balance = (await handle.query(InvoiceWorkflow.status)).balance_minor
    await customers.send_payment(client, queue, payment(customer_id, balance + 5_000, "TRF-OLD"))

    async def applied() -> bool:
        cash = await customer.query(CustomerWorkflow.cash)
        return "TRF-OLD" in cash.payments and cash.payments["TRF-OLD"].done

    await eventually(applied)
    split = (await customer.query(CustomerWorkflow.cash)).payments["TRF-OLD"]
    assert [(a.invoice_id, a.amount_minor) for a in split.allocations] == [(invoice.invoice_id, balance)]
    assert split.credit_minor == 5_000


async def test_a_payment_call_cancelled_before_the_start_leaves_no_unretrieved_failure(client, customer_id, caplog):
    """The SDK sets a failed start on the update-with-start operation too; nobody asking for it, asyncio logged
    "Future exception was never retrieved" when it was collected, onto whichever command ran then."""
    nobody_polls = f"nobody-{uuid.uuid4().hex[:8]}"  # the update waits for a worker that never comes
    call = asyncio.create_task(customers.record_payment(client, nobody_polls, payment(customer_id, 1_000)))
    await asyncio.sleep(0.5)
    call.cancel()
    with pytest.raises((asyncio.CancelledError, WorkflowUpdateRPCTimeoutOrCancelledError)) as raised:
        await call
    del call, raised  # the failure's traceback holds the operation
    for _ in range(10):  # the client lets go of the operation once its call has wound down
        await asyncio.sleep(0.1)
        gc.collect()
    assert "never retrieved" not in caplog.text
