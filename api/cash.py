"""Payments to a customer through its workflow's cash application (the payment id claimed first: ``api.payment_claims``).

``POST /customers/{id}/payments``, kept payments applied to a customer, statement lines naming several
invoices and Stripe events naming a customer (not an invoice) come here. The customer workflow splits
the payment (``workflows.cash``); the invoices it lists are the customer's open ones in the read model,
so that invoices started before the customer learnt of its invoices are known too.
"""

from __future__ import annotations

from datetime import timedelta

import asyncpg
from pydantic import BaseModel, ConfigDict, Field
from temporalio.client import WorkflowUpdateFailedError, WorkflowUpdateRPCTimeoutOrCancelledError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError

from api.intake import PaymentContext
from api.payment_claims import CUSTOMER_TARGET, claimed
from api.problems import Kind, Problem, out_of_bounds
from client import customers
from workflows.bounds import BoundedMoment
from workflows.cash import AllocationRule, CustomerPayment, OpenInvoice, PaymentApplication
from workflows.models import Currency, FreeText, Identifier, Payment, PositiveMinor


class CustomerPaymentBody(BaseModel):
    """A payment from the customer, split across its open invoices."""

    model_config = ConfigDict(extra="forbid")

    payment_id: Identifier = Field(description="unique per customer across all its invoices")
    amount_minor: PositiveMinor
    currency: Currency
    received_at: BoundedMoment = Field(description="value date: when the money arrived")
    remittance: FreeText = Field(default="", max_length=500, description="the payer's text; invoice numbers in it go first")
    rule: AllocationRule = Field(default=AllocationRule.OLDEST_DUE_FIRST, description="where the rest goes")


async def pay_customer(ctx: PaymentContext, customer_id: str, body: CustomerPaymentBody) -> PaymentApplication:
    """Claim the payment id for the customer's payment path, then have the customer workflow split it."""
    value = Payment(payment_id=body.payment_id, amount_minor=body.amount_minor, currency=body.currency, received_at=body.received_at)
    if problems := ctx.settings.date_window().payment(value):
        raise out_of_bounds(problems)
    async with claimed(ctx.pool, customer_id, body.payment_id, CUSTOMER_TARGET, body.amount_minor, body.currency):
        payment = CustomerPayment(
            customer_id=customer_id, open_invoices=await open_invoices(ctx.pool, customer_id), **body.model_dump()
        )
        try:
            gathering = timedelta(seconds=ctx.settings.notice_digest_gathering_s)
            return await customers.record_payment(ctx.client, ctx.settings.task_queue, payment, gathering)
        except WorkflowUpdateFailedError as err:
            cause = err.cause
            if isinstance(cause, ApplicationError) and cause.type == "PaymentConflict":
                raise Problem(Kind.PAYMENT_CONFLICT, cause.message) from None
            raise Problem(Kind.REQUEST_REFUSED, getattr(cause, "message", str(cause))) from None
        except (WorkflowUpdateRPCTimeoutOrCancelledError, RPCError) as err:
            raise Problem(Kind.UNAVAILABLE, f"customer {customer_id} did not answer: {err}; try again") from None


async def open_invoices(pool: asyncpg.Pool, customer_id: str) -> list[OpenInvoice]:
    """The customer's invoices the read model knows to be open, oldest due first (at most 500)."""
    rows = await pool.fetch(
        "SELECT invoice_id, due_date, currency FROM projected_invoices"
        " WHERE customer_id = $1 AND closed_at IS NULL ORDER BY due_date, invoice_id LIMIT 500",
        customer_id,
    )
    return [OpenInvoice(invoice_id=r["invoice_id"], due_date=r["due_date"], currency=r["currency"]) for r in rows]
