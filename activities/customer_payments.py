"""The customer workflow's payment activities: ask invoices their balances, and deliver allocations to them.

Invoices are called by name (activities never import workflow classes). Delivery is the invoice's
own ``record_payment`` update, idempotent by the allocation's payment id: a retry after a crash
gets the same balance back. A refusal (the invoice closed meanwhile, another currency) is an
answer, not an error: the customer puts the amount back to credit.
"""

from __future__ import annotations

import asyncio

from temporalio import activity
from temporalio.client import WorkflowExecutionStatus, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from workflows import contracts
from workflows.cash import DeliverAllocation, Delivered, InvoiceBalance
from workflows.models import InvoiceStatus, Payment, invoice_workflow_id


class CustomerPaymentActivities(contracts.CustomerPayments):
    """Queries and updates of the customer's invoice workflows."""

    @activity.defn(name="invoice_balances")
    async def invoice_balances(self, invoice_ids: list[str]) -> list[InvoiceBalance]:
        """Each invoice's balance and whether it still takes payments, as its workflow answers now."""
        return list(await asyncio.gather(*(_balance(invoice_id) for invoice_id in invoice_ids)))

    @activity.defn(name="deliver_allocation")
    async def deliver_allocation(self, allocation: DeliverAllocation) -> Delivered:
        """Record an allocation on its invoice as a payment (idempotent by its payment id)."""
        payment = Payment(
            payment_id=allocation.payment_id,
            amount_minor=allocation.amount_minor,
            currency=allocation.currency,
            received_at=allocation.received_at,
        )
        handle = activity.client().get_workflow_handle(invoice_workflow_id(allocation.invoice_id))
        try:
            balance = await handle.execute_update("record_payment", payment, id=allocation.payment_id, result_type=int)
        except WorkflowUpdateFailedError as err:
            if isinstance(err.cause, ApplicationError):  # the invoice's validator refused it
                return Delivered(refused=err.cause.message)
            raise
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:  # its workflow ended meanwhile
                return Delivered(refused=f"invoice {allocation.invoice_id} is closed")
            raise
        return Delivered(balance_minor=balance)


async def _balance(invoice_id: str) -> InvoiceBalance:
    handle = activity.client().get_workflow_handle(invoice_workflow_id(invoice_id))
    try:
        description = await handle.describe()
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            return InvoiceBalance(invoice_id=invoice_id, open=False)
        raise
    if description.status != WorkflowExecutionStatus.RUNNING:
        return InvoiceBalance(invoice_id=invoice_id, open=False)
    status = await handle.query("status", result_type=InvoiceStatus)
    return InvoiceBalance(
        invoice_id=invoice_id,
        open=not status.state.closed,
        balance_minor=status.balance_minor,
        currency=status.currency,
    )


_activities = CustomerPaymentActivities()  # holds no state
invoice_balances = _activities.invoice_balances
deliver_allocation = _activities.deliver_allocation
