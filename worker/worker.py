"""The worker: the invoice workflow and its activities on one task queue."""

from __future__ import annotations

import asyncpg
from temporalio.client import Client
from temporalio.worker import Worker

from activities.calendar import public_holidays
from activities.ledger import LedgerActivities, apply_schema, create_pool
from activities.notices.smtp import NoticeActivities, SmtpConfig
from activities.service import ServiceActivities
from worker.client import connect
from worker.sandbox import workflow_runner
from worker.settings import Settings
from worker.setup import check_namespace
from workflows.invoice import InvoiceWorkflow


def smtp_config(settings: Settings) -> SmtpConfig:
    """SMTP settings as the notice activity wants them."""
    return SmtpConfig(
        host=settings.smtp_host,
        port=settings.smtp_port,
        username=settings.smtp_username,
        password=settings.smtp_password,
        starttls=settings.smtp_security == "starttls",
        implicit_tls=settings.smtp_security == "tls",
        sender=settings.mail_from,
        payee=settings.payee_name,
        payment_instructions=settings.payment_instructions,
    )


def build_worker(client: Client, pool: asyncpg.Pool, settings: Settings) -> Worker:
    """A worker for the invoice workflow with every activity bound to its resources."""
    ledger, notices, service = LedgerActivities(pool), NoticeActivities(pool, smtp_config(settings)), ServiceActivities(pool)
    return Worker(
        client,
        task_queue=settings.task_queue,
        workflows=[InvoiceWorkflow],
        workflow_runner=workflow_runner(),
        activities=[
            ledger.append_events,
            notices.send_notice,
            service.suspend_service,
            service.restore_service,
            public_holidays,
        ],
    )


async def run_worker(settings: Settings) -> None:
    """Connect, apply pending migrations, open the pool and run the worker until cancelled."""
    client = await connect(settings)
    await check_namespace(client, settings.temporal_namespace)
    database_url = settings.resolved_database_url()
    await apply_schema(database_url)
    pool = await create_pool(database_url)
    try:
        await build_worker(client, pool, settings).run()
    finally:
        await pool.close()
