"""End to end with the real activities: the dev server, a fresh Postgres database and a real SMTP server.

Invoices are started and paid through the CLI. Their policy is a few seconds long so that real
time drives them: reminder at +2 s, warning at +8 s, late fee at +14 s after a due moment 3 s away
(the gaps leave room for a worker to stop between stages on a loaded machine).
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import pytest
from temporalio.client import Client, WorkflowHandle
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment

from activities.ledger import create_pool, read_events
from activities.notices.smtp import message_id_for
from bench.recording import with_pydantic
from client.settings import Settings
from tests.cli_helpers import cli_env, dunning, example_invoice, succeeded
from tests.conftest import SmtpServer
from tests.harness import eventually
from worker.worker import build_worker, notice_activities
from workflows import policy
from workflows.invoice import InvoiceWorkflow
from workflows.models import (
    DomainEvent,
    Invoice,
    InvoiceOutcome,
    InvoiceState,
    NoticeDelivery,
    NoticeKind,
    NoticeRequest,
    StageAction,
)

SHORT_STAGES = [
    {"action": "reminder", "offset": "PT2S"},
    {"action": "warning", "offset": "PT8S"},
    {"action": "late_fee", "offset": "PT14S"},
]
AMOUNT = 1_250_000  # examples/invoice.json: 12,500.00 RON
LATE_FEE = 18_750 + 15_000  # 1.5 % of the amount, plus the fixed fee
ESCALATION_STORY = [  # the events up to the late fee, as ``story()`` tells them
    "invoice_issued",
    "notice_sent invoice_issued",
    "stage_reached reminder",
    "notice_sent reminder",
    "stage_reached warning",
    "notice_sent warning",
    "stage_reached late_fee",
    f"late_fee_charged {LATE_FEE}",
    "notice_sent late_fee",
]


# --- fixtures and helpers ------------------------------------------------------------------


@pytest.fixture
def client(dev_env: WorkflowEnvironment) -> Client:
    return with_pydantic(dev_env.client)


@pytest.fixture
async def pool(db_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(db_url)
    yield pool
    await pool.close()


@pytest.fixture
def settings(db_url: str, smtp_server: SmtpServer) -> Settings:
    return Settings(
        task_queue=f"it-{uuid.uuid4().hex[:8]}", smtp_host="127.0.0.1", smtp_port=smtp_server.port, database_url=db_url
    )


@pytest.fixture
def env(dev_env: WorkflowEnvironment, settings: Settings) -> dict[str, str]:
    """The CLI's environment: the dev server and the test's task queue."""
    return cli_env(dev_env, settings.task_queue)


def short_invoice(tmp_path: Path, lead: timedelta = timedelta(seconds=3), **changes: Any) -> tuple[Path, Invoice]:
    """The example invoice, due ``lead`` from now, with the short policy and no early-payment discount.

    The due date and the due time are the local date and time of one moment in the invoice's
    time zone, so the due moment really is ``lead`` away (also across midnight).
    """
    time_zone = "Europe/Bucharest"
    due = (datetime.now(ZoneInfo(time_zone)) + lead + timedelta(seconds=1)).replace(microsecond=0)
    path, data = example_invoice(
        tmp_path,
        time_zone=time_zone,
        issue_date=due.date().isoformat(),
        due_date=due.date().isoformat(),
        terms={"late_fee_percent_per_month": "1.5", "fixed_late_fee_minor": 15_000, "remote_disconnect_authorized": False},
        policy={"stages": SHORT_STAGES, "due_time": due.time().isoformat(), "sending_window": None},
        **changes,
    )
    invoice = Invoice.model_validate(data)
    assert abs(policy.due_moment(invoice) - (datetime.now(ZoneInfo("UTC")) + lead)) < timedelta(seconds=2)
    return path, invoice


def handle_of(client: Client, invoice: Invoice) -> WorkflowHandle[InvoiceWorkflow, InvoiceOutcome]:
    return client.get_workflow_handle_for(InvoiceWorkflow.run, invoice.workflow_id)


async def events_of(pool: asyncpg.Pool, invoice: Invoice) -> list[DomainEvent]:
    return await read_events(pool, invoice.invoice_id)


async def notice_recorded(pool: asyncpg.Pool, invoice: Invoice, kind: NoticeKind, count: int = 1) -> bool:
    """True once ``count`` ``notice_sent`` events of ``kind`` are in Postgres: those steps are over."""
    events = await events_of(pool, invoice)
    return sum(e.kind == "notice_sent" and e.data["kind"] == kind.value for e in events) >= count


def steps(messages: list[EmailMessage], invoice: Invoice) -> list[str]:
    """The X-Dunning-Step header of each message about ``invoice``, in arrival order."""
    prefix = f"{invoice.workflow_id}/"
    return [m["X-Dunning-Step"] for m in messages if m["X-Dunning-Step"].startswith(prefix)]


def step_keys(invoice: Invoice, *kinds: str) -> list[str]:
    return [f"{invoice.workflow_id}/{n:04d}-{kind}" for n, kind in enumerate(kinds, start=1)]


def assert_gap_free(events: list[DomainEvent], invoice: Invoice) -> None:
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    assert {e.invoice_id for e in events} == {invoice.invoice_id}


def story(events: list[DomainEvent]) -> list[str]:
    """Events in a compact, comparable form."""
    lines = []
    for event in events:
        detail = {
            "notice_sent": lambda d: d["kind"],
            "stage_reached": lambda d: d["stage"],
            "payment_recorded": lambda d: f"{d['payment_id']} {d['amount_minor']}",
            "late_fee_charged": lambda d: str(d["amount_minor"]),
            "invoice_closed": lambda d: d["state"],
        }.get(event.kind.value)
        lines.append(f"{event.kind.value} {detail(event.data)}" if detail else event.kind.value)
    return lines


async def deliveries(pool: asyncpg.Pool, invoice: Invoice) -> list[asyncpg.Record]:
    return await pool.fetch(
        "SELECT * FROM notice_deliveries WHERE invoice_id = $1 ORDER BY idempotency_key", invoice.invoice_id
    )


# --- the whole lifecycle -------------------------------------------------------------------


async def test_invoice_lifecycle_end_to_end(client, pool, settings, env, smtp_server, tmp_path):
    path, invoice = short_invoice(tmp_path)
    async with build_worker(client, pool, settings):
        succeeded(await dunning(env, "invoice", "start", str(path)))
        handle = handle_of(client, invoice)
        # a flooded run's history takes longer than the default 10 s to fetch and replay on a busy machine
        assert (await handle.describe()).raw_description.execution_config.default_workflow_task_timeout.seconds == 30
        await eventually(lambda: notice_recorded(pool, invoice, NoticeKind.LATE_FEE), timeout=30)
        current = await handle.query(InvoiceWorkflow.status)
        assert (current.state, current.fees_minor) == (InvoiceState.LATE_FEE, LATE_FEE)

        # part through the update, the rest through the signal
        out = succeeded(await dunning(env, "invoice", "pay", invoice.invoice_id, "--amount", "5000", "--payment-id", "BT-1"))
        rest = AMOUNT + LATE_FEE - 500_000
        assert f"balance {rest // 100}.{rest % 100:02d} RON" in out
        # (the receipt goes out after the update returns; wait for it so that the story is deterministic)
        await eventually(lambda: notice_recorded(pool, invoice, NoticeKind.RECEIPT), timeout=30)
        succeeded(
            await dunning(env, "invoice", "pay", invoice.invoice_id, "--amount", f"{rest / 100:.2f}", "--payment-id", "BT-2", "--signal")
        )
        outcome = await asyncio.wait_for(handle.result(), timeout=30)
        final = await handle.query(InvoiceWorkflow.status)

    assert outcome == InvoiceOutcome(
        invoice_id=invoice.invoice_id,
        state=InvoiceState.PAID,
        paid_minor=AMOUNT + LATE_FEE,
        fees_minor=LATE_FEE,
        written_off_minor=0,
        overpaid_minor=0,
        credited_minor=0,
        balance_minor=0,
        last_sequence=await pool.fetchval("SELECT max(sequence) FROM invoice_events WHERE invoice_id = $1", invoice.invoice_id),
    )

    # one e-mail per notice step, each with its own stable Message-ID
    expected_steps = step_keys(invoice, "invoice_issued", "reminder", "warning", "late_fee", "receipt", "receipt")
    messages = [m for m in smtp_server.messages if m["X-Dunning-Step"].startswith(invoice.workflow_id + "/")]
    assert steps(messages, invoice) == expected_steps
    assert [m["Message-ID"] for m in messages] == [message_id_for(key, settings.mail_from) for key in expected_steps]
    assert len({m["Message-ID"] for m in messages}) == len(messages)
    assert {m["To"].addresses[0].addr_spec for m in messages} == {str(invoice.contact.email)}
    assert all(invoice.invoice_id in m["Subject"] for m in messages)

    # the event log in Postgres is complete, gap-free and tells the same story
    events = await events_of(pool, invoice)
    assert_gap_free(events, invoice)
    assert story(events) == [
        *ESCALATION_STORY,
        "payment_recorded BT-1 500000",
        "notice_sent receipt",
        f"payment_recorded BT-2 {rest}",
        "invoice_closed paid",
        "notice_sent receipt",
    ]
    sent = [e.data["step"] for e in events if e.kind == "notice_sent"]
    assert [f"{invoice.workflow_id}/{step}" for step in sent] == expected_steps
    assert Invoice.model_validate(events[0].data["invoice"]) == invoice
    assert events[-2].data["paid_minor"] == outcome.paid_minor
    # ... and the story the status query tells
    assert [a.what for a in final.actions] == [
        "Invoice issued for 12500.00 RON",
        "Stage reached: reminder",
        "Stage reached: warning",
        "Stage reached: late fee",
        "Late fee 1 charged: 337.50 RON",
        "Payment BT-1: 5000.00 RON",
        f"Payment BT-2: {rest // 100}.{rest % 100:02d} RON",
        "Invoice closed: paid",
    ]
    # stages happened in order, no earlier than they were due
    reached = {e.data["stage"]: e.occurred_at for e in events if e.kind == "stage_reached"}
    for action in (StageAction.REMINDER, StageAction.WARNING, StageAction.LATE_FEE):
        assert reached[action.value] >= policy.stage_due_at(invoice, invoice.policy.stage(action), timedelta(0))

    rows = await deliveries(pool, invoice)
    assert [(r["idempotency_key"], r["status"], r["attempts"]) for r in rows] == [(k, "sent", 1) for k in expected_steps]


# --- a worker restart mid-lifecycle ---------------------------------------------------------


async def test_worker_restart_loses_nothing_and_sends_nothing_twice(client, pool, settings, env, smtp_server, tmp_path):
    path, invoice = short_invoice(tmp_path)
    handle = handle_of(client, invoice)

    # first worker: issue and remind, then stop (leaving the context shuts it down)
    async with build_worker(client, pool, settings):
        succeeded(await dunning(env, "invoice", "start", str(path)))
        await eventually(lambda: notice_recorded(pool, invoice, NoticeKind.REMINDER), timeout=30)
    assert steps(smtp_server.messages, invoice) == step_keys(invoice, "invoice_issued", "reminder")

    # while no worker runs, the warning falls due and nothing happens
    warning_at = policy.stage_due_at(invoice, invoice.policy.stage(StageAction.WARNING), timedelta(0))
    await asyncio.sleep(max(0.0, (warning_at - datetime.now(ZoneInfo("UTC"))).total_seconds()) + 1)
    assert steps(smtp_server.messages, invoice) == step_keys(invoice, "invoice_issued", "reminder")
    assert (await handle.describe()).status.name == "RUNNING"

    # second worker, run as a task and cancelled: catches up on the warning, then stops
    second = asyncio.create_task(build_worker(client, pool, settings).run())
    try:
        await eventually(lambda: notice_recorded(pool, invoice, NoticeKind.WARNING), timeout=30)
    finally:
        second.cancel()
        with pytest.raises(asyncio.CancelledError):
            await second

    # the late fee falls due while no worker runs; a third worker charges it once, then the client pays
    late_fee_at = policy.stage_due_at(invoice, invoice.policy.stage(StageAction.LATE_FEE), timedelta(0))
    await asyncio.sleep(max(0.0, (late_fee_at - datetime.now(ZoneInfo("UTC"))).total_seconds()) + 1)
    async with build_worker(client, pool, settings):
        await eventually(lambda: notice_recorded(pool, invoice, NoticeKind.LATE_FEE), timeout=30)
        succeeded(await dunning(env, "invoice", "pay", invoice.invoice_id, "--amount", "12837.50", "--payment-id", "BT-1"))
        outcome = await asyncio.wait_for(handle.result(), timeout=30)

    assert (outcome.state, outcome.paid_minor, outcome.fees_minor) == (InvoiceState.PAID, AMOUNT + LATE_FEE, LATE_FEE)
    expected_steps = step_keys(invoice, "invoice_issued", "reminder", "warning", "late_fee", "receipt")
    per_step = Counter(steps(smtp_server.messages, invoice))
    assert per_step == Counter(expected_steps), per_step  # every step once, none twice
    events = await events_of(pool, invoice)
    assert_gap_free(events, invoice)
    assert story(events) == [
        *ESCALATION_STORY,
        "payment_recorded BT-1 1283750",
        "invoice_closed paid",
        "notice_sent receipt",
    ]
    rows = await deliveries(pool, invoice)
    assert [(r["idempotency_key"], r["status"]) for r in rows] == [(k, "sent") for k in expected_steps]


# --- deliveries are recorded, and a re-run sends nothing -------------------------------------


async def test_deliveries_are_recorded_and_a_rerun_sends_nothing(client, pool, settings, env, smtp_server, tmp_path):
    path, data = example_invoice(tmp_path, terms={"late_fee_percent_per_month": "1.5"})
    invoice = Invoice.model_validate(data)
    async with build_worker(client, pool, settings):
        succeeded(await dunning(env, "invoice", "start", str(path)))
        await eventually(lambda: notice_recorded(pool, invoice, NoticeKind.INVOICE_ISSUED), timeout=30)
        succeeded(await dunning(env, "invoice", "pay", invoice.invoice_id, "--amount", "12500.00", "--payment-id", "BT-1"))
        assert (await asyncio.wait_for(handle_of(client, invoice).result(), timeout=30)).state == InvoiceState.PAID

    keys = step_keys(invoice, "invoice_issued", "receipt")
    rows = await deliveries(pool, invoice)
    assert [r["idempotency_key"] for r in rows] == keys
    for row, message in zip(rows, [m for m in smtp_server.messages if m["X-Dunning-Step"] in keys], strict=True):
        assert (row["status"], row["attempts"], row["error"]) == ("sent", 1, None)
        assert row["sent_at"] is not None and row["recipient"] == str(invoice.contact.email)
        assert row["message_id"] == message["Message-ID"] == message_id_for(row["idempotency_key"], settings.mail_from)
    received = len(smtp_server.messages)

    # the same request as the workflow's first notice, run again directly: nothing is sent
    notices = notice_activities(pool, settings)
    activity_env = ActivityEnvironment()
    first = notice_request(invoice, keys[0], NoticeKind.INVOICE_ISSUED)
    assert (await activity_env.run(notices.send_notice, first)).message_id == rows[0]["message_id"]
    assert len(smtp_server.messages) == received
    row = await pool.fetchrow("SELECT status, attempts FROM notice_deliveries WHERE idempotency_key = $1", keys[0])
    assert (row["status"], row["attempts"]) == ("sent", 1)  # attempts counts sends tried: none this time

    # a new step is sent once; running it again sends nothing
    fresh = notice_request(invoice, f"{invoice.workflow_id}/9999-invoice_issued", NoticeKind.INVOICE_ISSUED)
    message_id = (await activity_env.run(notices.send_notice, fresh)).message_id
    assert len(smtp_server.messages) == received + 1
    assert smtp_server.messages[-1]["Message-ID"] == message_id
    assert await activity_env.run(notices.send_notice, fresh) == NoticeDelivery(message_id=message_id, delivered=["email"])
    assert len(smtp_server.messages) == received + 1
    row = await pool.fetchrow("SELECT status, attempts FROM notice_deliveries WHERE idempotency_key = $1", fresh.idempotency_key)
    assert (row["status"], row["attempts"]) == ("sent", 1)


def notice_request(invoice: Invoice, key: str, kind: NoticeKind) -> NoticeRequest:
    return NoticeRequest(
        idempotency_key=key,
        kind=kind,
        invoice_id=invoice.invoice_id,
        customer_id=invoice.customer_id,
        to_name=invoice.contact.name,
        to_email=invoice.contact.email,
        language=invoice.language,
        time_zone=invoice.time_zone,
        currency=invoice.currency,
        invoice_amount_minor=invoice.amount_minor,
        fees=[],
        paid_minor=0,
        deducted_minor=0,
        balance_minor=invoice.amount_minor,
        issue_date=invoice.issue_date,
        due_date=invoice.due_date,
    )
