"""The one signature scheme of the notice and equipment webhooks and the payment provider's notifications:
Standard Webhooks, checked against the standard's published example and its reference verifier."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from activities.signing import (
    ID_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    SignatureRefused,
    sign,
    signed_headers,
    standard_secret,
    verify,
)

BODY = b'{"invoice_id":"INV-1"}'
SIGNED_AT = datetime.fromtimestamp(1_800_000_000, timezone.utc)
TIMESTAMP = "1800000000"
MESSAGE = "msg-1"


def test_the_signature_is_the_standards_published_example():
    # the example of the Standard Webhooks specification: a whsec_ secret, its message id, time and payload
    secret, message, at, payload = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}'
    assert sign(secret, message, at, payload) == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_a_plain_secret_is_its_bytes_and_a_receiver_verifies_with_its_whsec_form():
    headers = signed_headers("hook-secret", BODY, "step-1")
    assert standard_secret("hook-secret") == "whsec_aG9vay1zZWNyZXQ="
    assert Webhook(standard_secret("hook-secret")).verify(BODY, headers, json_parse=False) is None
    with pytest.raises(WebhookVerificationError):
        Webhook(standard_secret("other-secret")).verify(BODY, headers)


def test_signed_headers_carry_the_id_the_current_timestamp_and_its_signature():
    headers = signed_headers("hook-secret", BODY, "step-1")
    timestamp = headers[TIMESTAMP_HEADER]
    assert abs(int(timestamp) - time.time()) < 60
    assert headers[SIGNATURE_HEADER] == sign("hook-secret", "step-1", timestamp, BODY)
    assert (headers["Content-Type"], headers[ID_HEADER], headers["Idempotency-Key"]) == ("application/json", "step-1", "step-1")


def test_verify_accepts_a_fresh_body_signed_with_the_secret_among_others():
    signature = sign("hook-secret", MESSAGE, TIMESTAMP, BODY)
    assert verify("hook-secret", MESSAGE, TIMESTAMP, signature, BODY, 300, SIGNED_AT + timedelta(seconds=299)) == SIGNED_AT
    rotating = f"{sign('old-secret', MESSAGE, TIMESTAMP, BODY)} {signature}"  # a secret being rotated
    assert verify("hook-secret", MESSAGE, TIMESTAMP, rotating, BODY, 300, SIGNED_AT) == SIGNED_AT


@pytest.mark.parametrize(
    ("secret", "message", "timestamp", "body", "signature", "seconds_later", "reason"),
    [
        ("other-secret", MESSAGE, TIMESTAMP, BODY, None, 0, "does not match"),  # forged: wrong key
        ("hook-secret", MESSAGE, TIMESTAMP, BODY + b" ", None, 0, "does not match"),  # body changed
        ("hook-secret", "msg-2", TIMESTAMP, BODY, None, 0, "does not match"),  # id changed
        ("hook-secret", MESSAGE, "1800000001", BODY, None, 0, "does not match"),  # timestamp changed
        ("hook-secret", MESSAGE, TIMESTAMP, BODY, "v1," + "A" * 44, 0, "does not match"),
        ("hook-secret", MESSAGE, TIMESTAMP, BODY, "v1,é", 0, "does not match"),  # not even ASCII
        ("hook-secret", MESSAGE, TIMESTAMP, BODY, None, 301, "stale or replayed"),
        ("hook-secret", MESSAGE, TIMESTAMP, BODY, None, -301, "stale or replayed"),  # from the future
        ("hook-secret", MESSAGE, "253402300800", BODY, None, 0, "stale or replayed"),  # past the year 9999: no datetime
        ("hook-secret", MESSAGE, "18e8", BODY, None, 0, "must be unix seconds"),
        ("hook-secret", MESSAGE, "1" * 13, BODY, None, 0, "must be unix seconds"),
        ("hook-secret", None, TIMESTAMP, BODY, None, 0, f"not signed: {ID_HEADER} missing"),
        ("hook-secret", MESSAGE, None, BODY, None, 0, f"not signed: {TIMESTAMP_HEADER} missing"),
        ("hook-secret", MESSAGE, TIMESTAMP, BODY, "", 0, f"not signed: {SIGNATURE_HEADER} missing"),
    ],
)
def test_verify_refuses_and_says_why(secret, message, timestamp, body, signature, seconds_later, reason):
    if signature is None:
        signature = sign("hook-secret", MESSAGE, TIMESTAMP, BODY)
    now = SIGNED_AT + timedelta(seconds=seconds_later)
    with pytest.raises(SignatureRefused, match=reason):
        verify(secret, message, timestamp, signature, body, 300, now)
