"""The signed webhook channel: a notice as JSON, POSTed to a chat or CRM system.

Each request is signed by the Standard Webhooks scheme under the customer's shared secret
(``activities.signing``): ``webhook-id`` is the same on every retry of a notice step (and is
sent as ``Idempotency-Key`` too), ``webhook-timestamp`` lets the receiver refuse replays of an
old request, ``webhook-signature`` proves who sent the body; any Standard Webhooks verifier checks them.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from activities.notices.render import RenderedNotice
from activities.signing import signed_headers
from activities.tls import tls_verification, untrusted_certificate
from workflows.models import NoticeRequest

RETRYABLE_STATUS = frozenset({408, 429})


class WebhookDeliveryError(Exception):
    """The receiver did not take the notice; ``permanent`` says whether a retry could help."""

    def __init__(self, message: str, *, permanent: bool) -> None:
        super().__init__(message)
        self.permanent = permanent


def webhook_payload(notice: NoticeRequest, rendered: RenderedNotice, message_id: str) -> dict[str, Any]:
    """What a receiver needs to show or file the notice; the same for every retry of a step."""
    return {
        "message_id": message_id,
        "step": notice.idempotency_key,
        "kind": notice.kind.value,
        "invoice_id": notice.invoice_id,
        "customer_id": notice.customer_id,
        "language": notice.language,
        "subject": rendered.subject,
        "text": rendered.text,
        "balance_minor": notice.balance_minor,
        "invoice_amount_minor": notice.invoice_amount_minor,
        "fees_minor": sum(fee.amount_minor for fee in notice.fees),
        "interest_minor": notice.interest_minor,
        "currency": notice.currency,
        "due_date": notice.due_date.isoformat(),
        "suspension_at": notice.suspension_at.isoformat() if notice.suspension_at else None,
    }


async def post_webhook(
    url: str, secret: str, payload: dict[str, Any], idempotency_key: str, timeout: float = 10.0
) -> None:
    """POST ``payload`` signed; ``WebhookDeliveryError`` unless the receiver answers 2xx.

    408, 429, 5xx, timeouts and connection errors are transient; any other answer (a 4xx, or a
    redirect, which is not followed) is permanent: the same request would be refused again.
    """
    body = json.dumps(payload, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode()
    headers = signed_headers(secret, body, idempotency_key)
    try:
        async with httpx.AsyncClient(timeout=timeout, follow_redirects=False, verify=tls_verification(None)) as client:
            response = await client.post(url, content=body, headers=headers)
    except (httpx.LocalProtocolError, httpx.UnsupportedProtocol) as err:
        raise WebhookDeliveryError(f"webhook request to {url} is malformed: {err}", permanent=True) from err
    except httpx.HTTPError as err:
        if untrusted_certificate(err):
            raise WebhookDeliveryError(f"webhook {url}: server certificate not trusted", permanent=True) from err
        raise WebhookDeliveryError(f"webhook {url} unreachable: {err!r}", permanent=False) from err
    if response.is_success:
        return
    transient = response.status_code >= 500 or response.status_code in RETRYABLE_STATUS
    raise WebhookDeliveryError(
        f"webhook {url} answered {response.status_code} {response.reason_phrase}", permanent=not transient
    )
