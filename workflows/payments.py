"""Payments reaching an invoice: the payment signal decoded, and why a payment cannot be recorded.

The workflow takes every signal (none can fail a workflow task): its arguments arrive undecoded
(``RawValue``), so a malformed payment becomes a rejection with its reason and what was sent,
never lost and never a task failure.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from temporalio import workflow
from temporalio.common import RawValue
from temporalio.exceptions import ApplicationError

from workflows import policy
from workflows.models import InvoiceState, Payment, format_money
from workflows.outbox import one_line
from workflows.state import InvoiceLedger

PAYMENT_SIGNAL = "payment_received"


@dataclass(frozen=True)
class Malformed:
    """A payment signal that carries no payment: why, and what it carried (as text the event log can keep)."""

    reason: str
    sent: str


def decode_payment(args: Sequence[RawValue]) -> Payment | Malformed:
    """The one ``Payment`` a payment signal should carry, or why it does not."""
    if len(args) != 1:
        carried = f"{len(args)} arguments, not one payment" if args else "no payment"
        return Malformed(f"malformed payment: the signal carried {carried}", " | ".join(map(raw_text, args)))
    raw = args[0]
    try:
        payment = workflow.payload_converter().from_payload(raw.payload, Payment)
    except Exception as err:  # noqa: BLE001 - any decoding failure is a rejected payment, not a task failure
        return Malformed(f"malformed payment: {one_line(err)}", raw_text(raw))
    if not isinstance(payment, Payment):  # a null or binary payload decodes to None or bytes, unchecked
        return Malformed(f"malformed payment: not a payment object but {type(payment).__name__}", raw_text(raw))
    return payment


def payment_problem(ledger: InvoiceLedger, payment: Payment) -> ApplicationError | None:
    """Why this payment cannot be recorded (None if it can, or if it already was, identically)."""
    invoice = ledger.invoice
    known = ledger.payments.get(payment.payment_id, ledger.recoveries.get(payment.payment_id))
    if known is not None:
        if known != payment.amount_minor:
            return _refusal(
                "PaymentConflict",
                f"payment {payment.payment_id} was already recorded with amount {format_money(known, invoice.currency)},"
                f" not {format_money(payment.amount_minor, invoice.currency)}",
            )
        return None
    if ledger.escalation.closed and not _takes_recoveries(ledger):
        return _refusal(
            "InvoiceClosed", f"invoice {invoice.invoice_id} is {ledger.escalation.value}: no further payments are accepted"
        )
    if payment.currency != invoice.currency:
        return _refusal(
            "WrongCurrency", f"payment currency {payment.currency} does not match invoice currency {invoice.currency}"
        )
    return None


def _takes_recoveries(ledger: InvoiceLedger) -> bool:
    """A written-off invoice takes payments as recoveries until they cover the write-off."""
    return (
        ledger.money_rules and ledger.escalation == InvoiceState.WRITTEN_OFF and not policy.recovered_in_full(ledger)
    )


def _refusal(kind: str, message: str) -> ApplicationError:
    """An update validator's refusal; ``kind`` is the error type callers switch on."""
    return ApplicationError(message, type=kind, non_retryable=True)


def raw_text(raw: RawValue) -> str:
    """A raw argument as text, cut to 2,000 characters."""
    return raw.payload.data.decode("utf-8", errors="replace")[:2000]


def storable(text: str) -> str:
    """Untrusted text as the event log can keep it: PostgreSQL refuses NUL in text and jsonb."""
    return text.replace("\x00", "\ufffd")
