"""Payments reaching an invoice: applied, recorded as recoveries after a write-off, or rejected.

``PaymentDesk`` does what the workflow's payment update and signal ask. The workflow takes every
signal (none can fail a workflow task): its arguments arrive undecoded (``RawValue``), so a malformed
payment becomes a rejection with its reason and an excerpt of what was sent (``EXCERPT_BYTES``, with
the whole payload's size and SHA-256), never lost and never a task failure.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pydantic import ValidationError
from temporalio import workflow
from temporalio.common import RawValue
from temporalio.exceptions import ApplicationError

from workflows import accrual, policy
from workflows.events import (
    DiscountApplied,
    LateFeeReversed,
    OverpaymentCredited,
    PaymentRecorded,
    PaymentRejected,
    RecoveryRecorded,
    SmallBalanceWrittenOff,
)
from workflows.models import InvoiceState, LegalDecision, NoticeKind, Payment, format_money
from workflows.outbox import Outbox, one_line
from workflows.state import COUNT_WRITTEN_EVERY, REJECTIONS_STORED_PER_DAY, InvoiceLedger

PAYMENT_SIGNAL = "payment_received"
EXCERPT_BYTES = 1024  # of a malformed payment's raw payload, kept in its payment_rejected event
VALUE_DATE_SKEW = timedelta(minutes=5)  # a value date may be this far ahead of the workflow's clock (clocks differ)
VALUE_DATE_BEFORE_ISSUE = timedelta(days=31)  # and this far before the invoice's issue date (money paid ahead)


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


class PaymentDesk:
    """Applies the payments reaching one invoice, or records why not; output goes through the outbox.

    ``close`` closes the invoice in a state, ``changed`` republishes and wakes the run loop, ``wake`` only
    wakes it; ``counts_rejections``: the ``counted-rejections`` patch, asked once a run by the workflow.
    """

    def __init__(
        self,
        outbox: Outbox,
        *,
        counts_rejections: bool,
        close: Callable[[InvoiceState], None],
        changed: Callable[[], None],
        wake: Callable[[], None],
    ) -> None:
        self.outbox = outbox
        self.ledger = outbox.ledger
        self._counts_rejections = counts_rejections
        self._close, self._changed, self._wake = close, changed, wake

    def take_signal(self, args: Sequence[RawValue]) -> None:
        """A ``payment_received`` signal: its payment applied, or rejected with why (never an exception)."""
        payment = decode_payment(args)
        if isinstance(payment, Malformed):
            self.reject(payment.reason, payment.sent)
        elif problem := payment_problem(self.ledger, payment, workflow.now()):
            self.reject(problem.message, payment.model_dump(mode="json"))
        else:
            self.apply(payment)

    def apply(self, payment: Payment) -> int:
        """Record a valid payment (a recovery after a write-off); returns the balance. Idempotent by payment id.

        With value dates (the patch), the money's arrival decides: late fees charged after it are reversed
        and the early-payment discount applies if the invoice was paid in full within its window.
        """
        ledger, now = self.ledger, workflow.now()
        if payment.payment_id in ledger.payments or payment.payment_id in ledger.recoveries:
            return ledger.balance_minor
        if ledger.escalation == InvoiceState.WRITTEN_OFF:
            self._record_recovery(payment)
            return ledger.balance_minor
        by_value, arrived = ledger.value_dates, value_date(payment, now)
        # interest on the principal owed until the money arrived; the part it pays stops accruing then
        accrual.post(self.outbox, f"payment {payment.payment_id}", through=policy.local_date(ledger.invoice, arrived))
        ledger.payments[payment.payment_id] = payment.amount_minor
        ledger.arrived_at[payment.payment_id] = arrived
        reversed_fees = policy.late_fees_paid_in_time(ledger) if by_value else []
        ledger.fees = [fee for fee in ledger.fees if fee not in reversed_fees]
        paid_at = policy.paid_in_full_at(ledger, now) if by_value else now
        discount = policy.discount_available(ledger, paid_at)
        discounted = bool(discount) and ledger.net_minor - discount <= 0
        if discounted and by_value:
            ledger.discount_minor = discount  # before the payment is allocated: it pays the discounted amount
        principal_paid, fees_paid = policy.allocation_of(ledger, payment.amount_minor)
        interest_paid = policy.interest_paid_of(ledger, payment.amount_minor)  # of fees_paid: the receipt tells it apart
        self.outbox.record(
            PaymentRecorded(
                payment_id=payment.payment_id,
                amount_minor=payment.amount_minor,
                received_at=arrived if by_value else payment.received_at or now,
                balance_minor=ledger.balance_minor,
                principal_minor=principal_paid,
                fees_minor=fees_paid,
            )
        )
        ledger.remember(now, f"Payment {payment.payment_id}: {format_money(payment.amount_minor, payment.currency)}")
        for fee in reversed_fees:
            self.outbox.record(
                LateFeeReversed(
                    number=fee.number,
                    amount_minor=fee.amount_minor,
                    charged_at=fee.charged_at,
                    payment_id=payment.payment_id,
                    received_at=arrived,
                )
            )
            money = format_money(fee.amount_minor, payment.currency)
            ledger.remember(now, f"Late fee {fee.number} reversed ({money}): the money had arrived before it")
        if discounted:
            ledger.discount_minor = discount
            paid_on = policy.local_date(ledger.invoice, paid_at) if by_value else None
            self.outbox.record(DiscountApplied(amount_minor=discount, paid_on=paid_on))
            ledger.remember(now, f"Early-payment discount applied: {format_money(discount, payment.currency)}")
        if residue := policy.small_balance_residue(ledger):
            ledger.written_off_minor += residue
            self.outbox.record(SmallBalanceWrittenOff(amount_minor=residue, payment_id=payment.payment_id))
            ledger.remember(now, f"Small balance written off: {format_money(residue, payment.currency)}")
        if ledger.net_minor <= 0:
            if ledger.overpaid_minor:
                self.outbox.record(OverpaymentCredited(amount_minor=ledger.overpaid_minor))
            settled = ledger.legal_decision == LegalDecision.SETTLE
            self._close(InvoiceState.SETTLED if settled else InvoiceState.PAID)
        self.outbox.queue_notice(
            NoticeKind.RECEIPT,
            detail=payment.payment_id,
            amount_minor=payment.amount_minor,
            residue_minor=residue,
            principal_paid_minor=principal_paid,
            fees_paid_minor=fees_paid - interest_paid,
            interest_paid_minor=interest_paid,
            received_at=arrived if by_value else None,
            fees_reversed=reversed_fees,
        )
        self._changed()
        return ledger.balance_minor

    def _record_recovery(self, payment: Payment) -> None:
        """A payment on a written-off invoice: recorded as a recovery, with a receipt."""
        ledger, now = self.ledger, workflow.now()
        ledger.recoveries[payment.payment_id] = payment.amount_minor
        unrecovered = max(0, ledger.written_off_minor - ledger.recovered_minor)
        self.outbox.record(
            RecoveryRecorded(
                payment_id=payment.payment_id,
                amount_minor=payment.amount_minor,
                received_at=payment.received_at or now,
                recovered_minor=ledger.recovered_minor,
                unrecovered_minor=unrecovered,
            )
        )
        ledger.remember(now, f"Recovery {payment.payment_id}: {format_money(payment.amount_minor, payment.currency)}")
        self.outbox.queue_notice(
            NoticeKind.RECEIPT, detail=payment.payment_id, amount_minor=payment.amount_minor, recovery=True
        )
        self._changed()

    def reject(self, reason: str, payload: dict | RawExcerpt) -> None:
        """Record a payment that cannot be applied: with its reason and what was sent (bounded, untrusted text
        made storable) while the invoice has stored fewer than ``REJECTIONS_STORED_PER_DAY`` today, else counted.

        Since the patch it only wakes the loop, which publishes once: a flood delivers thousands of signals in
        one workflow task, and a search-attribute upsert after each would outlast Temporal's deadlock timeout (2 s).
        """
        ledger, now, reason = self.ledger, workflow.now(), storable(reason)
        ledger.rejected_payments += 1
        tally = ledger.rejections
        if tally.window_over(now):
            write_rejection_count(self.outbox)
            tally.window_start, tally.stored = now, 0
        bounded = self._counts_rejections
        if bounded and tally.stored >= REJECTIONS_STORED_PER_DAY:
            tally.count(now, reason)
            if tally.counted >= COUNT_WRITTEN_EVERY:
                write_rejection_count(self.outbox)
        else:
            tally.stored += 1
            if isinstance(payload, RawExcerpt):
                rejected = PaymentRejected(
                    reason=reason, payload=payload.text, payload_bytes=payload.size, payload_sha256=payload.sha256
                )
            else:
                rejected = PaymentRejected(reason=reason, payload=payload)
            self.outbox.record(rejected)
            ledger.remember(now, f"Payment rejected: {reason[:200]}")
        if bounded:
            self._wake()
        else:
            self._changed()


def write_rejection_count(outbox: Outbox) -> None:
    """Write the rejections counted and not yet written, if any (``payment_rejections_counted``)."""
    tally = outbox.ledger.rejections
    if not tally.counted:
        return
    counted = tally.take_count()
    outbox.record(counted)
    outbox.ledger.remember(workflow.now(), f"{counted.count} more payment(s) rejected, counted (see the log)")


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


def value_date(payment: Payment, now: datetime) -> datetime:
    """When the payment's money arrived: its ``received_at`` (UTC if it names no offset), else ``now``."""
    received = payment.received_at
    if received is None:
        return now
    return received if received.tzinfo else received.replace(tzinfo=UTC)


def value_date_problem(ledger: InvoiceLedger, payment: Payment, now: datetime) -> str | None:
    """Why the payment's value date cannot be true: after ``now`` (beyond ``VALUE_DATE_SKEW``), or more than
    ``VALUE_DATE_BEFORE_ISSUE`` before the invoice's issue date (in the client's time zone)."""
    if payment.received_at is None:
        return None
    arrived, shown = value_date(payment, now), payment.received_at.isoformat()
    if arrived > now + VALUE_DATE_SKEW:
        return f"received_at {shown} is in the future (now is {now.isoformat(timespec='seconds')})"
    if policy.local_date(ledger.invoice, arrived) < ledger.invoice.issue_date - VALUE_DATE_BEFORE_ISSUE:
        return (
            f"received_at {shown} is more than {VALUE_DATE_BEFORE_ISSUE.days} days before the invoice's"
            f" issue date {ledger.invoice.issue_date.isoformat()}"
        )
    return None


def payment_problem(ledger: InvoiceLedger, payment: Payment, now: datetime) -> ApplicationError | None:
    """Why this payment cannot be recorded (None if it can, or if it already was, identically).

    Its value date is checked only with value dates (``InvoiceLedger.value_dates``): older runs took any."""
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
    if ledger.value_dates and (problem := value_date_problem(ledger, payment, now)):
        return _refusal("InvalidValueDate", problem)
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
