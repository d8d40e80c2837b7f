"""Payment intake: a payment goes to its invoice's workflow; one that cannot be applied is kept, never lost.

The ways in share this module: the API (``POST /invoices/{id}/payments``), the provider's signed
webhook, ops applying a kept payment, and bank statements (``api.statement_import``) and Stripe events
(``api.stripe_events``) for what they keep unapplied and for an invoice whose customer the read model does
not know yet (the others are paid through the customer: ``api.cash``). Payments are idempotent by payment id: the workflow
answers a repeat while the invoice is open, the event log once it is closed, and
``unapplied_payments`` for a payment kept aside.
"""

from __future__ import annotations

from datetime import datetime, timezone
from enum import StrEnum
from typing import Any, Protocol

import asyncpg
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator
from temporalio.client import Client

from activities import signing
from activities.ledger import read_events
from api.payment_claims import claimed, invoice_target, refused
from api.problems import Kind, Problem, invoice_problem, out_of_bounds
from client import invoices
from client.invoices import InvoiceError
from client.settings import Settings
from workflows.bounds import BoundedMoment
from workflows.cash import PaymentApplication
from workflows.events import PaymentRecorded, RecoveryRecorded
from workflows.models import Currency, Identifier, Payment, PositiveMinor, format_money

_INVOICE_ID = TypeAdapter(Identifier)


class Source(StrEnum):
    API = "api"
    WEBHOOK = "webhook"
    STATEMENT = "statement"
    STRIPE = "stripe"

    @property
    def money_arrived(self) -> bool:
        """A report of money already on the account (not a request): what an invoice refuses is kept, not refused."""
        return self != Source.API


class KeptKind(StrEnum):
    """What a kept item is: a payment to apply, or a provider's refund flagged for ops (never applied)."""

    PAYMENT = "payment"
    REFUND = "refund"


class PaymentContext(Protocol):
    """What recording a payment needs: the API's context, or the CLI's own connections."""

    @property
    def client(self) -> Client: ...
    @property
    def pool(self) -> asyncpg.Pool: ...
    @property
    def settings(self) -> Settings: ...


class PaymentStatus(StrEnum):
    APPLIED = "applied"
    UNAPPLIED = "unapplied"


class PaymentReceipt(BaseModel):
    """What became of a payment: applied to its invoice (with the new balance), or kept unapplied (with why)."""

    payment_id: str
    invoice_id: str = Field(description="the invoice it was applied to, or the reference it came with")
    status: PaymentStatus
    amount_minor: int
    currency: str
    balance_minor: int | None = Field(default=None, description="applied: the invoice's balance now")
    reason: str | None = Field(default=None, description="unapplied: why it could not be applied")


class UnappliedPayment(BaseModel):
    """A payment kept aside because no invoice could take it; ops apply it to the right invoice."""

    payment_id: str
    invoice_id: str = Field(description="the invoice reference as the payer gave it")
    amount_minor: int
    currency: str
    received_at: datetime
    source: Source
    reason: str
    kind: KeptKind = Field(default=KeptKind.PAYMENT, description="refund: a provider's refund, flagged for ops")
    recorded_at: datetime
    applied_invoice_id: str | None = None
    applied_at: datetime | None = None


class ApplyPayment(BaseModel):
    """Apply a kept payment to this invoice, or to this customer (split across its open invoices)."""

    model_config = ConfigDict(extra="forbid")

    invoice_id: Identifier | None = None
    customer_id: Identifier | None = Field(default=None, description="instead of an invoice: the customer's payment path")

    @model_validator(mode="after")
    def _one_target(self) -> ApplyPayment:
        if (self.invoice_id is None) == (self.customer_id is None):
            raise ValueError("name either invoice_id or customer_id")
        return self


class PaymentNotification(BaseModel):
    """The payment provider's notification (fields it adds beyond these are ignored)."""

    invoice_id: str = Field(min_length=1, max_length=200, description="the invoice reference the payer gave")
    payment_id: Identifier
    amount_minor: PositiveMinor
    currency: Currency
    received_at: BoundedMoment

    def payment(self) -> Payment:
        return Payment(
            payment_id=self.payment_id,
            amount_minor=self.amount_minor,
            currency=self.currency,
            received_at=self.received_at,
        )


# --- recording -----------------------------------------------------------------------------------


async def intake(ctx: PaymentContext, invoice_id: str, payment: Payment, source: Source) -> PaymentReceipt:
    """Record ``payment`` on the invoice, or keep it unapplied when no invoice can take it.

    A ``received_at`` in the future, long ago or before the invoice's issue date (as the read model
    knows it) is refused (422). A payment for an unknown invoice is always kept. From the webhook the
    money has already arrived, so a payment the invoice refuses (closed, other currency) is kept too;
    the API refuses it instead.
    """
    known = await ctx.pool.fetchrow("SELECT issue_date, customer_id FROM projected_invoices WHERE invoice_id = $1", invoice_id)
    if problems := ctx.settings.date_window().payment(payment, known["issue_date"] if known else None):
        raise out_of_bounds(problems)
    kept = await _kept(ctx.pool, payment.payment_id)
    if kept and not _same(kept, invoice_id, payment):
        raise Problem(Kind.PAYMENT_CONFLICT, _conflict_text(kept))
    if source.money_arrived and not _is_invoice_id(invoice_id):
        return await keep_unapplied(ctx.pool, invoice_id, payment, source, f"{invoice_id!r} is not an invoice id")
    if known is None:  # not in the read model (yet): its customer is unknown here
        return await _record_or_keep(ctx, invoice_id, payment, source, kept)
    target = invoice_target(invoice_id)
    async with claimed(ctx.pool, known["customer_id"], payment.payment_id, target, payment.amount_minor, payment.currency) as claim:
        receipt = await _record_or_keep(ctx, invoice_id, payment, source, kept)
        if receipt.status == PaymentStatus.UNAPPLIED:
            await claim.release()
        return receipt


async def _record_or_keep(
    ctx: PaymentContext, invoice_id: str, payment: Payment, source: Source, kept: UnappliedPayment | None
) -> PaymentReceipt:
    try:
        balance = await record_on_invoice(ctx, invoice_id, payment)
    except Problem as problem:
        refused = problem.kind in (Kind.INVOICE_CLOSED, Kind.WRONG_CURRENCY)
        if problem.kind == Kind.INVOICE_NOT_FOUND or (source.money_arrived and refused):
            return await keep_unapplied(ctx.pool, invoice_id, payment, source, problem.detail)
        raise
    if kept:
        await _mark_applied(ctx.pool, payment.payment_id, invoice_id)
    return _applied(invoice_id, payment, balance)


async def apply_kept(ctx: PaymentContext, payment_id: str, target: ApplyPayment) -> PaymentReceipt | PaymentApplication:
    """Record a kept payment on ``target``'s invoice (which may differ from the payer's reference), or pay its
    customer with it (split across the customer's open invoices).

    Atomic: the kept payment is reserved for its target first (a row update Postgres serialises), so
    concurrent applications to different targets apply it once and refuse the others (409).
    """
    kept = await _kept(ctx.pool, payment_id)
    if kept is None:
        raise Problem(Kind.NOT_FOUND, f"no unapplied payment {payment_id}")
    if kept.kind == KeptKind.REFUND:
        detail = f"{payment_id} is a refund the provider reported, not a payment: correct the invoice by hand"
        raise Problem(Kind.REQUEST_REFUSED, detail)
    where = target.invoice_id or f"customer:{target.customer_id}"
    reserved = await ctx.pool.fetchval(
        "UPDATE unapplied_payments SET reserved_for = $2 WHERE payment_id = $1"
        " AND coalesce(applied_invoice_id, reserved_for, $2) = $2 RETURNING true",
        payment_id,
        where,
    )
    if not reserved:
        applied_to = await ctx.pool.fetchval(
            "SELECT coalesce(applied_invoice_id, reserved_for) FROM unapplied_payments WHERE payment_id = $1", payment_id
        )
        raise Problem(Kind.PAYMENT_CONFLICT, f"payment {payment_id} was already applied to {applied_to.replace(':', ' ')}")
    payment = Payment(
        payment_id=kept.payment_id, amount_minor=kept.amount_minor, currency=kept.currency, received_at=kept.received_at
    )
    try:
        if target.customer_id:
            from api.cash import CustomerPaymentBody, pay_customer  # noqa: PLC0415 - api.cash builds on this module

            body = CustomerPaymentBody(
                payment_id=kept.payment_id,
                amount_minor=kept.amount_minor,
                currency=kept.currency,
                received_at=kept.received_at,
                remittance=storable_remittance(kept.invoice_id),
            )
            answer: PaymentReceipt | PaymentApplication = await pay_customer(ctx, target.customer_id, body)
        else:
            assert target.invoice_id is not None
            answer = await _record_claimed(ctx, target.invoice_id, payment)
    except Problem as problem:
        if not refused(problem):  # no answer: it may have been applied, so it stays reserved for this target
            raise
        await ctx.pool.execute(
            "UPDATE unapplied_payments SET reserved_for = NULL WHERE payment_id = $1 AND applied_at IS NULL"
            " AND reserved_for = $2",
            payment_id,
            where,
        )
        raise
    await _mark_applied(ctx.pool, payment_id, where)
    return answer


async def _record_claimed(ctx: PaymentContext, invoice_id: str, payment: Payment) -> PaymentReceipt:
    """Record on the invoice under the customer's claim of the payment id (when the read model knows its customer)."""
    customer_id = await ctx.pool.fetchval("SELECT customer_id FROM projected_invoices WHERE invoice_id = $1", invoice_id)
    if customer_id is None:
        return _applied(invoice_id, payment, await record_on_invoice(ctx, invoice_id, payment))
    target = invoice_target(invoice_id)
    async with claimed(ctx.pool, customer_id, payment.payment_id, target, payment.amount_minor, payment.currency):
        return _applied(invoice_id, payment, await record_on_invoice(ctx, invoice_id, payment))


def storable_remittance(reference: str) -> str:
    """The payer's reference as a remittance text (printable, at most 500 characters)."""
    return "".join(c if c.isprintable() else " " for c in reference)[:500]


async def record_on_invoice(ctx: PaymentContext, invoice_id: str, payment: Payment) -> int:
    """Record the payment through the workflow update; returns the balance.

    A repeat after the invoice closed (its workflow has ended) gets the balance the first
    recording left, from the event log.
    """
    try:
        return await invoices.record_payment(ctx.client, invoice_id, payment)
    except InvoiceError as err:
        problem = invoice_problem(err)
    if problem.kind != Kind.INVOICE_CLOSED:
        raise problem
    for event in await read_events(ctx.pool, invoice_id):
        recorded = event.payload()
        if isinstance(recorded, PaymentRecorded | RecoveryRecorded) and recorded.payment_id == payment.payment_id:
            if recorded.amount_minor != payment.amount_minor:
                raise Problem(
                    Kind.PAYMENT_CONFLICT,
                    f"payment {payment.payment_id} was already recorded with amount"
                    f" {format_money(recorded.amount_minor, payment.currency)},"
                    f" not {format_money(payment.amount_minor, payment.currency)}",
                )
            # a recovery was paid on a written-off invoice: nothing is owed on it
            return recorded.balance_minor if isinstance(recorded, PaymentRecorded) else 0
    raise problem


def _applied(invoice_id: str, payment: Payment, balance: int) -> PaymentReceipt:
    return PaymentReceipt(
        payment_id=payment.payment_id,
        invoice_id=invoice_id,
        status=PaymentStatus.APPLIED,
        amount_minor=payment.amount_minor,
        currency=payment.currency,
        balance_minor=balance,
    )


def _is_invoice_id(reference: str) -> bool:
    try:
        _INVOICE_ID.validate_python(reference)
    except ValidationError:
        return False
    return True


# --- unapplied payments ----------------------------------------------------------------------------


async def keep_unapplied(
    pool: asyncpg.Pool, invoice_id: str, payment: Payment, source: Source, reason: str, kind: KeptKind = KeptKind.PAYMENT
) -> PaymentReceipt:
    """Keep the payment aside; a repeat of the same payment gets the first answer."""
    received_at = payment.received_at or datetime.now(timezone.utc)
    await pool.execute(
        "INSERT INTO unapplied_payments (payment_id, invoice_id, amount_minor, currency, received_at, source, reason, kind)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (payment_id) DO NOTHING",
        payment.payment_id,
        invoice_id,
        payment.amount_minor,
        payment.currency,
        received_at,
        source.value,
        reason,
        kind.value,
    )
    kept = await _kept(pool, payment.payment_id)
    assert kept is not None
    if not _same(kept, invoice_id, payment):
        raise Problem(Kind.PAYMENT_CONFLICT, _conflict_text(kept))
    return PaymentReceipt(
        payment_id=kept.payment_id,
        invoice_id=kept.invoice_id,
        status=PaymentStatus.UNAPPLIED,
        amount_minor=kept.amount_minor,
        currency=kept.currency,
        reason=kept.reason,
    )


async def list_unapplied(pool: asyncpg.Pool, *, include_applied: bool, limit: int, offset: int) -> tuple[list[UnappliedPayment], int]:
    """Kept payments, oldest first (only those still unapplied unless ``include_applied``), and their count."""
    where = "" if include_applied else " WHERE applied_at IS NULL"
    rows = await pool.fetch(
        f"SELECT * FROM unapplied_payments{where} ORDER BY recorded_at, payment_id LIMIT $1 OFFSET $2", limit, offset
    )
    total = await pool.fetchval(f"SELECT count(*) FROM unapplied_payments{where}")
    return [UnappliedPayment(**dict(row)) for row in rows], total


async def _kept(pool: asyncpg.Pool, payment_id: str) -> UnappliedPayment | None:
    row = await pool.fetchrow("SELECT * FROM unapplied_payments WHERE payment_id = $1", payment_id)
    return UnappliedPayment(**dict(row)) if row else None


async def _mark_applied(pool: asyncpg.Pool, payment_id: str, invoice_id: str) -> None:
    """Applied to ``invoice_id`` (or ``customer:<id>``)."""
    await pool.execute(
        "UPDATE unapplied_payments SET applied_invoice_id = $2, applied_at = now()"
        " WHERE payment_id = $1 AND applied_at IS NULL",
        payment_id,
        invoice_id,
    )


def _same(kept: UnappliedPayment, invoice_id: str, payment: Payment) -> bool:
    return (kept.invoice_id, kept.amount_minor, kept.currency) == (invoice_id, payment.amount_minor, payment.currency) or (
        kept.applied_invoice_id == invoice_id and (kept.amount_minor, kept.currency) == (payment.amount_minor, payment.currency)
    )


def _conflict_text(kept: UnappliedPayment) -> str:
    return (
        f"payment {kept.payment_id} was already received as {format_money(kept.amount_minor, kept.currency)}"
        f" for invoice {kept.invoice_id}; a payment id names one payment"
    )


# --- the provider's webhook ------------------------------------------------------------------------


def verify_signature(
    secret: str,
    tolerance_seconds: int,
    message_id: str | None,
    timestamp: str | None,
    signature: str | None,
    body: bytes,
    now: datetime,
) -> datetime:
    """Check the notification's signature and age; returns when it was signed. Raises a 401 problem."""
    try:
        return signing.verify(secret, message_id, timestamp, signature, body, tolerance_seconds, now, subject="notification")
    except signing.SignatureRefused as refused:
        raise _unsigned(str(refused)) from None


def _unsigned(detail: str) -> Problem:
    return Problem(Kind.INVALID_SIGNATURE, detail, headers={"WWW-Authenticate": 'HMAC realm="payment-webhook"'})


async def answered_before(pool: asyncpg.Pool, signature: str) -> tuple[int, dict[str, Any]] | None:
    """The answer given to this exact signed notification before, if any."""
    row = await pool.fetchrow("SELECT status_code, response FROM payment_notifications WHERE signature = $1", signature)
    return (row["status_code"], row["response"]) if row else None


async def remember_answer(
    pool: asyncpg.Pool, signature: str, payment_id: str, signed_at: datetime, status_code: int, response: dict[str, Any]
) -> None:
    """Keep the answer to a verified notification, so that a replay of it gets the same one."""
    await pool.execute(
        "INSERT INTO payment_notifications (signature, payment_id, signed_at, status_code, response)"
        " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (signature) DO NOTHING",
        signature,
        payment_id,
        signed_at,
        status_code,
        response,
    )
