"""The signed webhook channel and the per-customer channels file, against a real HTTP receiver on
loopback that checks signatures with its own HMAC code, and (for retries) a real Temporal server."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.calendar import public_holidays
from activities.ledger import LedgerActivities, read_events
from activities.notices.channels import Channel, ChannelsConfig, ChannelsFileError, load_channels
from activities.notices.smtp import message_id_for
from activities.service import ServiceActivities
from bench.recording import with_pydantic
from tests.harness import eventually, make_invoice, start_invoice
from tests.notice_servers import (
    SENDER,
    MailServer,
    WebhookReceiver,
    delivery_rows,
    notice_activities,
    notice_request,
    run_activity,
    smtp_config,
)
from worker.sandbox import workflow_runner
from workflows.invoice import InvoiceWorkflow
from workflows.models import DunningPolicy, NoticeDelivery, NoticeKind

EXAMPLE = Path(__file__).parent.parent / "examples" / "channels.toml"


def channels_for(receiver: WebhookReceiver, *channels: str, customer_id: str = "CUST-1") -> ChannelsConfig:
    return ChannelsConfig.model_validate(
        {
            "customers": {
                customer_id: {
                    "channels": list(channels),
                    "webhook_url": receiver.url,
                    "webhook_secret_env": "HOOK_SECRET",
                }
            }
        }
    )


@pytest.fixture
def mail_server():
    server = MailServer("none", None)
    server.controller.start()
    yield server
    server.controller.stop()


# --- delivery ----------------------------------------------------------------------------------


async def test_the_receiver_gets_one_signed_notice_even_after_a_lost_reply(pool, mail_server, webhook_receiver):
    notices = notice_activities(pool, smtp_config(mail_server, None, "none"), channels_for(webhook_receiver, "webhook"))
    notice = notice_request(NoticeKind.WARNING)

    result = await run_activity(notices.send_notice, notice)
    retry = await run_activity(notices.send_notice, notice)  # the first finished, Temporal never heard

    message_id = message_id_for(notice.idempotency_key, SENDER)
    assert result == retry == NoticeDelivery(message_id=message_id, delivered=["webhook"], failed={})
    assert webhook_receiver.rejected == [] and webhook_receiver.answered == [200]
    [post] = webhook_receiver.accepted
    body, headers = post["body"], post["headers"]
    assert body["message_id"] == message_id and body["step"] == notice.idempotency_key
    assert (body["kind"], body["invoice_id"], body["customer_id"]) == ("warning", notice.invoice_id, "CUST-1")
    assert (body["balance_minor"], body["currency"]) == (100_000, "EUR")
    assert notice.invoice_id in body["subject"] and body["text"]
    assert headers["webhook-id"] == headers["Idempotency-Key"] == notice.idempotency_key
    assert abs(int(headers["webhook-timestamp"]) - time.time()) < 60
    assert mail_server.received == []  # a webhook-only customer gets no e-mail
    row = (await delivery_rows(pool, notice.idempotency_key))["webhook"]
    assert (row["status"], row["attempts"], row["recipient"]) == ("sent", 1, webhook_receiver.url)


async def test_a_receiver_rejects_a_signature_made_with_another_secret(pool, mail_server, webhook_receiver):
    notices = notice_activities(
        pool,
        smtp_config(mail_server, None, "none"),
        channels_for(webhook_receiver, "webhook"),
        webhook_secret={"HOOK_SECRET": "not-the-receivers-secret"}.get,
    )

    with pytest.raises(ApplicationError) as failure:
        await run_activity(notices.send_notice, notice_request())

    assert webhook_receiver.rejected == ["No matching signature found"] and webhook_receiver.accepted == []
    assert failure.value.non_retryable and "401" in str(failure.value)


async def test_a_400_is_permanent_and_never_posted_again(pool, mail_server, webhook_receiver):
    webhook_receiver.statuses = [400]
    notices = notice_activities(pool, smtp_config(mail_server, None, "none"), channels_for(webhook_receiver, "webhook"))
    notice = notice_request()

    for _ in range(2):
        with pytest.raises(ApplicationError) as failure:
            await run_activity(notices.send_notice, notice)
        assert failure.value.non_retryable and failure.value.type == "PermanentDeliveryFailure"
        assert "400" in str(failure.value)

    assert webhook_receiver.answered == [400]
    row = (await delivery_rows(pool, notice.idempotency_key))["webhook"]
    assert (row["status"], row["attempts"]) == ("failed", 1)


@pytest.mark.parametrize("status", [503, 429, 408])
async def test_a_503_429_or_408_is_transient(pool, mail_server, webhook_receiver, status):
    webhook_receiver.statuses = [status]
    notices = notice_activities(pool, smtp_config(mail_server, None, "none"), channels_for(webhook_receiver, "webhook"))
    notice = notice_request()

    with pytest.raises(ApplicationError) as failure:
        await run_activity(notices.send_notice, notice)
    assert not failure.value.non_retryable and str(status) in str(failure.value)

    assert (await run_activity(notices.send_notice, notice)).delivered == ["webhook"]
    assert webhook_receiver.answered == [status, 200] and len(webhook_receiver.accepted) == 1


async def test_one_channel_refused_for_good_does_not_fail_the_notice(pool, mail_server, webhook_receiver):
    mail_server.rcpt_replies = ["550 5.1.1 mailbox unavailable"]
    notices = notice_activities(
        pool, smtp_config(mail_server, None, "none"), channels_for(webhook_receiver, "email", "webhook")
    )
    notice = notice_request()

    result = await run_activity(notices.send_notice, notice)

    assert result.delivered == ["webhook"] and list(result.failed) == ["email"]
    assert "550" in result.failed["email"]
    assert len(webhook_receiver.accepted) == 1 and mail_server.received == []


async def test_an_unreachable_receiver_is_transient(pool, mail_server, webhook_receiver):
    unreachable = WebhookReceiver(secret="hook-secret", port=1)  # nothing listens on port 1
    notices = notice_activities(pool, smtp_config(mail_server, None, "none"), channels_for(unreachable, "webhook"))

    with pytest.raises(ApplicationError) as failure:
        await run_activity(notices.send_notice, notice_request())

    assert not failure.value.non_retryable and "unreachable" in str(failure.value)


async def test_a_503_is_retried_by_temporal_and_email_is_not_sent_again(
    time_skipping_env: WorkflowEnvironment, pool, mail_server, webhook_receiver
):
    webhook_receiver.statuses = [503]
    client = with_pydantic(time_skipping_env.client)
    notices = notice_activities(
        pool, smtp_config(mail_server, None, "none"), channels_for(webhook_receiver, "email", "webhook")
    )
    ledger, service = LedgerActivities(pool), ServiceActivities(pool)
    today = (await time_skipping_env.get_current_time()).date()
    invoice = make_invoice(today, policy=DunningPolicy.default().model_copy(update={"sending_window": None}))
    queue = f"webhook-{uuid.uuid4().hex[:8]}"
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
        handle = await start_invoice(client, queue, invoice)
        try:
            await eventually(lambda: _sent(pool, invoice.invoice_id), timeout=20)
        finally:
            await handle.terminate("test over")

    assert webhook_receiver.answered == [503, 200] and len(webhook_receiver.accepted) == 1
    assert len(mail_server.received) == 1  # e-mail went out on the first attempt only
    rows = await pool.fetch("SELECT idempotency_key FROM notice_deliveries WHERE invoice_id = $1", invoice.invoice_id)
    [key] = {row["idempotency_key"] for row in rows}
    rows = await delivery_rows(pool, key)
    assert {c: (r["status"], r["attempts"]) for c, r in rows.items()} == {"email": ("sent", 1), "webhook": ("sent", 2)}


async def _sent(pool, invoice_id: str) -> bool:
    return any(e.kind.value == "notice_sent" for e in await read_events(pool, invoice_id))


# --- the channels file ---------------------------------------------------------------------------


def test_the_example_channels_file_loads():
    config = load_channels(EXAMPLE)
    assert config.for_customer("NOT-LISTED").channels == [Channel.EMAIL]
    webhook_customers = [c for c in config.customers.values() if Channel.WEBHOOK in c.channels]
    assert webhook_customers and all(c.webhook_secret_env for c in webhook_customers)


def test_no_file_means_email_for_everyone():
    assert load_channels(None).for_customer("CUST-1").channels == [Channel.EMAIL]


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ('[customers."C-1"\nchannels = ["email"]', "not valid TOML"),
        ('[customers."C-1"]\nchannels = ["fax"]', "customers.C-1.channels.0"),
        ('[customers."C-1"]\nchannels = []', "at least 1"),
        ('[customers."C-1"]\nchannels = ["email", "email"]', "only once"),
        ('[customers."C-1"]\nchannels = ["webhook"]\nwebhook_secret_env = "S"', "webhook_url and webhook_secret_env"),
        ('[customers."C-1"]\nchannels = ["email"]\nwebhook_url = "https://crm.example/h"\nwebhook_secret_env = "S"',
         "only with it"),
        ('[customers."C-1"]\nchannels = ["webhook"]\nwebhook_url = "http://crm.example/h"\nwebhook_secret_env = "S"',
         "must use https"),
        ('[customers."C-1"]\nchannels = ["webhook"]\nwebhook_url = "https://crm.example/h"\nwebhook_secret = "hunter2"',
         "never put the webhook secret in this file"),
        ('[customers."C 1"]\nchannels = ["email"]', "customers.C 1"),
        ('[customer."C-1"]\nchannels = ["email"]', "Extra inputs"),
    ],
)
def test_a_bad_channels_file_is_a_clear_error(tmp_path: Path, text: str, complaint: str):
    path = tmp_path / "channels.toml"
    path.write_text(text)
    with pytest.raises(ChannelsFileError) as error:
        load_channels(path)
    assert str(path) in str(error.value) and complaint in str(error.value)


def test_a_missing_channels_file_is_a_clear_error(tmp_path: Path):
    with pytest.raises(ChannelsFileError, match="cannot read the channels file .*nowhere.toml"):
        load_channels(tmp_path / "nowhere.toml")


def test_http_is_allowed_only_to_loopback():
    for url in ("http://127.0.0.1:9000/h", "http://localhost/h", "http://[::1]:80/h"):
        ChannelsConfig.model_validate(
            {"customers": {"C-1": {"channels": ["webhook"], "webhook_url": url, "webhook_secret_env": "S"}}}
        )


async def test_the_worker_refuses_to_start_without_a_named_secret(pool, mail_server, webhook_receiver):
    with pytest.raises(ValueError, match="webhook secrets not set: HOOK_SECRET"):
        notice_activities(
            pool,
            smtp_config(mail_server, None, "none"),
            channels_for(webhook_receiver, "webhook"),
            webhook_secret={}.get,
        )
