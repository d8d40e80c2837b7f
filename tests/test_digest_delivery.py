"""A customer digest through a real SMTP server (STARTTLS and AUTH): one message with the statement of account
attached, listing the open invoices the read models know beside the digest's; never sent twice, retries included."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta

import asyncpg
import pytest
from temporalio.exceptions import ApplicationError

from activities.notices.smtp import message_id_for
from tests.notice_servers import (
    SENDER,
    CertAuthority,
    MailServer,
    delivery_rows,
    notice_activities,
    notice_request,
    run_activity,
    smtp_config,
)
from tests.test_notice_pdf import pdf_text
from tests.test_notice_webhook import channels_for
from workflows.digests import DigestRequest
from workflows.models import NoticeKind


def digest_for(customer_id: str) -> DigestRequest:
    notices = [
        notice_request(kind, customer_id=customer_id, invoice_id=f"INV-{uuid.uuid4().hex[:8]}", days_overdue=days)
        for kind, days in ((NoticeKind.REMINDER, 1), (NoticeKind.WARNING, 5))
    ]
    key = f"customer-{customer_id}/run-1/digest-1"
    return DigestRequest(idempotency_key=key, number=1, at=datetime.now(UTC), customer_id=customer_id, notices=notices)


async def project(pool: asyncpg.Pool, invoice_id: str, customer_id: str, *, closed: bool) -> None:
    """An invoice as the projector leaves it: EUR 500.00, 200.00 paid, open or closed."""
    await pool.execute(
        "INSERT INTO projected_invoices (invoice_id, customer_id, currency, time_zone, issue_date, due_date, state,"
        " escalation, amount_minor, fees_minor, paid_minor, credited_minor, discount_minor, written_off_minor,"
        " balance_minor, overpaid_minor, discount_available_minor, disputed, on_payment_plan, suspended,"
        " sent_to_agency, equipment_held, rejected_payments, failed_notices, last_sequence, updated_at, closed_at)"
        " VALUES ($1, $2, 'EUR', 'UTC', $3, $4, $5, $5, 50000, 0, 20000, 0, 0, 0, 30000, 0, 0, false, false, false,"
        " false, '{}', 0, 0, 3, now(), $6)",
        invoice_id,
        customer_id,
        date(2026, 2, 1),
        date(2026, 2, 15),
        "paid" if closed else "reminded",
        datetime(2026, 3, 1, tzinfo=UTC) if closed else None,
    )


@pytest.fixture
def activities(pool: asyncpg.Pool, starttls_server: MailServer, trusted_ca: CertAuthority):
    return notice_activities(pool, smtp_config(starttls_server, trusted_ca, "starttls"))


async def test_a_digest_goes_out_once_with_the_statement_attached(pool, activities, starttls_server: MailServer):
    customer_id = f"CUST-{uuid.uuid4().hex[:8]}"
    digest = digest_for(customer_id)
    open_id, paid_id = f"INV-O{customer_id[-4:]}", f"INV-P{customer_id[-4:]}"
    await project(pool, open_id, customer_id, closed=False)
    await project(pool, paid_id, customer_id, closed=True)

    delivery = await run_activity(activities.send_digest, digest, lease=timedelta(seconds=30))
    again = await run_activity(activities.send_digest, digest, lease=timedelta(seconds=30))  # a retry after a lost reply

    assert delivery.delivered == again.delivered == ["email"]
    assert delivery.message_id == again.message_id == message_id_for(digest.idempotency_key, SENDER)
    [received] = starttls_server.received
    assert received.tls and received.login and received.rcpt_tos == ["ivan@client.example"]
    message = received.message
    assert message["Subject"] == "Payment overdue: several invoices"
    assert message["X-Dunning-Step"] == digest.idempotency_key
    text = message.get_body(("plain",)).get_content()
    for notice in digest.notices:
        assert notice.invoice_id in text
    [attachment] = [part for part in message.iter_attachments()]
    assert attachment.get_content_type() == "application/pdf"
    assert attachment.get_filename().startswith(f"statement-{customer_id}-")
    _, statement = pdf_text(attachment.get_content())
    assert all(n.invoice_id in statement for n in digest.notices)
    assert open_id in statement and paid_id not in statement
    assert "€2,300.00" in statement  # two digest invoices at 1,000.00 and the open one at 300.00, in one currency
    rows = await delivery_rows(pool, digest.idempotency_key)
    assert rows["email"]["status"] == "sent" and rows["email"]["kind"] == "digest" and rows["email"]["attempts"] == 1
    assert rows["email"]["invoice_id"] == ",".join(n.invoice_id for n in digest.notices)


async def test_a_digest_refused_for_now_is_sent_once_by_the_retry(activities, starttls_server: MailServer):
    digest = digest_for(f"CUST-{uuid.uuid4().hex[:8]}")
    starttls_server.rcpt_replies = ["451 4.3.0 try again later"]
    with pytest.raises(ApplicationError, match="not yet delivered") as refused:
        await run_activity(activities.send_digest, digest, lease=timedelta(seconds=30))
    assert not refused.value.non_retryable
    assert starttls_server.received == []
    await run_activity(activities.send_digest, digest, lease=timedelta(seconds=30))
    await run_activity(activities.send_digest, digest, lease=timedelta(seconds=30))
    assert len(starttls_server.received) == 1


async def test_a_digest_reaches_a_webhook_once_with_each_invoice(pool, starttls_server, trusted_ca, webhook_receiver):
    customer_id = f"CUST-{uuid.uuid4().hex[:8]}"
    channels = channels_for(webhook_receiver, "email", "webhook", customer_id=customer_id)
    activities = notice_activities(pool, smtp_config(starttls_server, trusted_ca, "starttls"), channels)
    digest = digest_for(customer_id)
    for _ in range(2):  # the second: a retry after a lost reply
        delivery = await run_activity(activities.send_digest, digest, lease=timedelta(seconds=30))
        assert delivery.delivered == ["email", "webhook"]
    assert len(starttls_server.received) == 1 and webhook_receiver.answered == [200]
    [post] = webhook_receiver.accepted
    body = post["body"]
    assert (body["kind"], body["stage"], body["step"]) == ("digest", "warning", digest.idempotency_key)
    assert [(i["invoice_id"], i["kind"]) for i in body["invoices"]] == [(n.invoice_id, n.kind.value) for n in digest.notices]
    assert body["subject"] == "Payment overdue: several invoices"
