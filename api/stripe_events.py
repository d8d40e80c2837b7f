"""Stripe's signed webhook events, the first payment-provider adapter (https://docs.stripe.com/webhooks).

Verification follows Stripe's published scheme: ``Stripe-Signature: t=<unix seconds>,v1=<hex>[,v1=…]``
where each ``v1`` is the HMAC-SHA256 of ``"<t>.<raw body>"`` under the endpoint's signing secret (the
``whsec_…`` string as it is, UTF-8), and ``t`` must lie within the tolerance of now. Two events are
read: ``payment_intent.succeeded`` (a payment, by its PaymentIntent id, for ``metadata.invoice_id``, or
without one for ``metadata.customer_id``; either is split by the customer's cash application)
and ``charge.refunded`` (kept as a refund flagged for ops: the service has no refunds). Others are
acknowledged and ignored, so Stripe stops resending them.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime, timezone
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from workflows.models import Payment, format_money

SIGNATURE_HEADER = "Stripe-Signature"
PAYMENT_SUCCEEDED = "payment_intent.succeeded"
CHARGE_REFUNDED = "charge.refunded"


class StripeSignatureRefused(ValueError):
    """The event's signature does not hold: missing, malformed, stale or made with another secret."""


class StripeEventError(ValueError):
    """A verified event whose content cannot be read (the message says what is missing)."""


def verify(secret: str, header: str | None, body: bytes, tolerance_seconds: int, now: datetime) -> datetime:
    """Check ``Stripe-Signature`` over the raw body; returns when Stripe signed it."""
    if not header:
        raise StripeSignatureRefused(f"no {SIGNATURE_HEADER} header")
    pairs = [part.strip().partition("=") for part in header.split(",")]
    timestamps = [value for key, _, value in pairs if key == "t"]
    signatures = [value for key, _, value in pairs if key == "v1"]
    if len(timestamps) != 1 or not timestamps[0].isdigit() or len(timestamps[0]) > 12:
        raise StripeSignatureRefused(f"{SIGNATURE_HEADER} has no timestamp t=<unix seconds>")
    if not signatures:
        raise StripeSignatureRefused(f"{SIGNATURE_HEADER} has no v1 signature")
    expected = hmac.new(secret.encode(), timestamps[0].encode() + b"." + body, hashlib.sha256).hexdigest()
    if not any(hmac.compare_digest(expected, signature) for signature in signatures):
        raise StripeSignatureRefused("no v1 signature matches the body under this endpoint's secret")
    signed_at = datetime.fromtimestamp(int(timestamps[0]), timezone.utc)
    age = abs((now - signed_at).total_seconds())
    if age > tolerance_seconds:
        raise StripeSignatureRefused(
            f"signed {int(age)} s away from now, beyond the tolerance of {tolerance_seconds} s"
        )
    return signed_at


class _Object(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    currency: str = Field(min_length=3, max_length=3)
    metadata: dict[str, Any] = Field(default_factory=dict)


class _PaymentIntent(_Object):
    amount_received: int = Field(gt=0)
    description: str | None = None


class _Charge(_Object):
    amount_refunded: int = Field(gt=0)
    payment_intent: str | None = None


class _Data(BaseModel):
    object: dict[str, Any]


class StripeEvent(BaseModel):
    """The envelope of a Stripe event (fields beyond these are ignored)."""

    model_config = ConfigDict(extra="ignore")

    id: str = Field(min_length=1, max_length=255)
    type: str
    created: int
    data: _Data


class PaymentReport(BaseModel):
    """What an event asks the service to record: a payment, or a refund to flag."""

    invoice_reference: str = Field(description="metadata.invoice_id, or '' when the event has none")
    customer_reference: str = Field(default="", description="metadata.customer_id: without an invoice, the customer's payment path")
    remittance: str = Field(default="", description="metadata.remittance, else the PaymentIntent's description")
    payment: Payment
    refund: bool
    note: str = Field(default="", description="refund: what ops should know")


def parse_event(body: bytes) -> StripeEvent:
    try:
        return StripeEvent.model_validate_json(body)
    except ValidationError as err:
        raise StripeEventError(f"not a Stripe event: {_first_error(err)}") from None


def report(event: StripeEvent) -> PaymentReport | None:
    """The payment or refund an event reports; None for an event type the service does not use."""
    received_at = datetime.fromtimestamp(event.created, timezone.utc)
    try:
        if event.type == PAYMENT_SUCCEEDED:
            intent = _PaymentIntent.model_validate(event.data.object)
            payment = Payment(
                payment_id=intent.id,
                amount_minor=intent.amount_received,
                currency=intent.currency.upper(),
                received_at=received_at,
            )
            return PaymentReport(
                invoice_reference=_invoice_reference(intent),
                customer_reference=_metadata(intent, "customer_id", 64),
                remittance=_metadata(intent, "remittance", 500) or (intent.description or "")[:500],
                payment=payment,
                refund=False,
            )
        if event.type == CHARGE_REFUNDED:
            charge = _Charge.model_validate(event.data.object)
            currency = charge.currency.upper()
            # one event per refund, each with the charge's refunded total: the event id names this one
            payment = Payment(
                payment_id=event.id[:64],
                amount_minor=charge.amount_refunded,
                currency=currency,
                received_at=received_at,
            )
            note = (
                f"Stripe refunded {format_money(charge.amount_refunded, currency)} in total of charge {charge.id}"
                f" (payment {charge.payment_intent or 'unknown'}): the service records no refunds;"
                " correct the invoice by hand"
            )
            return PaymentReport(invoice_reference=_invoice_reference(charge), payment=payment, refund=True, note=note)
    except ValidationError as err:
        raise StripeEventError(f"{event.type} event {event.id}: {_first_error(err)}") from None
    return None


def _metadata(obj: _Object, key: str, limit: int) -> str:
    value = obj.metadata.get(key)
    return str(value)[:limit] if value else ""


def _invoice_reference(obj: _Object) -> str:
    value = obj.metadata.get("invoice_id")
    return str(value)[:200] if value else ""


def _first_error(err: ValidationError) -> str:
    first = err.errors(include_url=False)[0]
    where = ".".join(str(part) for part in first["loc"]) or "body"
    return f"{where}: {first['msg']}"
