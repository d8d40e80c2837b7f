"""The signature of every signed HTTP call in and out of the service (notice and equipment webhooks,
the payment provider's notifications).

A request carries ``X-Dunning-Timestamp`` (unix seconds) and ``X-Dunning-Signature: sha256=<hex>``,
the HMAC-SHA256 under the shared secret of ``"<timestamp>.<body>"``, so a receiver can check both
who sent the body and that it is fresh (replays of an old request fail the timestamp check).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from datetime import datetime, timezone

TIMESTAMP_HEADER = "X-Dunning-Timestamp"
SIGNATURE_HEADER = "X-Dunning-Signature"
SIGNATURE_PREFIX = "sha256="
MAX_TIMESTAMP_DIGITS = 12


class SignatureRefused(ValueError):
    """A signed request that does not hold: unsigned, stale or forged; the message says which."""


def sign(secret: str, timestamp: int | str, body: bytes) -> str:
    """``sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">``, the timestamp as written in its header."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return SIGNATURE_PREFIX + digest


def signed_headers(secret: str, body: bytes, idempotency_key: str) -> dict[str, str]:
    """The headers of a JSON ``body`` POSTed now: content type, timestamp, signature, idempotency key."""
    timestamp = int(time.time())
    return {
        "Content-Type": "application/json",
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: sign(secret, timestamp, body),
        "Idempotency-Key": idempotency_key,
    }


def verify(
    secret: str,
    timestamp: str | None,
    signature: str | None,
    body: bytes,
    tolerance_seconds: float,
    now: datetime | None = None,
    subject: str = "request",
) -> datetime:
    """When ``body`` was signed, if ``signature`` signs it at ``timestamp`` under ``secret`` and that is
    within ``tolerance_seconds`` of ``now`` (default: the current time); compares in constant time.

    Raises :class:`SignatureRefused` saying what is wrong, naming the request as ``subject``.
    """
    if not timestamp or not signature:
        missing = " and ".join(h for h, v in ((TIMESTAMP_HEADER, timestamp), (SIGNATURE_HEADER, signature)) if not v)
        raise SignatureRefused(f"the {subject} is not signed: {missing} missing")
    if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= MAX_TIMESTAMP_DIGITS):
        raise SignatureRefused(f"{TIMESTAMP_HEADER} must be unix seconds, e.g. 1767225600")
    # compared as numbers first: a timestamp past the year 9999 has no datetime
    if abs((now or datetime.now(timezone.utc)).timestamp() - int(timestamp)) > tolerance_seconds:
        raise SignatureRefused(
            f"the {subject} was signed at unix time {timestamp}, more than {tolerance_seconds} s from now:"
            f" a stale or replayed {subject} is refused; sign it again with the current time"
        )
    if not hmac.compare_digest(signature.strip().encode(), sign(secret, timestamp, body).encode()):
        raise SignatureRefused(
            f"{SIGNATURE_HEADER} does not match the {subject}: it must be {SIGNATURE_PREFIX}<hex HMAC-SHA256 of"
            " '<timestamp>.<body>'>"
        )
    return datetime.fromtimestamp(int(timestamp), timezone.utc)
