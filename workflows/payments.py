"""Payments reaching an invoice: the payment signal decoded, and why a payment cannot be recorded.

The workflow takes every signal (none can fail a workflow task): its arguments arrive undecoded
(``RawValue``), so a malformed payment becomes a rejection with its reason and an excerpt of what
was sent (``EXCERPT_BYTES``, with the whole payload's size and SHA-256), never lost and never a
task failure.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import ValidationError
from temporalio import workflow
from temporalio.common import RawValue
from temporalio.exceptions import ApplicationError

from workflows import policy
from workflows.models import InvoiceState, Payment, format_money
from workflows.outbox import one_line
from workflows.state import InvoiceLedger

PAYMENT_SIGNAL = "payment_received"
EXCERPT_BYTES = 1024  # of a malformed payment's raw payload, kept in its payment_rejected event


@dataclass(frozen=True)
class Malformed:
    """A payment signal that carries no payment: why, and what it carried (``RawExcerpt``)."""

    reason: str
    sent: RawExcerpt


@dataclass(frozen=True)
class RawExcerpt:
    """What a signal carried, bounded: its first ``EXCERPT_BYTES`` as text the event log can keep,
    and the size and SHA-256 of the whole, which identify it without storing it."""

    text: str
    size: int
    sha256: str

    @classmethod
    def of(cls, args: Sequence[RawValue]) -> RawExcerpt:
        """The signal's arguments' data, joined by `` | `` when there are several."""
        data = b" | ".join(raw.payload.data for raw in args)
        text = storable(data[:EXCERPT_BYTES].decode("utf-8", errors="replace"))
        return cls(text=text, size=len(data), sha256=hashlib.sha256(data).hexdigest())


def decode_payment(args: Sequence[RawValue]) -> Payment | Malformed:
    """The one ``Payment`` a payment signal should carry, or why it does not."""
    if len(args) != 1:
        carried = f"{len(args)} arguments, not one payment" if args else "no payment"
        return Malformed(f"malformed payment: the signal carried {carried}", RawExcerpt.of(args))
    raw = args[0]
    try:
        payment = workflow.payload_converter().from_payload(raw.payload, Payment)
    except ValidationError as err:
        return Malformed(f"malformed payment: {field_problems(err)}", RawExcerpt.of(args))
    except Exception as err:  # noqa: BLE001 - any decoding failure is a rejected payment, not a task failure
        return Malformed(f"malformed payment: {one_line(err)}", RawExcerpt.of(args))
    if not isinstance(payment, Payment):  # a null or binary payload decodes to None or bytes, unchecked
        return Malformed(f"malformed payment: not a payment object but {type(payment).__name__}", RawExcerpt.of(args))
    return payment


def field_problems(err: ValidationError) -> str:
    """A short reason per field, ``amount_minor: Input should be greater than 0; ...``, as ops read it
    (not pydantic's dump with input values and documentation links)."""
    problems = []
    for problem in err.errors(include_url=False, include_input=False, include_context=False):
        where = ".".join(str(part) for part in problem["loc"])
        message = problem["msg"].removeprefix("Value error, ")
        problems.append(f"{where}: {message}" if where else message)
    return one_line("; ".join(problems))


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


def storable(text: str) -> str:
    """Untrusted text as the event log can keep it: PostgreSQL refuses NUL in text and jsonb."""
    return text.replace("\x00", "\ufffd")
