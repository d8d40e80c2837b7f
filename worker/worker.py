"""The worker: the invoice and customer workflows and their activities on one task queue, plus the projector."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor
from datetime import timedelta

import asyncpg
from pydantic import SecretStr
from temporalio.client import Client
from temporalio.worker import Worker

from activities.calendar import public_holidays
from activities.customer import CustomerActivities
from activities.customer_payments import deliver_allocation, invoice_balances
from activities.equipment.activities import EquipmentActivities
from activities.equipment.registry import Registry
from activities.interest_rates import InterestRateActivities
from activities.ledger import LedgerActivities, apply_schema, create_pool
from activities.notices.channels import load_channels
from activities.notices.delivery import NoticeActivities
from activities.notices.render import Payee
from activities.notices.rendering_pool import rendering_pool
from activities.notices.smtp import SmtpConfig
from activities.projections import Projector
from activities.service import ServiceActivities
from client.namespace import check_namespace
from client.settings import Settings
from client.temporal import connect
from worker.sandbox import workflow_runner
from workflows.customer import CustomerWorkflow
from workflows.invoice import InvoiceWorkflow

WORKFLOWS = [InvoiceWorkflow, CustomerWorkflow]
PROJECTOR_CONNECTIONS = 2  # the projector listens on one connection and projects on another


def smtp_config(settings: Settings) -> SmtpConfig:
    """SMTP settings as the e-mail channel wants them."""
    return SmtpConfig(
        host=settings.smtp_host,
        port=settings.smtp_port,
        username=settings.smtp_username,
        password=None if settings.smtp_password is None else SecretStr(settings.smtp_password),
        security=settings.smtp_security,
        ca_file=settings.smtp_ca_file,
    )


def payee(settings: Settings) -> Payee:
    """Who gets paid and how, as every notice states it."""
    return Payee(
        name=settings.payee_name,
        payment_instructions=settings.payment_instructions,
        iban=settings.payee_iban,
        payment_link=settings.payment_link,
    )


def notice_activities(pool: asyncpg.Pool, settings: Settings, renderer: Executor | None = None) -> NoticeActivities:
    """Notices on each customer's channels, rendered on ``renderer``; fails now if a channels file or webhook
    secret is wrong."""
    return NoticeActivities(
        pool,
        smtp_config(settings),
        sender=settings.mail_from,
        payee=payee(settings),
        channels=load_channels(settings.channels_file),
        agency_email=settings.agency_email,
        renderer=renderer,
    )


def equipment_activities(pool: asyncpg.Pool, settings: Settings) -> EquipmentActivities:
    """Equipment adapters behind the registry (an empty registry refuses every id)."""
    registry = Registry.load(settings.equipment_file) if settings.equipment_file else Registry()
    return EquipmentActivities(
        registry, pool, dry_run=settings.equipment_dry_run, global_kill_switch=settings.equipment_kill_switch
    )


def build_worker(client: Client, pool: asyncpg.Pool, settings: Settings, renderer: Executor | None = None) -> Worker:
    """A worker for the invoice and customer workflows with every activity bound to its resources."""
    ledger, service = LedgerActivities(pool), ServiceActivities(pool)
    notices, equipment = notice_activities(pool, settings, renderer), equipment_activities(pool, settings)
    customers = CustomerActivities(timedelta(seconds=settings.notice_digest_gathering_s))
    return Worker(
        client,
        task_queue=settings.task_queue,
        workflows=WORKFLOWS,
        workflow_runner=workflow_runner(),
        max_concurrent_activities=settings.worker_activity_slots,
        max_concurrent_workflow_tasks=settings.worker_workflow_task_slots,
        max_cached_workflows=settings.worker_cached_workflows,
        graceful_shutdown_timeout=timedelta(seconds=settings.worker_shutdown_grace_s),
        activities=[
            ledger.append_events,
            notices.send_notice,
            notices.send_agency_package,
            notices.send_digest,
            service.suspend_service,
            service.restore_service,
            equipment.suspend_equipment,
            equipment.restore_equipment,
            customers.hold_at_customer,
            customers.release_at_customer,
            customers.notice_to_customer,
            customers.notice_sent_by_customer,
            invoice_balances,
            deliver_allocation,
            public_holidays,
            InterestRateActivities.load(settings.interest_rates_file).interest_rates,
        ],
    )


async def run_worker(settings: Settings, on_ready: Callable[[], None] | None = None) -> None:
    """Connect, apply pending migrations (as the schema's owner), open the pool (as the service's role) and
    run the worker and the projector until cancelled; ``on_ready`` is called once the worker polls."""
    client = await connect(settings)
    await check_namespace(client, settings.temporal_namespace)
    await apply_schema(settings.resolved_owner_database_url())
    pool = await create_pool(settings.resolved_database_url(), max_size=settings.worker_activity_slots + PROJECTOR_CONNECTIONS)
    stop = asyncio.Event()
    renderer = rendering_pool(settings.worker_render_processes)
    try:
        worker = build_worker(client, pool, settings, renderer)
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(Projector().run(pool, stop), name="projector")
            if on_ready:
                asyncio.get_running_loop().call_soon(on_ready)  # connected, migrated and built: it polls from its first step
            try:
                await worker.run()
            finally:
                stop.set()
    finally:
        renderer.shutdown(wait=False, cancel_futures=True)
        await pool.close()
