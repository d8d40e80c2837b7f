"""Cash application: a customer's payment split across its open invoices, and what is left kept as credit.

Pure bookkeeping (no Temporal calls): ``workflows.customer_payments`` asks the invoices their
balances and delivers each allocation. The rule: the invoices the remittance names (by invoice
number or ISO 11649 creditor reference) in the order it names them, then the rest oldest due first
(``AllocationRule``); whatever no open invoice takes is a credit of the customer, applied to the
next invoice that opens. Each allocation reaches its invoice as a payment whose id names the
customer payment and the invoice (:func:`allocation_id`).
"""

from __future__ import annotations

import hashlib
import re
from datetime import date, datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from workflows import creditor_reference
from workflows.bounds import BoundedMoment
from workflows.models import Currency, FreeText, Identifier, PositiveMinor, Strict

CUSTOMER_PAYMENT_SIGNAL = "payment_received"
_TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*[A-Za-z0-9]|[A-Za-z0-9]")
_ID_LIMIT = 64  # an invoice payment id is an Identifier


class AllocationRule(StrEnum):
    """Where the part of a payment that the remittance does not place goes."""

    OLDEST_DUE_FIRST = "oldest_due_first"  # to the open invoices, the oldest due date first
    CREDIT = "credit"  # kept as the customer's credit (named invoices only)


class OpenInvoice(Strict):
    """An open invoice of the customer, as the caller knows it (the API reads them from the read model)."""

    invoice_id: Identifier
    due_date: date
    currency: Currency


class CustomerPayment(Strict):
    """Money the customer paid, to be split across its open invoices; idempotent by ``payment_id`` per customer."""

    payment_id: Identifier
    customer_id: Identifier
    amount_minor: PositiveMinor
    currency: Currency
    received_at: BoundedMoment = Field(description="value date: when the money arrived")
    remittance: FreeText = Field(default="", max_length=500, description="the payer's text: invoice numbers in it go first")
    rule: AllocationRule = AllocationRule.OLDEST_DUE_FIRST
    open_invoices: list[OpenInvoice] = Field(
        default_factory=list, max_length=500, description="open invoices the customer may not know yet (from the read model)"
    )

    def same_payment(self, other: CustomerPayment) -> bool:
        """Whether ``other`` is this payment again (the invoices it lists may have changed meanwhile)."""
        return fingerprint(self) == fingerprint(other)


class _Mutable(BaseModel):
    """State the workflow changes in place (``Strict`` models are frozen)."""

    model_config = ConfigDict(extra="forbid")


class Allocation(_Mutable):
    """A part of a customer payment for one invoice, delivered to it as the payment ``payment_id``."""

    invoice_id: str
    payment_id: str = Field(description="the id the invoice records: names the customer payment and the invoice")
    amount_minor: int
    named: bool = Field(description="the remittance named the invoice")
    from_credit: bool = Field(default=False, description="applied later, from the payment's credit")
    value_date: datetime | None = Field(default=None, description="from credit: when it was applied (else the payment's)")
    delivered: bool = False
    balance_minor: int | None = Field(default=None, description="the invoice's balance after it")
    refused: str = Field(default="", description="why the invoice refused it (its amount went back to credit)")


class PaymentApplication(_Mutable):
    """What became of a customer payment: its allocations and the credit left of it."""

    payment: CustomerPayment
    allocations: list[Allocation] = Field(default_factory=list)
    credit_minor: int = Field(default=0, description="not allocated (yet): the customer's credit from this payment")
    allocated: bool = Field(default=False, description="split; done once every allocation is delivered")
    settled_earlier: bool = Field(
        default=False, description="a repeat of a payment applied long ago: its split is in its invoices' histories"
    )

    @property
    def done(self) -> bool:
        return self.allocated and all(a.delivered or a.refused for a in self.allocations)


class InvoiceBalance(Strict):
    """An invoice's balance as its workflow answers it now."""

    invoice_id: str
    open: bool = Field(description="running and not closed: takes payments")
    balance_minor: int = 0
    currency: str = ""


class InvoiceOpened(Strict):
    """An invoice of the customer was started: the customer registers it and applies any credit to it."""

    customer_id: Identifier
    invoice: OpenInvoice


class DeliverAllocation(Strict):
    """An allocation for the ``deliver_allocation`` activity."""

    invoice_id: str
    payment_id: str
    amount_minor: int
    currency: str
    received_at: datetime


class Delivered(Strict):
    """The invoice's answer: its balance after the payment, or why it refused it."""

    balance_minor: int | None = None
    refused: str = ""


class CashBook(_Mutable):
    """The customer's payments, the invoices it knows to be open, and what waits; continue-as-new carries it."""

    payments: dict[str, PaymentApplication] = Field(default_factory=dict, description="payment id -> application")
    open_invoices: dict[str, OpenInvoice] = Field(default_factory=dict)
    to_allocate: list[str] = Field(default_factory=list, description="payment ids waiting to be split, in arrival order")
    to_credit: list[str] = Field(default_factory=list, description="newly opened invoices waiting for credit")
    rejected: int = Field(default=0, description="payment signals that carried no valid payment")
    settled: dict[str, str] = Field(
        default_factory=dict, description="older payments fully applied: payment id -> fingerprint of the payment"
    )
    applications_kept: int = Field(default=200, ge=1, description="fully applied payments kept whole, the newest")

    def compact(self) -> None:
        """Keep the newest ``applications_kept`` fully applied payments whole, the older ones as fingerprints
        (a repeat is still recognised): the state continue-as-new carries stays within Temporal's payload limit."""
        done = [pid for pid, a in self.payments.items() if a.done and not a.credit_minor]
        for payment_id in done[: max(0, len(done) - self.applications_kept)]:
            self.settled[payment_id] = fingerprint(self.payments.pop(payment_id).payment)

    @property
    def busy(self) -> bool:
        """Whether something waits: a split, a credit to apply, or an allocation to deliver."""
        return bool(self.to_allocate or self.to_credit) or any(
            self.undelivered(p) for p in self.payments.values()
        )

    @staticmethod
    def undelivered(application: PaymentApplication) -> list[Allocation]:
        return [a for a in application.allocations if not a.delivered and not a.refused]

    def credit(self) -> dict[str, int]:
        """The customer's credit per currency."""
        totals: dict[str, int] = {}
        for application in self.payments.values():
            if application.allocated and application.credit_minor:
                currency = application.payment.currency
                totals[currency] = totals.get(currency, 0) + application.credit_minor
        return totals

    def credit_lots(self, currency: str | None = None) -> list[PaymentApplication]:
        """Payments with credit left, oldest value date first."""
        lots = [
            a
            for a in self.payments.values()
            if a.allocated and a.credit_minor and (currency is None or a.payment.currency == currency)
        ]
        return sorted(lots, key=lambda a: (a.payment.received_at, a.payment.payment_id))

    def learn(self, invoices: list[OpenInvoice]) -> None:
        for invoice in invoices:
            self.open_invoices.setdefault(invoice.invoice_id, invoice)


def fingerprint(payment: CustomerPayment) -> str:
    """What the payment is (not the invoices its sender listed), as 16 hex digits."""
    return hashlib.sha256(payment.model_dump_json(exclude={"open_invoices"}).encode()).hexdigest()[:16]


def named_invoices(remittance: str, candidates: list[str]) -> list[str]:
    """The candidate invoice ids the remittance names (by number or RF creditor reference), in its order."""
    tokens = [t.upper() for t in _TOKEN.findall(remittance)]
    compact = "".join(remittance.split()).upper()
    found: list[tuple[int, str]] = []
    for invoice_id in candidates:
        upper = invoice_id.upper()
        if upper in tokens:
            found.append((tokens.index(upper) * 2, invoice_id))
            continue
        reference = creditor_reference.for_invoice(invoice_id)
        if (at := compact.find(reference)) >= 0:
            found.append((at * 2 + 1, invoice_id))
    return [invoice_id for _, invoice_id in sorted(found)]


def allocate(
    amount_minor: int, remittance: str, rule: AllocationRule, balances: list[InvoiceBalance], due: dict[str, date]
) -> tuple[list[tuple[str, int, bool]], int]:
    """Split ``amount_minor`` over open invoices with a balance (``due``: their due dates):
    ``[(invoice id, amount, named)]`` and what is left."""
    owing = {b.invoice_id: b for b in balances if b.open and b.balance_minor > 0}
    named = named_invoices(remittance, list(owing))
    rest = [] if rule == AllocationRule.CREDIT else sorted(
        (b for b in owing.values() if b.invoice_id not in named), key=lambda b: (due.get(b.invoice_id, date.max), b.invoice_id)
    )
    left, parts = amount_minor, []
    for invoice_id, is_named in [*((i, True) for i in named), *((b.invoice_id, False) for b in rest)]:
        if not left:
            break
        part = min(left, owing[invoice_id].balance_minor)
        parts.append((invoice_id, part, is_named))
        left -= part
    return parts, left


def allocation_id(payment_id: str, invoice_id: str) -> str:
    """The payment id an invoice records for an allocation: ``<payment id>--<invoice id>``, or, where that
    exceeds an identifier's 64 characters, the payment id's start and a digest of both."""
    plain = f"{payment_id}--{invoice_id}"
    if len(plain) <= _ID_LIMIT:
        return plain
    digest = hashlib.sha256(f"{payment_id}/{invoice_id}".encode()).hexdigest()[:20]
    return f"{payment_id[: _ID_LIMIT - 22]}--{digest}"
