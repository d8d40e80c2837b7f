"""Payments through the service's HTTP ways in: the API's intake, as an integration posts them, and the payment
provider's signed webhook, as a provider (re)delivers a notification.

A request that gets no usable answer (the API killed, a 5xx while Postgres or the worker is down) raises
``NoAnswer``: the driver sends it again unchanged (same payment id; for the webhook the very same signed
notification, as a provider redelivers it), so a retry is never a second payment.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx

from activities import signing
from workflows.models import Payment

CLOSED = "closed"  # what a request answers when the invoice is closed (the webhook: kept the money aside, 202)
REQUEST_TIMEOUT_S = 70.0  # beyond the API's own wait for the workflow's answer
INVOICE_CLOSED_TITLE = "Invoice closed"


class NoAnswer(Exception):
    """No usable answer: send the same request again."""


@dataclass
class HttpIntake:
    """Pays through ``api_url``: the webhook for the payments ``via_webhook`` picks, the API for the others."""

    api_url: str
    api_token: str
    webhook_secret: str
    http: httpx.AsyncClient = field(default_factory=lambda: httpx.AsyncClient(timeout=REQUEST_TIMEOUT_S))
    _signed: dict[str, tuple[bytes, dict[str, str]]] = field(default_factory=dict)
    kept: set[str] = field(default_factory=set)  # payment ids the webhook answered with 202 (kept unapplied)

    async def pay(self, invoice_id: str, payment: Payment, *, via_webhook: bool) -> int | str:
        """The invoice's balance after ``payment``, or ``CLOSED``; raises ``NoAnswer`` to be sent again."""
        if via_webhook:
            body, headers = self._notification(invoice_id, payment)
            url = f"{self.api_url}/webhooks/payments"
        else:
            body = payment.model_dump_json(exclude_none=True).encode()
            headers = {"Authorization": f"Bearer {self.api_token}", "Content-Type": "application/json"}
            url = f"{self.api_url}/invoices/{invoice_id}/payments"
        try:
            response = await self.http.post(url, content=body, headers=headers)
        except httpx.TransportError as err:
            raise NoAnswer(f"{type(err).__name__}: {err}") from None
        if response.status_code >= 500:
            raise NoAnswer(f"{response.status_code}: {response.text[:200]}")
        if response.status_code == 200:
            return int(response.json()["balance_minor"])
        if response.status_code == 202 and via_webhook:
            self.kept.add(payment.payment_id)
            return CLOSED
        if response.status_code == 409 and response.json().get("title") == INVOICE_CLOSED_TITLE:
            return CLOSED
        raise AssertionError(f"payment {payment.payment_id} to {url}: {response.status_code} {response.text[:500]}")

    def _notification(self, invoice_id: str, payment: Payment) -> tuple[bytes, dict[str, str]]:
        """The provider's notification of ``payment``, signed once: a redelivery is the same bytes."""
        if payment.payment_id not in self._signed:
            body = json.dumps(
                {
                    "invoice_id": invoice_id,
                    "payment_id": payment.payment_id,
                    "amount_minor": payment.amount_minor,
                    "currency": payment.currency,
                    "received_at": datetime.now(UTC).isoformat(),
                }
            ).encode()
            self._signed[payment.payment_id] = body, signing.signed_headers(self.webhook_secret, body, payment.payment_id)
        return self._signed[payment.payment_id]

    async def close(self) -> None:
        await self.http.aclose()
