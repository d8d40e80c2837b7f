"""Payments: record one on an invoice, list and apply the unapplied ones, and the provider's signed webhook."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Header, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from activities import signing
from api import cash, examples, intake
from api.auth import any_role, ops_only
from api.cash import CustomerPaymentBody
from api.context import ApiContext, api_context
from api.intake import ApplyPayment, PaymentNotification, PaymentReceipt, PaymentStatus, Source, UnappliedPayment
from api.params import CustomerId, InvoiceId, Page, Paged, PaymentId
from api.problems import Kind, Problem, body_problem, customer_answer, problem_responses
from client import customers
from workflows.cash import CashBook, PaymentApplication
from workflows.models import Payment

router = APIRouter(tags=["payments"])
Context = Annotated[ApiContext, Depends(api_context)]

RECEIPT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "Applied: the invoice's new balance. A repeat of the same payment gets the same answer."},
    202: {"model": PaymentReceipt, "description": "Kept unapplied (no such invoice); listed at /payments/unapplied."},
}


@router.post(
    "/invoices/{invoice_id}/payments",
    dependencies=[any_role],
    response_model=PaymentReceipt,
    responses={**RECEIPT_RESPONSES, **problem_responses(400, 401, 403, 409, 413, 415, 422, 503)},
    summary="Record a payment",
)
async def record_payment(
    invoice_id: InvoiceId,
    payment: Annotated[Payment, Body(openapi_examples=examples.PAYMENT)],
    response: Response,
    ctx: Context,
) -> PaymentReceipt:
    """Record a payment received for the invoice; idempotent by ``payment_id``.

    Same payment id again: the same answer. Same id with another amount: 409. A currency other than
    the invoice's: 422, nothing recorded. An unknown invoice: 202, the payment is kept unapplied.
    """
    receipt = await intake.intake(ctx, invoice_id, payment, Source.API)
    response.status_code = 202 if receipt.status == PaymentStatus.UNAPPLIED else 200
    return receipt


@router.get(
    "/payments/unapplied",
    dependencies=[ops_only],
    response_model=Page[UnappliedPayment],
    responses=problem_responses(401, 403, 422),
    summary="Payments kept unapplied",
)
async def list_unapplied(
    paging: Paged,
    ctx: Context,
    include_applied: Annotated[bool, Query(description="also those applied since")] = False,
) -> Page[UnappliedPayment]:
    """Payments that no invoice could take, oldest first, until ops apply them."""
    items, total = await intake.list_unapplied(
        ctx.pool, include_applied=include_applied, limit=paging.limit, offset=paging.offset
    )
    return paging.page(items, total)


@router.post(
    "/payments/unapplied/{payment_id}/apply",
    dependencies=[ops_only],
    response_model=PaymentReceipt | PaymentApplication,
    responses=problem_responses(400, 401, 403, 404, 409, 413, 415, 422, 503),
    summary="Apply a kept payment to an invoice",
)
async def apply_unapplied(
    payment_id: PaymentId, target: Annotated[ApplyPayment, Body(openapi_examples=examples.APPLY)], ctx: Context
) -> PaymentReceipt | PaymentApplication:
    """Record a kept payment on the invoice it belongs to (which may differ from the payer's reference), or pay
    its customer with it (``customer_id``): split across the customer's open invoices, the rest kept as credit.
    Applied once: concurrent applications to different targets get 409."""
    return await intake.apply_kept(ctx, payment_id, target)


@router.post(
    "/customers/{customer_id}/payments",
    dependencies=[any_role],
    response_model=PaymentApplication,
    responses=problem_responses(400, 401, 403, 409, 413, 415, 422, 503),
    summary="Record a payment to a customer",
)
async def pay_customer(customer_id: CustomerId, payment: CustomerPaymentBody, ctx: Context) -> PaymentApplication:
    """A payment from the customer, split across its open invoices: the invoices the remittance names first,
    then the oldest due (``rule``); the rest is the customer's credit, applied to its next invoice.

    Each part reaches its invoice as the payment ``<payment_id>--<invoice_id>``. Idempotent by
    ``payment_id`` per customer: the same payment again gets the same answer; the same id with other
    content, or already used for one of the customer's invoices, is 409.
    """
    return await cash.pay_customer(ctx, customer_id, payment)


@router.get(
    "/customers/{customer_id}/payments",
    dependencies=[any_role],
    response_model=CashBook,
    responses=problem_responses(401, 403, 422, 503),
    summary="A customer's payments and credit",
)
async def customer_payments(customer_id: CustomerId, ctx: Context) -> CashBook:
    """Every payment to the customer, how its workflow split it across the invoices, and the credit left."""
    return await customer_answer(customer_id, customers.customer_cash(ctx.client, customer_id))


@router.post(
    "/webhooks/payments",
    response_model=PaymentReceipt,
    responses={**RECEIPT_RESPONSES, **problem_responses(400, 401, 409, 413, 422, 503)},
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": PaymentNotification.model_json_schema(),
                    "examples": examples.NOTIFICATION,
                }
            },
        }
    },
    summary="Payment provider's notification (signed)",
)
async def payment_webhook(
    request: Request,
    ctx: Context,
    webhook_id: Annotated[str | None, Header(description="the notification's id (Standard Webhooks)")] = None,
    webhook_timestamp: Annotated[str | None, Header(description="unix seconds when the notification was signed")] = None,
    webhook_signature: Annotated[
        str | None,
        Header(description="v1,<base64 HMAC-SHA256 of '<webhook-id>.<webhook-timestamp>.<raw body>' with the shared secret>"),
    ] = None,
) -> JSONResponse:
    """Record a payment the provider reports. Authenticated by its signature, not by a bearer token.

    The signature and the timestamp are checked before the body is parsed; a notification signed more
    than the tolerance away from now is refused (401). A replay of the same notification gets the
    first answer and records nothing; one the invoice cannot take is kept unapplied (202).
    """
    secret = ctx.settings.payment_webhook_secret
    if not secret:
        raise Problem(Kind.UNAVAILABLE, "the payment webhook is not configured on this server (no shared secret)")
    body = await request.body()
    signed_at = intake.verify_signature(
        secret,
        ctx.settings.payment_webhook_tolerance_seconds,
        webhook_id,
        webhook_timestamp,
        webhook_signature,
        body,
        datetime.now(timezone.utc),
    )
    signature = signing.sign(secret, webhook_id or "", webhook_timestamp or "", body)
    if before := await intake.answered_before(ctx.pool, signature):
        status_code, answer = before
        return JSONResponse(answer, status_code=status_code)
    try:
        notification = PaymentNotification.model_validate_json(body)
    except ValidationError as err:
        raise body_problem(err) from None
    receipt = await intake.intake(ctx, notification.invoice_id, notification.payment(), Source.WEBHOOK)
    status_code = 202 if receipt.status == PaymentStatus.UNAPPLIED else 200
    answer = receipt.model_dump(mode="json")
    await intake.remember_answer(ctx.pool, signature, receipt.payment_id, signed_at, status_code, answer)
    return JSONResponse(answer, status_code=status_code)
