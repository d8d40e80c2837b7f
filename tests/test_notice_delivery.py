"""The e-mail channel and the ``send_notice`` / ``send_agency_package`` activities, against a real
SMTP server with AUTH and TLS on loopback, real Postgres, and (for retries) a real Temporal server."""

from __future__ import annotations

import asyncio
import gc
import io
import json
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta, timezone
from email import message_from_bytes, policy

import asyncpg
import pytest
from pypdf import PdfReader
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.calendar import public_holidays
from activities.ledger import LedgerActivities, read_events
from activities.notices.delivery import LEASE_MARGIN
from activities.notices.render import Attachment, RenderedNotice, render_notice
from activities.notices.rendering_pool import RENDER_NICENESS, rendering_pool
from activities.notices.smtp import compose_email, message_id_for
from activities.service import ServiceActivities
from bench.recording import with_pydantic
from tests.harness import eventually, make_invoice, start_invoice
from tests.notice_servers import (
    AGENCY_EMAIL,
    PAYEE,
    SENDER,
    SMTP_USER,
    MailServer,
    delivery_rows,
    notice_activities,
    notice_request,
    run_activity,
    running_server,
    smtp_config,
)
from worker.sandbox import workflow_runner
from workflows.invoice import InvoiceWorkflow
from workflows.models import AgencyHandover, DomainEvent, DunningPolicy, EventKind, NoticeKind

# aiosmtpd cannot see that an implicit-TLS connection is encrypted, and warns about AUTH without TLS
pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")

# --- e-mail over STARTTLS and implicit TLS, with AUTH ------------------------------------------


async def test_starttls_with_auth_delivers_the_rendered_notice(pool, starttls_server: MailServer, trusted_ca):
    notices = notice_activities(pool, smtp_config(starttls_server, trusted_ca, "starttls"))
    notice = notice_request(NoticeKind.INVOICE_ISSUED)
    rendered = render_notice(notice, PAYEE)

    result = await run_activity(notices.send_notice, notice)

    message_id = message_id_for(notice.idempotency_key, SENDER)
    assert result == {"message_id": message_id, "delivered": ["email"], "failed": {}}
    [received] = starttls_server.received
    assert received.tls and received.login == SMTP_USER
    assert (received.mail_from, received.rcpt_tos) == (SENDER, ["ivan@client.example"])
    message = received.message
    assert message["Subject"] == rendered.subject and notice.invoice_id in rendered.subject
    assert message["Message-ID"] == message_id
    assert message["X-Dunning-Step"] == notice.idempotency_key
    assert message["Auto-Submitted"] == "auto-generated"
    assert message["From"].addresses[0].addr_spec == SENDER
    [to] = message["To"].addresses
    assert (to.display_name, to.addr_spec) == ("Иван Петров", "ivan@client.example")
    # the Bulgarian name travels as an RFC 2047 encoded word, the header itself is ASCII
    raw_to = next(line for line in received.raw.split(b"\r\n") if line.lower().startswith(b"to:"))
    assert b"=?utf-8?" in raw_to.lower() and raw_to.isascii()

    assert message.get_content_type() == "multipart/mixed"
    text = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    assert text.splitlines() == rendered.text.splitlines() and notice.invoice_id in text and PAYEE.name in text
    assert html.splitlines() == rendered.html.splitlines() and notice.invoice_id in html
    [pdf] = [part for part in message.iter_attachments() if part.get_content_type() == "application/pdf"]
    assert pdf.get_filename() == rendered.attachments[0].filename
    assert pdf.get_content() == rendered.attachments[0].data
    assert notice.invoice_id in "".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf.get_content())).pages)

    row = (await delivery_rows(pool, notice.idempotency_key))["email"]
    assert (row["status"], row["attempts"], row["message_id"], row["recipient"]) == (
        "sent", 1, message_id, "ivan@client.example"
    )


async def test_notices_render_in_a_low_priority_process_and_arrive_the_same(
    pool, starttls_server: MailServer, trusted_ca
):
    """The worker's rendering pool: another process, scheduled after the worker; the e-mail and its PDF are
    those rendered in place."""
    notice = notice_request(NoticeKind.INVOICE_ISSUED)
    with rendering_pool(1) as renderer:
        assert renderer.submit(os.getpid).result() != os.getpid()
        assert renderer.submit(os.nice, 0).result() == min(19, os.nice(0) + RENDER_NICENESS)
        notices = notice_activities(pool, smtp_config(starttls_server, trusted_ca, "starttls"), renderer=renderer)
        await run_activity(notices.send_notice, notice, lease=timedelta(seconds=30))
    rendered = render_notice(notice, PAYEE)
    [received] = starttls_server.received
    assert received.message["Subject"] == rendered.subject
    assert received.message.get_body(("plain",)).get_content().splitlines() == rendered.text.splitlines()
    [pdf] = [part for part in received.message.iter_attachments() if part.get_content_type() == "application/pdf"]
    assert pdf.get_content() == rendered.attachments[0].data


async def test_implicit_tls_with_auth_delivers(pool, tls_server: MailServer, trusted_ca):
    notices = notice_activities(pool, smtp_config(tls_server, trusted_ca, "tls"))
    notice = notice_request(NoticeKind.REMINDER)

    await run_activity(notices.send_notice, notice)

    [received] = tls_server.received
    assert received.tls and received.login == SMTP_USER
    assert received.message["Message-ID"] == message_id_for(notice.idempotency_key, SENDER)
    assert notice.invoice_id in received.message["Subject"]
    assert received.message.get_body(("plain",)) is not None and received.message.get_body(("html",)) is not None


async def test_a_wrong_password_is_a_clear_permanent_failure(pool, starttls_server: MailServer, trusted_ca):
    smtp = smtp_config(starttls_server, trusted_ca, "starttls", password="not-the-password")
    notice = notice_request()

    with pytest.raises(ApplicationError) as failure:
        await run_activity(notice_activities(pool, smtp).send_notice, notice)

    assert failure.value.non_retryable and failure.value.type == "PermanentDeliveryFailure"
    assert "SMTP login refused: 535" in str(failure.value)
    assert starttls_server.failed_logins >= 1 and starttls_server.received == []
    assert (await delivery_rows(pool, notice.idempotency_key))["email"]["status"] == "failed"


@pytest.mark.parametrize("smtputf8", [True, False], ids=["server offers SMTPUTF8", "server does not"])
async def test_an_internationalised_domain_goes_out_in_ascii(pool, smtputf8: bool):
    with running_server(MailServer("none", None, smtputf8=smtputf8)) as server:
        notice = notice_request(to_email="ana@bücher.example")
        await run_activity(notice_activities(pool, smtp_config(server, None, "none")).send_notice, notice)
    [received] = server.received
    assert received.rcpt_tos == ["ana@xn--bcher-kva.example"] and not received.smtputf8
    assert received.message["To"].addresses[0].addr_spec == "ana@xn--bcher-kva.example"


async def test_an_internationalised_mailbox_is_sent_with_smtputf8(pool):
    with running_server(MailServer("none", None, smtputf8=True)) as server:
        notice = notice_request(to_email="иван@пример.example")
        result = await run_activity(notice_activities(pool, smtp_config(server, None, "none")).send_notice, notice)
    assert result["delivered"] == ["email"]
    [received] = server.received
    assert received.smtputf8 and received.rcpt_tos == ["иван@xn--e1afmkfd.example"]
    [to] = received.message["To"].addresses
    assert (to.display_name, to.addr_spec) == ("Иван Петров", "иван@xn--e1afmkfd.example")
    assert notice.invoice_id in received.message["Subject"]


async def test_an_internationalised_mailbox_without_smtputf8_is_a_clear_permanent_failure(pool):
    with running_server(MailServer("none", None, smtputf8=False)) as server:
        notice = notice_request(to_email="иван@пример.example")
        with pytest.raises(ApplicationError) as failure:
            await run_activity(notice_activities(pool, smtp_config(server, None, "none")).send_notice, notice)
    assert failure.value.non_retryable and failure.value.type == "PermanentDeliveryFailure"
    assert "needs SMTPUTF8" in str(failure.value) and "does not offer" in str(failure.value)
    assert server.rcpt_commands == 0 and server.received == []
    assert (await delivery_rows(pool, notice.idempotency_key))["email"]["status"] == "failed"


async def test_a_server_certificate_from_another_ca_is_refused(pool, rogue_server: MailServer, trusted_ca):
    notice = notice_request()

    with pytest.raises(ApplicationError) as failure:
        await run_activity(notice_activities(pool, smtp_config(rogue_server, trusted_ca, "tls")).send_notice, notice)

    assert failure.value.non_retryable and "certificate not trusted" in str(failure.value)
    assert rogue_server.received == []


async def test_starttls_refuses_an_untrusted_certificate_before_sending_credentials(
    pool, starttls_server: MailServer, rogue_ca
):
    notice = notice_request()

    notices = notice_activities(pool, smtp_config(starttls_server, rogue_ca, "starttls"))

    with pytest.raises(ApplicationError) as failure:
        await run_activity(notices.send_notice, notice)

    assert failure.value.non_retryable and "certificate not trusted" in str(failure.value)
    assert starttls_server.received == [] and starttls_server.failed_logins == 0


# --- exactly once ------------------------------------------------------------------------------


async def test_a_retry_after_a_lost_reply_sends_nothing(pool, starttls_server: MailServer, trusted_ca):
    """The first run completed but Temporal never heard; the retry finds the step 'sent'."""
    notices = notice_activities(pool, smtp_config(starttls_server, trusted_ca, "starttls"))
    notice = notice_request(NoticeKind.WARNING)

    first = await run_activity(notices.send_notice, notice)
    retry = await run_activity(notices.send_notice, notice)

    assert retry == first
    assert len(starttls_server.received) == 1
    row = (await delivery_rows(pool, notice.idempotency_key))["email"]
    assert (row["status"], row["attempts"]) == ("sent", 1)


async def test_a_crash_between_sending_and_sent_resends_with_the_same_message_id(
    pool, starttls_server: MailServer, trusted_ca
):
    """The guarantee's one gap, stated: the server took the message, then the attempt died before
    recording 'sent'. While its lease runs no other attempt sends; after it, the retry sends again
    with the same Message-ID. At-least-once there, with a stable Message-ID for the receiver to
    drop the duplicate by."""
    notices = notice_activities(pool, smtp_config(starttls_server, trusted_ca, "starttls"))
    notice = notice_request(NoticeKind.LATE_FEE)
    lease = timedelta(seconds=2)
    starttls_server.hold_data()  # keep the message, hold the reply back

    crashing = asyncio.create_task(run_activity(notices.send_notice, notice, lease))
    await eventually(lambda: starttls_server.received, timeout=10)
    crashing.cancel()  # the worker dies: nothing after the send runs

    with pytest.raises(ApplicationError) as busy:  # an attempt inside the lease does not send
        await run_activity(notices.send_notice, notice, lease)
    assert not busy.value.non_retryable and "another attempt is sending" in str(busy.value)
    # retried as the lease ends, whatever backoff the attempts so far would give
    assert timedelta(seconds=1) < busy.value.next_retry_delay <= lease + LEASE_MARGIN
    starttls_server.release_data()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(crashing, timeout=10)
    assert len(starttls_server.received) == 1
    row = (await delivery_rows(pool, notice.idempotency_key))["email"]
    assert (row["status"], row["sent_at"]) == ("sending", None)

    await asyncio.sleep(lease.total_seconds() + 0.2)
    await run_activity(notices.send_notice, notice, lease)

    first, second = starttls_server.messages
    assert first["Message-ID"] == second["Message-ID"] == message_id_for(notice.idempotency_key, SENDER)
    row = (await delivery_rows(pool, notice.idempotency_key))["email"]
    assert (row["status"], row["attempts"]) == ("sent", 2)


# --- header injection --------------------------------------------------------------------------

RENDERED = RenderedNotice(subject="Invoice INV-1", text="Please pay.\n", html="<p>Please pay.</p>")
STEP = "invoice-INV-1/0001-invoice_issued"
MESSAGE_ID = message_id_for(STEP, SENDER)


def with_attachment(attachment: Attachment) -> RenderedNotice:
    return RenderedNotice("Invoice INV-1", "x", "<p>x</p>", (attachment,))


@pytest.mark.parametrize(
    "change",
    [
        {"rendered": RenderedNotice("Invoice\r\nBcc: evil@attacker.example", "x", "<p>x</p>")},
        {"rendered": RenderedNotice("Invoice\nBcc: evil@attacker.example", "x", "<p>x</p>")},
        {"to_name": "Ana\r\nBcc: evil@attacker.example"},
        {"to_name": "Ana\u2028Bcc: evil@attacker.example"},
        {"to_email": "ana@client.example\r\nBcc: evil@attacker.example"},
        {"to_email": "ana@client.example>, <evil@attacker.example"},
        {"sender": "billing@dunning.example\nBcc: evil@attacker.example"},
        {"step_key": "step\r\nBcc: evil@attacker.example"},
        {"message_id": "<a@b>\r\nBcc: evil@attacker.example"},
        {"rendered": with_attachment(Attachment("a.pdf\r\nBcc: e@x.example", "application/pdf", b"%PDF"))},
        {"rendered": with_attachment(Attachment("a.pdf", "application/pdf\r\nBcc: e@x.example", b"%PDF"))},
    ],
)
def test_no_field_can_add_a_header(change):
    fields = {
        "rendered": RENDERED,
        "sender": SENDER,
        "to_name": "Ana Pop",
        "to_email": "ana@client.example",
        "message_id": MESSAGE_ID,
        "step_key": STEP,
    }
    fields.update(change)
    with pytest.raises(ValueError):
        compose_email(**fields)


def test_specials_in_a_name_are_quoted_not_parsed():
    name = 'Evil" <evil@attacker.example>, Bcc: x@attacker.example; "'
    message = compose_email(RENDERED, SENDER, name, "ana@client.example", MESSAGE_ID, STEP)

    parsed = message_from_bytes(message.as_bytes(), policy=policy.default)
    [to] = parsed["To"].addresses
    assert (to.display_name, to.addr_spec) == (name, "ana@client.example")
    assert "Bcc" not in parsed and parsed.keys().count("To") == 1


def test_composing_leaves_nothing_for_the_cycle_collector():
    """A worker with many invoices cached runs the full collection rarely: garbage in cycles piles up."""
    attachment = Attachment("invoice.pdf", "application/pdf", b"%PDF-1.7" * 1000)
    rendered = RenderedNotice("Invoice INV-1", "x", "<p>x</p>", (attachment,))
    compose_email(rendered, SENDER, "Ana Pop", "ana@client.example", MESSAGE_ID, STEP).as_bytes()  # warm
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)  # what a collection finds stays in gc.garbage
    try:
        for _ in range(20):
            compose_email(rendered, SENDER, "Ana Pop", "ana@client.example", MESSAGE_ID, STEP).as_bytes()
        gc.collect()
        left = [o for o in gc.garbage if isinstance(o, type) or type(o).__module__.startswith("email")]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert left == []


async def test_send_notice_refuses_a_name_with_a_line_break_and_sends_nothing(pool, starttls_server, trusted_ca):
    notice = notice_request(to_name="Ana\r\nBcc: evil@attacker.example")

    notices = notice_activities(pool, smtp_config(starttls_server, trusted_ca, "starttls"))

    with pytest.raises(ApplicationError) as failure:
        await run_activity(notices.send_notice, notice)

    assert failure.value.non_retryable and "refused to compose" in str(failure.value)
    assert starttls_server.rcpt_commands == 0 and starttls_server.received == []


# --- the agency hand-over package --------------------------------------------------------------


async def test_the_agency_package_is_emailed_once_with_json_and_pdf(pool, starttls_server: MailServer, trusted_ca):
    invoice = make_invoice(datetime(2026, 1, 5).date())
    at = datetime(2026, 1, 5, 9, tzinfo=timezone.utc)
    paid_at = at + timedelta(days=20)
    facts = [
        (EventKind.INVOICE_ISSUED, at, {"invoice": invoice.model_dump(mode="json")}),
        (EventKind.NOTICE_SENT, at, {"kind": "invoice_issued", "step": "0001-invoice_issued", "to": "ana@client.example"}),
        (EventKind.PAYMENT_RECORDED, paid_at,
         {"payment_id": "BT-77", "amount_minor": 30_000, "received_at": paid_at.isoformat(), "balance_minor": 70_000}),
        (EventKind.DISPUTE_OPENED, at + timedelta(days=22), {"reason": "hours billed twice"}),
    ]
    events = [
        DomainEvent(invoice_id=invoice.invoice_id, sequence=n, kind=kind, occurred_at=when, data=data)
        for n, (kind, when, data) in enumerate(facts, start=1)
    ]
    await LedgerActivities(pool).append_events(events)
    handover = AgencyHandover(
        idempotency_key=f"{invoice.workflow_id}/agency-package", invoice=invoice, fees=[], paid_minor=30_000,
        deducted_minor=0, balance_minor=70_000, days_overdue=90,
    )
    notices = notice_activities(pool, smtp_config(starttls_server, trusted_ca, "starttls"))

    message_id = await run_activity(notices.send_agency_package, handover)
    assert await run_activity(notices.send_agency_package, handover) == message_id  # the retry sends nothing

    [received] = starttls_server.received
    assert received.rcpt_tos == [AGENCY_EMAIL] and received.message["Message-ID"] == message_id
    assert invoice.invoice_id in received.message["Subject"]
    parts = {part.get_content_type(): part for part in received.message.iter_attachments()}
    package = json.loads(parts["application/json"].get_content())
    flat = json.dumps(package)
    assert invoice.invoice_id in flat and "BT-77" in flat and "hours billed twice" in flat
    pdf_text = "".join(p.extract_text() for p in PdfReader(io.BytesIO(parts["application/pdf"].get_content())).pages)
    assert invoice.invoice_id in pdf_text
    row = (await delivery_rows(pool, handover.idempotency_key))["agency"]
    assert (row["status"], row["attempts"], row["recipient"]) == ("sent", 1, AGENCY_EMAIL)
    assert len(await read_events(pool, invoice.invoice_id)) == 4


# --- retries through Temporal: 5xx once, 4xx again -----------------------------------------------

ROUND_THE_CLOCK = DunningPolicy.default().model_copy(update={"sending_window": None})


@asynccontextmanager
async def service_worker(client: Client, pool: asyncpg.Pool, smtp_server: MailServer) -> AsyncIterator[str]:
    """The invoice workflow with the real activities, sending to ``smtp_server`` in clear."""
    queue = f"notices-{uuid.uuid4().hex[:8]}"
    smtp = smtp_config(smtp_server, None, "none")  # type: ignore[arg-type]
    notices, ledger, service = notice_activities(pool, smtp), LedgerActivities(pool), ServiceActivities(pool)
    async with Worker(
        client,
        task_queue=queue,
        workflows=[InvoiceWorkflow],
        activities=[
            ledger.append_events,
            notices.send_notice,
            notices.send_agency_package,
            service.suspend_service,
            service.restore_service,
            public_holidays,
        ],
        workflow_runner=workflow_runner(),
    ):
        yield queue


async def event_kinds(pool: asyncpg.Pool, invoice_id: str) -> list[str]:
    return [e.kind.value for e in await read_events(pool, invoice_id)]


@pytest.fixture
def plain_server() -> Iterator[MailServer]:
    server = MailServer("none", None)
    server.controller.start()
    yield server
    server.controller.stop()


async def test_a_5xx_is_not_retried_and_escalation_goes_on(time_skipping_env: WorkflowEnvironment, pool, plain_server):
    client = with_pydantic(time_skipping_env.client)
    plain_server.rcpt_replies = ["550 5.1.1 mailbox unavailable"] * 5
    today = (await time_skipping_env.get_current_time()).date()
    invoice = make_invoice(today, policy=ROUND_THE_CLOCK)
    async with service_worker(client, pool, plain_server) as queue:
        handle = await start_invoice(client, queue, invoice)
        await eventually(lambda: _has(pool, invoice.invoice_id, "notice_failed"), timeout=20)

        [row] = await pool.fetch("SELECT * FROM notice_deliveries WHERE invoice_id = $1", invoice.invoice_id)
        assert (row["kind"], row["channel"], row["status"], row["attempts"]) == ("invoice_issued", "email", "failed", 1)
        assert "550" in row["error"]
        assert plain_server.rcpt_commands == 1 and plain_server.received == []
        history = await handle.fetch_history()
        started = [
            e.activity_task_started_event_attributes.attempt
            for e in history.events
            if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED
        ]
        scheduled = [
            e.activity_task_scheduled_event_attributes.activity_type.name
            for e in history.events
            if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
        ]
        assert scheduled.count("send_notice") == 1 and max(started) == 1

        # the escalation goes on: the reminder is due a day after the due date, and is tried too
        await time_skipping_env.sleep(timedelta(days=16))
        await eventually(lambda: _count(pool, invoice.invoice_id, "notice_failed", 2), timeout=20)
        assert "stage_reached" in await event_kinds(pool, invoice.invoice_id)
        assert plain_server.rcpt_commands == 2
        await handle.terminate("test over")


async def test_a_4xx_is_retried_and_then_delivered_once(time_skipping_env: WorkflowEnvironment, pool, plain_server):
    client = with_pydantic(time_skipping_env.client)
    plain_server.rcpt_replies = ["451 4.7.1 greylisted, try again"]
    invoice = make_invoice((await time_skipping_env.get_current_time()).date(), policy=ROUND_THE_CLOCK)
    async with service_worker(client, pool, plain_server) as queue:
        handle = await start_invoice(client, queue, invoice)
        try:
            await eventually(lambda: _has(pool, invoice.invoice_id, "notice_sent"), timeout=20)
        finally:
            await handle.terminate("test over")

    [row] = await pool.fetch("SELECT * FROM notice_deliveries WHERE invoice_id = $1", invoice.invoice_id)
    assert (row["kind"], row["status"], row["attempts"]) == ("invoice_issued", "sent", 2)
    assert plain_server.rcpt_commands == 2
    [message] = plain_server.messages
    assert message["Message-ID"] == message_id_for(row["idempotency_key"], SENDER)
    assert "notice_failed" not in await event_kinds(pool, invoice.invoice_id)


async def _has(pool: asyncpg.Pool, invoice_id: str, kind: str) -> bool:
    return kind in await event_kinds(pool, invoice_id)


async def _count(pool: asyncpg.Pool, invoice_id: str, kind: str, at_least: int) -> bool:
    return (await event_kinds(pool, invoice_id)).count(kind) >= at_least
