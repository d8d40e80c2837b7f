"""Payments in the formats others send: bank statements (camt.053/054) and Stripe's signed events."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import JSONResponse
from pydantic import TypeAdapter, ValidationError

from api import cash, intake, payment_claims, statement_import, stripe_events
from api.auth import ops_only
from api.camt import StatementError
from api.cash import CustomerPaymentBody
from api.context import ApiContext, api_context
from api.intake import KeptKind, PaymentReceipt, PaymentStatus, Source
from api.problems import Kind, Problem, customer_answer, problem_responses
from api.statement_import import ImportSummary
from api.stripe_events import StripeEventError, StripeSignatureRefused
from client import customers
from workflows.cash import CustomerPayment, PaymentApplication
from workflows.models import Identifier
from workflows.payments import field_problems

router = APIRouter(tags=["payments"])
Context = Annotated[ApiContext, Depends(api_context)]

STATEMENTS_PATH = "/payments/statements"
MAX_STATEMENT_BYTES = 8 * 1024 * 1024
XML_TYPES = ("application/xml", "text/xml")


@router.post(
    STATEMENTS_PATH,
    dependencies=[ops_only],
    response_model=ImportSummary,
    responses=problem_responses(400, 401, 403, 409, 413, 415, 503),
    openapi_extra={
        "requestBody": {"required": True, "content": {t: {"schema": {"type": "string"}} for t in XML_TYPES}}
    },
    summary="Import a bank statement (camt.053 / camt.054)",
)
async def import_statement(request: Request, ctx: Context) -> ImportSummary:
    """Import an ISO 20022 camt.053 statement or camt.054 notification; idempotent by the lines' own ids.

    Booked credits are matched to invoices by ISO 11649 creditor reference or by an invoice number in
    the remittance text and paid to the invoice's customer (that invoice first, the rest to its other open
    invoices oldest due first, what is left its credit); the rest are kept unapplied with the reason
    (``/payments/unapplied``).
    A line imported before is reported as a duplicate and records nothing. A file that is not camt, or
    declares a DTD or entities (entity expansion, external entities), is refused (400), nothing imported.
    """
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media_type not in XML_TYPES:
        raise Problem(
            Kind.UNSUPPORTED_MEDIA_TYPE,
            f"send the statement as application/xml, not {media_type or 'a body without a type'}",
        )
    try:
        return await statement_import.import_statement(ctx, await request.body())
    except StatementError as err:
        raise Problem(Kind.BAD_REQUEST, f"statement refused, nothing imported: {err}") from None


@router.post(
    "/webhooks/stripe",
    response_model=PaymentReceipt | PaymentApplication,
    responses={
        200: {
            "description": "Applied: split by the customer's cash application (an invoice's payment, or a customer's),"
            " or recorded on an invoice the read model does not know yet; or an event type the service does not"
            " use (acknowledged)."
        },
        202: {"model": PaymentReceipt, "description": "Kept unapplied, or a refund flagged for ops."},
        **problem_responses(400, 401, 409, 413, 422, 503),
    },
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}}},
    summary="Stripe's event (signed with Stripe-Signature)",
)
async def stripe_webhook(
    request: Request,
    ctx: Context,
    stripe_signature: Annotated[
        str | None,
        Header(description="t=<unix seconds>,v1=<hex HMAC-SHA256 of '<t>.<raw body>' with the endpoint secret>"),
    ] = None,
) -> JSONResponse:
    """Record what a Stripe event reports; idempotent by the event id (a redelivery gets the first answer).

    ``payment_intent.succeeded`` pays the payment (by its PaymentIntent id) to the customer of
    ``metadata.invoice_id``, that invoice first, the rest to the customer's other open invoices (oldest due
    first) or its credit; without an invoice, to ``metadata.customer_id``. Kept unapplied (202) when the
    two name different customers, the currency is not the invoice's, or neither is named.
    ``charge.refunded`` is kept as a flagged refund (the service has no refunds); other types are acknowledged.
    """
    secret = ctx.settings.stripe_webhook_secret
    if not secret:
        raise Problem(Kind.UNAVAILABLE, "the Stripe webhook is not configured on this server (no signing secret)")
    body = await request.body()
    try:
        stripe_events.verify(
            secret, stripe_signature, body, ctx.settings.stripe_webhook_tolerance_seconds, datetime.now(timezone.utc)
        )
    except StripeSignatureRefused as refused:
        raise Problem(Kind.INVALID_SIGNATURE, str(refused)) from None
    try:
        event = stripe_events.parse_event(body)
        reported = stripe_events.report(event)
    except StripeEventError as err:
        raise Problem(Kind.BAD_REQUEST, str(err)) from None
    row = await ctx.pool.fetchrow("SELECT status_code, response FROM stripe_events WHERE event_id = $1", event.id)
    if row:
        return JSONResponse(row["response"], status_code=row["status_code"])
    if reported is None:
        status_code, answer = 200, {"event_id": event.id, "status": "ignored", "reason": f"{event.type} is not used"}
    else:
        receipt = await _record(ctx, reported)
        status_code = 202 if isinstance(receipt, PaymentReceipt) and receipt.status == PaymentStatus.UNAPPLIED else 200
        answer = receipt.model_dump(mode="json")
    await ctx.pool.execute(
        "INSERT INTO stripe_events (event_id, event_type, status_code, response) VALUES ($1, $2, $3, $4)"
        " ON CONFLICT (event_id) DO NOTHING",
        event.id,
        event.type,
        status_code,
        answer,
    )
    return JSONResponse(answer, status_code=status_code)


async def _record(ctx: ApiContext, reported: stripe_events.PaymentReport) -> PaymentReceipt | PaymentApplication:
    if reported.refund:
        return await intake.keep_unapplied(
            ctx.pool, reported.invoice_reference, reported.payment, Source.STRIPE, reported.note, KeptKind.REFUND
        )
    if not reported.invoice_reference and reported.customer_reference:
        return await _pay_customer(ctx, reported)
    if not reported.invoice_reference:
        reason = "the PaymentIntent has no metadata.invoice_id"
        return await intake.keep_unapplied(ctx.pool, "", reported.payment, Source.STRIPE, reason)
    invoice = await cash.projected_invoice(ctx.pool, reported.invoice_reference)
    if invoice is None:  # not in the read model (yet): the invoice's own intake records it there, or keeps it
        return await intake.intake(ctx, reported.invoice_reference, reported.payment, Source.STRIPE)
    return await _pay_for_invoice(ctx, reported, invoice)


async def _pay_for_invoice(
    ctx: ApiContext, reported: stripe_events.PaymentReport, invoice: cash.ProjectedInvoice
) -> PaymentReceipt | PaymentApplication:
    """The invoice's customer pays it (the invoice first, the rest to its other invoices or credit); kept unapplied
    if ``metadata.customer_id`` names another customer, or the payment is in another currency than the invoice.

    A PaymentIntent is one payment: once claimed for the customer, another event for it (another event id, so
    another ``created`` time) is answered with the payment as first received; one recorded on the invoice
    itself (before payments from Stripe went through the customer) is answered by the invoice.
    """
    payment = reported.payment
    if reported.customer_reference and reported.customer_reference != invoice.customer_id:
        reason = (
            f"metadata.customer_id {reported.customer_reference!r} is not the customer of invoice {invoice.invoice_id}"
            f" ({invoice.customer_id}): nothing paid to either; apply it by hand"
        )
        return await intake.keep_unapplied(ctx.pool, reported.invoice_reference, payment, Source.STRIPE, reason)
    claimed_for = await payment_claims.target(ctx.pool, invoice.customer_id, payment.payment_id)
    if claimed_for is not None and claimed_for != payment_claims.CUSTOMER_TARGET:
        return await intake.intake(ctx, invoice.invoice_id, payment, Source.STRIPE)
    first = await _received_before(ctx, invoice.customer_id, payment.payment_id) if claimed_for else None
    if first is not None and (first.amount_minor, first.currency) == (payment.amount_minor, payment.currency):
        body = CustomerPaymentBody.model_validate(first.model_dump(include=set(CustomerPaymentBody.model_fields)))
        return await cash.pay_customer(ctx, invoice.customer_id, body)
    try:
        return await cash.pay_for_invoice(ctx, invoice, payment, reported.remittance)
    except Problem as problem:
        if problem.kind != Kind.WRONG_CURRENCY:  # as the invoice's intake: other refusals are the sender's to correct
            raise
        return await intake.keep_unapplied(ctx.pool, invoice.invoice_id, payment, Source.STRIPE, problem.detail)


async def _received_before(ctx: ApiContext, customer_id: str, payment_id: str) -> CustomerPayment | None:
    """The payment as the customer first received it, if its workflow still holds it whole."""
    book = await customer_answer(customer_id, customers.customer_cash(ctx.client, customer_id))
    application = book.payments.get(payment_id)
    return application.payment if application else None


async def _pay_customer(ctx: ApiContext, reported: stripe_events.PaymentReport) -> PaymentReceipt | PaymentApplication:
    """No invoice named, a customer is: its cash application splits the payment; an invalid one is kept."""
    payment = reported.payment
    try:
        fields = payment.model_dump(include={"payment_id", "amount_minor", "currency", "received_at"})
        body = CustomerPaymentBody.model_validate(
            {**fields, "remittance": intake.storable_remittance(reported.remittance)}
        )
        customer_id = TypeAdapter(Identifier).validate_python(reported.customer_reference)
    except ValidationError as err:
        reason = f"metadata.customer_id {reported.customer_reference!r} cannot be paid: {field_problems(err)}"
        return await intake.keep_unapplied(ctx.pool, reported.customer_reference, payment, Source.STRIPE, reason)
    return await cash.pay_customer(ctx, customer_id, body)
