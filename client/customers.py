"""Client-side customer operations, shared by the CLI and (later) the HTTP API.

A customer's workflow (``customer-<customer id>``) starts on demand (``digest_gathering``: the
service's ``notice_digest_gathering_s``, as the worker starts customers): an invoice's first hold
starts it with update-with-start (``activities.customer``), and so does any of these calls.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

from temporalio.client import (
    Client,
    WithStartWorkflowOperation,
)
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.service import RPCError, RPCStatusCode
from temporalio.workflow import UpdateMethodMultiParam

from client.temporal import take_start_outcome
from workflows.cash import (
    CUSTOMER_PAYMENT_SIGNAL,
    CashBook,
    CustomerPayment,
    InvoiceOpened,
    OpenInvoice,
    PaymentApplication,
    fingerprint,
)
from workflows.customer import CustomerWorkflow
from workflows.customer_control import CustomerControl, CutsRequest, PauseCustomer, ResumeCustomer
from workflows.digests import DIGEST_GATHERING
from workflows.holds import CustomerLedger, CustomerWorkflowInput
from workflows.models import Invoice, customer_workflow_id

ANSWER_TIMEOUT = timedelta(seconds=20)
Request = TypeVar("Request")
Answer = TypeVar("Answer")


def _start_options(customer: CustomerWorkflowInput, task_queue: str) -> dict[str, Any]:
    """How a customer's workflow starts, whoever starts it: once, joined if it is running."""
    return {
        "id": customer.workflow_id,
        "task_queue": task_queue,
        "id_conflict_policy": WorkflowIDConflictPolicy.USE_EXISTING,
        "static_summary": f"Customer {customer.customer_id}: what its invoices hold, its payments and its credit",
    }


async def customer_holds(client: Client, task_queue: str, customer_id: str) -> CustomerLedger:
    """Every piece of the customer's service and equipment, which invoices hold it and what was done to it (its
    workflow started now if it is not running)."""
    customer = CustomerWorkflowInput(customer_id=customer_id)
    handle = await client.start_workflow(CustomerWorkflow.run, customer, **_start_options(customer, task_queue))
    return await handle.query(CustomerWorkflow.holds, rpc_timeout=ANSWER_TIMEOUT)


def _start(
    customer_id: str, task_queue: str, digest_gathering: timedelta = DIGEST_GATHERING
) -> WithStartWorkflowOperation[CustomerWorkflow, None]:
    customer = CustomerWorkflowInput(customer_id=customer_id, digest_gathering=digest_gathering)
    return WithStartWorkflowOperation(CustomerWorkflow.run, customer, **_start_options(customer, task_queue))


async def record_payment(
    client: Client, task_queue: str, payment: CustomerPayment, digest_gathering: timedelta = DIGEST_GATHERING
) -> PaymentApplication:
    """Pay the customer (its workflow started if need be) and wait until every part reached its invoice.

    The update id is the payment id: concurrent posts of one payment attach to one update. Raises
    ``WorkflowUpdateFailedError`` whose cause is the ``PaymentConflict`` or ``InvalidRequest`` refusal.
    """
    start = _start(payment.customer_id, task_queue, digest_gathering)
    # a repeat shares the update, other content does not
    return await _update_with_start(
        client, CustomerWorkflow.record_payment, payment, start, f"payment/{payment.payment_id}/{fingerprint(payment)}"
    )


async def _update_with_start(
    client: Client,
    update: UpdateMethodMultiParam[[CustomerWorkflow, Request], Answer],
    request: Request,
    start: WithStartWorkflowOperation[CustomerWorkflow, Any],
    update_id: str | None = None,
) -> Answer:
    """The customer's answer to ``update``, its workflow started by ``start`` if need be."""
    try:
        return await client.execute_update_with_start_workflow(
            update, request, start_workflow_operation=start, id=update_id, rpc_timeout=ANSWER_TIMEOUT
        )
    finally:
        take_start_outcome(start)


async def send_payment(
    client: Client, task_queue: str, payment: CustomerPayment, digest_gathering: timedelta = DIGEST_GATHERING
) -> None:
    """Pay the customer fire-and-forget (signal-with-start): the workflow validates it and records a bad one as rejected."""
    customer = CustomerWorkflowInput(customer_id=payment.customer_id, digest_gathering=digest_gathering)
    await _signal_with_start(client, customer, task_queue, CUSTOMER_PAYMENT_SIGNAL, payment)


async def register_invoice(
    client: Client, task_queue: str, invoice: Invoice, digest_gathering: timedelta = DIGEST_GATHERING
) -> None:
    """Tell the customer an invoice of theirs was started (signal-with-start): it may take the customer's credit."""
    customer = CustomerWorkflowInput(customer_id=invoice.customer_id, digest_gathering=digest_gathering)
    opened = InvoiceOpened(
        customer_id=invoice.customer_id,
        invoice=OpenInvoice(invoice_id=invoice.invoice_id, due_date=invoice.due_date, currency=invoice.currency),
    )
    await _signal_with_start(client, customer, task_queue, "invoice_opened", opened)


async def _signal_with_start(
    client: Client, customer: CustomerWorkflowInput, task_queue: str, signal: str, argument: Any
) -> None:
    await client.start_workflow(
        CustomerWorkflow.run,
        customer,
        **_start_options(customer, task_queue),
        start_signal=signal,
        start_signal_args=[argument],
    )


async def customer_cash(client: Client, customer_id: str) -> CashBook:
    """The customer's payments, how each was split, and its credit (empty if its workflow never started)."""
    return await _ask(client, customer_id, CustomerWorkflow.cash, CashBook())


async def _ask(client: Client, customer_id: str, query: Callable[[CustomerWorkflow], Answer], nothing: Answer) -> Answer:
    """The customer workflow's answer to ``query``; ``nothing`` if its workflow never started."""
    handle = client.get_workflow_handle_for(CustomerWorkflow.run, customer_workflow_id(customer_id))
    try:
        return await handle.query(query, rpc_timeout=ANSWER_TIMEOUT)
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            return nothing
        raise



async def pause(
    client: Client, task_queue: str, request: PauseCustomer, digest_gathering: timedelta = DIGEST_GATHERING
) -> CustomerControl:
    """Pause every escalation of the customer's invoices (its workflow started if need be). Raises
    ``WorkflowUpdateFailedError`` whose cause is the ``InvalidRequest`` refusal (e.g. an until-date in the past)."""
    return await _update_with_start(
        client, CustomerWorkflow.pause, request, _start(request.customer_id, task_queue, digest_gathering)
    )


async def resume(
    client: Client, task_queue: str, request: ResumeCustomer, digest_gathering: timedelta = DIGEST_GATHERING
) -> CustomerControl:
    """End the customer's pause now (nothing to do if it is not paused)."""
    return await _update_with_start(
        client, CustomerWorkflow.resume, request, _start(request.customer_id, task_queue, digest_gathering)
    )


async def set_cuts(
    client: Client, task_queue: str, request: CutsRequest, digest_gathering: timedelta = DIGEST_GATHERING
) -> CustomerControl:
    """Keep the customer's equipment out of automatic cuts (``excluded``), or put it back in."""
    return await _update_with_start(
        client, CustomerWorkflow.set_cuts, request, _start(request.customer_id, task_queue, digest_gathering)
    )


async def customer_control(client: Client, customer_id: str) -> CustomerControl:
    """What ops decided about the customer (nothing if its workflow never started)."""
    return await _ask(client, customer_id, CustomerWorkflow.control, CustomerControl())
