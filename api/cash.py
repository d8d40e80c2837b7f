"""Payments to a customer through its workflow's cash application (the payment id claimed first: ``api.payment_claims``).

``POST /customers/{id}/payments``, kept payments applied to a customer, and every bank or provider payment
whose customer is known come here: statement lines matched to one invoice or naming several invoices of one
customer, and Stripe events naming an invoice or a customer (:func:`pay_for_invoice` for those matched to one
invoice: it is named first, so the rest of the money pays the customer's other invoices or becomes its credit).
The customer workflow splits the payment (``workflows.cash``); the invoices it lists are the customer's open
ones in the read model, so that invoices started before the customer learnt of its invoices are known too.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

import asyncpg
from pydantic import BaseModel, ConfigDict, Field

from api.intake import PaymentContext, storable_remittance
from api.payment_claims import CUSTOMER_TARGET, claimed
from api.problems import Kind, Problem, customer_answer, out_of_bounds
from client import customers
from workflows import creditor_reference
from workflows.bounds import BoundedMoment
from workflows.cash import AllocationRule, CustomerPayment, OpenInvoice, PaymentApplication, named_invoices
from workflows.models import Currency, FreeText, Identifier, Payment, PositiveMinor, format_money


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
        gathering = timedelta(seconds=ctx.settings.notice_digest_gathering_s)
        return await customer_answer(
            customer_id, customers.record_payment(ctx.client, ctx.settings.task_queue, payment, gathering)
        )


async def open_invoices(pool: asyncpg.Pool, customer_id: str) -> list[OpenInvoice]:
    """The customer's invoices the read model knows to be open, oldest due first (at most 500)."""
    rows = await pool.fetch(
        "SELECT invoice_id, due_date, currency FROM projected_invoices"
        " WHERE customer_id = $1 AND closed_at IS NULL ORDER BY due_date, invoice_id LIMIT 500",
        customer_id,
    )
    return [OpenInvoice(invoice_id=r["invoice_id"], due_date=r["due_date"], currency=r["currency"]) for r in rows]


@dataclass(frozen=True)
class ProjectedInvoice:
    """An invoice as the read model knows it: enough to pay it through its customer."""

    invoice_id: str
    customer_id: str
    currency: str
    issue_date: date


async def projected_invoice(pool: asyncpg.Pool, invoice_id: str) -> ProjectedInvoice | None:
    """The invoice from the read model; None if it is not projected (yet)."""
    row = await pool.fetchrow(
        "SELECT invoice_id, customer_id, currency, issue_date FROM projected_invoices WHERE invoice_id = $1", invoice_id
    )
    return ProjectedInvoice(**dict(row)) if row else None


def naming_first(invoice_id: str, text: str) -> str:
    """``text`` as a stored remittance (at most 500 characters) that names ``invoice_id`` before anything else,
    so that the cash application pays that invoice first: its id, or its ``RF`` reference where the id is
    not read as one word (``workflows.cash.named_invoices``); a match by the structured reference is not in
    the text at all."""
    name = invoice_id if named_invoices(invoice_id, [invoice_id]) == [invoice_id] else creditor_reference.for_invoice(invoice_id)
    return storable_remittance(f"{name} {text}".strip())


async def pay_for_invoice(ctx: PaymentContext, invoice: ProjectedInvoice, payment: Payment, text: str) -> PaymentApplication:
    """A bank or provider payment matched to one invoice, paid through its customer's payment path: the invoice
    first (up to its balance), the rest to the customer's other open invoices, oldest due first, what is left
    the customer's credit.

    Refused as the invoice itself would refuse it: another currency (``WRONG_CURRENCY``), a value date before
    the invoice's issue date or outside the window (``VALIDATION_FAILED``); then nothing is claimed or recorded.
    """
    assert payment.received_at is not None
    if payment.currency != invoice.currency:
        raise Problem(
            Kind.WRONG_CURRENCY,
            f"payment currency {payment.currency} does not match invoice currency {invoice.currency}"
            f" ({format_money(payment.amount_minor, payment.currency)} for invoice {invoice.invoice_id})",
        )
    if problems := ctx.settings.date_window().payment(payment, invoice.issue_date):
        raise out_of_bounds(problems)
    body = CustomerPaymentBody(
        payment_id=payment.payment_id,
        amount_minor=payment.amount_minor,
        currency=payment.currency,
        received_at=payment.received_at,
        remittance=naming_first(invoice.invoice_id, text),
    )
    return await pay_customer(ctx, invoice.customer_id, body)
