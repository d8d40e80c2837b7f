"""A customer digest end to end: the dev server, the real worker and activities, Postgres and an SMTP server.

Two invoices of one customer, due the same moment, reach their stages two seconds later inside a sending window
open all week; the customer gathers for two seconds and sends one message with the statement attached.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, time, timedelta

import asyncpg
import pytest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from activities.ledger import create_pool, read_events
from bench.recording import with_pydantic
from client.settings import Settings
from tests.conftest import SmtpServer
from tests.harness import eventually, make_invoice, start_invoice
from worker.worker import build_worker

ALL_WEEK = {"weekdays": list(range(7)), "opens": "00:00:00", "closes": "23:59:59", "skip_public_holidays": False}
DIGEST_SUBJECT = "Payment overdue: several invoices"


@pytest.fixture
def client(dev_env: WorkflowEnvironment) -> Client:
    return with_pydantic(dev_env.client)


@pytest.fixture
async def pool(db_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(db_url)
    yield pool
    await pool.close()


async def test_two_invoices_reach_the_client_in_one_digest_with_the_statement(client, pool, db_url, smtp_server: SmtpServer):
    settings = Settings(
        task_queue=f"digest-{uuid.uuid4().hex[:8]}",
        smtp_host="127.0.0.1",
        smtp_port=smtp_server.port,
        database_url=db_url,
        notice_digest_gathering_s=2,
    )
    due = (datetime.now(UTC) + timedelta(seconds=3)).replace(microsecond=0)
    if due.time() > time(23, 59, 40):
        pytest.skip("too close to midnight UTC for a window that closes at 23:59:59")
    customer_id = f"CUST-{uuid.uuid4().hex[:8]}"
    invoices = [
        make_invoice(
            due.date(),
            customer_id=customer_id,
            due_date=due.date(),
            policy={"stages": [{"action": action, "offset": "PT2S"}], "due_time": due.time().isoformat(), "sending_window": ALL_WEEK},
        )
        for action in ("warning", "reminder")
    ]
    async with build_worker(client, pool, settings):
        for invoice in invoices:
            await start_invoice(client, settings.task_queue, invoice)

        def digests() -> list:
            return [m for m in smtp_server.messages if m["Subject"] == DIGEST_SUBJECT]

        await eventually(digests, timeout=30)

        async def both_recorded() -> bool:
            sent = [e for i in invoices for e in await read_events(pool, i.invoice_id) if e.kind.value == "notice_sent"]
            return len([e for e in sent if e.data.get("digest")]) == 2

        await eventually(both_recorded, timeout=15)
    [message] = digests()
    text = message.get_body(("plain",)).get_content()
    assert all(invoice.invoice_id in text for invoice in invoices)
    [attachment] = list(message.iter_attachments())
    assert attachment.get_content_type() == "application/pdf" and attachment.get_filename().startswith(f"statement-{customer_id}-")
    assert len(smtp_server.messages) == 3  # besides it, the two invoices: no stage notice went out on its own
    keys = {e.data["digest"] for i in invoices for e in await read_events(pool, i.invoice_id) if e.data.get("digest")}
    assert len(keys) == 1 and keys.pop().startswith(f"customer-{customer_id}/")
