"""The signature of every signed HTTP call in and out of the service (notice and equipment webhooks,
the payment provider's notifications): the Standard Webhooks scheme (https://www.standardwebhooks.com),
signed and checked by its reference library ``standardwebhooks``, so receivers use a ready verifier.

A request carries ``webhook-id`` (the message id: the same on every retry of one step, so receivers
deduplicate by it), ``webhook-timestamp`` (unix seconds) and ``webhook-signature: v1,<base64>``, the
HMAC-SHA256 of ``"<id>.<timestamp>.<body>"`` under the shared secret. Several signatures separated by
spaces are allowed (a secret being rotated). A secret written ``whsec_<base64>`` is those bytes, as the
standard has it; any other secret is its UTF-8 bytes, i.e. ``whsec_`` + base64 of it for a receiver's
library.
"""

from __future__ import annotations

import base64
import hmac
import time
from datetime import datetime, timezone

from standardwebhooks.webhooks import Webhook

ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"
SECRET_PREFIX = "whsec_"
MAX_TIMESTAMP_DIGITS = 12


class SignatureRefused(ValueError):
    """A signed request that does not hold: unsigned, stale or forged; the message says which."""


def standard_secret(secret: str) -> str:
    """``secret`` as the standard writes it (``whsec_<base64>``), for a receiver's verifier."""
    if secret.startswith(SECRET_PREFIX):
        return secret
    return SECRET_PREFIX + base64.b64encode(secret.encode()).decode()


def _webhook(secret: str) -> Webhook:
    return Webhook(secret if secret.startswith(SECRET_PREFIX) else secret.encode())


def sign(secret: str, message_id: str, timestamp: int | str, body: bytes) -> str:
    """``v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>">``, the timestamp as written in its header."""
    return _webhook(secret).sign(message_id, datetime.fromtimestamp(int(timestamp), timezone.utc), body)


def signed_headers(secret: str, body: bytes, message_id: str) -> dict[str, str]:
    """The headers of a JSON ``body`` POSTed now: content type, id, timestamp and signature; the id also as
    ``Idempotency-Key`` for receivers that deduplicate by that header."""
    timestamp = int(time.time())
    return {
        "Content-Type": "application/json",
        ID_HEADER: message_id,
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: sign(secret, message_id, timestamp, body),
        "Idempotency-Key": message_id,
    }


def verify(
    secret: str,
    message_id: str | None,
    timestamp: str | None,
    signature: str | None,
    body: bytes,
    tolerance_seconds: float,
    now: datetime | None = None,
    subject: str = "request",
) -> datetime:
    """When ``body`` was signed, if one of the space-separated ``signature``s signs it with ``message_id`` at
    ``timestamp`` under ``secret`` and that is within ``tolerance_seconds`` of ``now`` (default: the current
    time); compares in constant time.

    Raises :class:`SignatureRefused` saying what is wrong, naming the request as ``subject``.
    """
    given = ((ID_HEADER, message_id), (TIMESTAMP_HEADER, timestamp), (SIGNATURE_HEADER, signature))
    if missing := [header for header, value in given if not value]:
        raise SignatureRefused(f"the {subject} is not signed: {' and '.join(missing)} missing")
    assert message_id and timestamp and signature
    if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= MAX_TIMESTAMP_DIGITS):
        raise SignatureRefused(f"{TIMESTAMP_HEADER} must be unix seconds, e.g. 1767225600")
    # compared as numbers first: a timestamp past the year 9999 has no datetime
    if abs((now or datetime.now(timezone.utc)).timestamp() - int(timestamp)) > tolerance_seconds:
        raise SignatureRefused(
            f"the {subject} was signed at unix time {timestamp}, more than {tolerance_seconds} s from now:"
            f" a stale or replayed {subject} is refused; sign it again with the current time"
        )
    expected = sign(secret, message_id, timestamp, body).encode()
    if not any(hmac.compare_digest(expected, given.encode()) for given in signature.split() if given.isascii()):
        raise SignatureRefused(
            f"{SIGNATURE_HEADER} does not match the {subject}: it must be v1,<base64 HMAC-SHA256 of"
            " '<webhook-id>.<webhook-timestamp>.<body>'> (Standard Webhooks)"
        )
    return datetime.fromtimestamp(int(timestamp), timezone.utc)
