"""The one signature scheme of the notice and equipment webhooks and the payment provider's notifications."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest

from activities.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, SignatureRefused, sign, signed_headers, verify

BODY = b'{"invoice_id":"INV-1"}'
SIGNED_AT = datetime.fromtimestamp(1_800_000_000, timezone.utc)
TIMESTAMP = "1800000000"


def test_the_signature_is_the_hex_hmac_sha256_of_timestamp_dot_body():
    # computed with Python's hmac module outside the service: receivers already check exactly this
    expected = "sha256=50b7bc518bb18f6f5e4cfa4152d566a8223857579e9eb09f4bcb41be1bc5a10b"
    assert sign("hook-secret", 1_800_000_000, BODY) == sign("hook-secret", TIMESTAMP, BODY) == expected


def test_signed_headers_carry_the_current_timestamp_and_its_signature():
    headers = signed_headers("hook-secret", BODY, "step-1")
    timestamp = headers[TIMESTAMP_HEADER]
    assert abs(int(timestamp) - time.time()) < 60
    assert headers[SIGNATURE_HEADER] == sign("hook-secret", timestamp, BODY)
    assert (headers["Content-Type"], headers["Idempotency-Key"]) == ("application/json", "step-1")


def test_verify_accepts_a_fresh_body_signed_with_the_secret():
    signature = sign("hook-secret", TIMESTAMP, BODY)
    assert verify("hook-secret", TIMESTAMP, signature, BODY, 300, SIGNED_AT + timedelta(seconds=299)) == SIGNED_AT
    assert verify("hook-secret", TIMESTAMP, f" {signature} ", BODY, 300, SIGNED_AT) == SIGNED_AT


@pytest.mark.parametrize(
    ("secret", "timestamp", "body", "signature", "seconds_later", "reason"),
    [
        ("other-secret", TIMESTAMP, BODY, None, 0, "does not match"),  # forged: wrong key
        ("hook-secret", TIMESTAMP, BODY + b" ", None, 0, "does not match"),  # body changed
        ("hook-secret", "1800000001", BODY, None, 0, "does not match"),  # timestamp changed
        ("hook-secret", TIMESTAMP, BODY, "sha256=" + "0" * 64, 0, "does not match"),
        ("hook-secret", TIMESTAMP, BODY, "sha256=é", 0, "does not match"),  # not even ASCII
        ("hook-secret", TIMESTAMP, BODY, None, 301, "stale or replayed"),
        ("hook-secret", TIMESTAMP, BODY, None, -301, "stale or replayed"),  # from the future
        ("hook-secret", "253402300800", BODY, None, 0, "stale or replayed"),  # past the year 9999: no datetime
        ("hook-secret", "18e8", BODY, None, 0, "must be unix seconds"),
        ("hook-secret", "1" * 13, BODY, None, 0, "must be unix seconds"),
        ("hook-secret", None, BODY, None, 0, f"not signed: {TIMESTAMP_HEADER} missing"),
        ("hook-secret", TIMESTAMP, BODY, "", 0, f"not signed: {SIGNATURE_HEADER} missing"),
    ],
)
def test_verify_refuses_and_says_why(secret, timestamp, body, signature, seconds_later, reason):
    if signature is None:
        signature = sign("hook-secret", TIMESTAMP, BODY)
    now = SIGNED_AT + timedelta(seconds=seconds_later)
    with pytest.raises(SignatureRefused, match=reason):
        verify(secret, timestamp, signature, body, 300, now)
