"""What the measurements drive: invoices, the event stream an invoice writes, and the shape of a history."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import date, datetime, timedelta, timezone
from typing import Any, TypeVar

from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHistory

from workflows import policy
from workflows.models import (
    DunningPolicy,
    Invoice,
    StageAction,
)

T = TypeVar("T")
Say = Callable[[str], None]
"""How a measurement reports what it is doing (a progress line)."""

AMOUNT_MINOR = 100_000  # EUR 1,000.00
CURRENCY = "EUR"
TERMS = {"late_fee_percent_per_month": "2", "fixed_late_fee_minor": 1_500}
LATE_FEE_MINOR = 3_500  # 2 % of 1,000.00 + 15.00
# every step of an invoice's lifecycle runs two activities: send_notice, then append_events
ACTIVITIES_PER_STEP = 2
LIFECYCLE_STAGES = (StageAction.REMINDER, StageAction.WARNING, StageAction.LATE_FEE)


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def _invoice(invoice_id: str, due_at: datetime, policy_fields: dict[str, Any], **fields: Any) -> Invoice:
    """An invoice of EUR 1,000.00 due on ``due_at``'s date at its time of day, read in the invoice's
    time zone (UTC unless ``fields`` give another), of customer ``BENCH-1`` unless ``fields`` name another."""
    return Invoice.model_validate(
        {
            "invoice_id": invoice_id,
            "customer_id": "BENCH-1",
            "contact": {"name": "Ana Pop", "email": "ana@client.example"},
            "amount_minor": AMOUNT_MINOR,
            "currency": CURRENCY,
            "issue_date": due_at.date(),
            "due_date": due_at.date(),
            "terms": TERMS,
            "policy": {"due_time": due_at.time().replace(tzinfo=None), **policy_fields},
            **fields,
        }
    )


def imported_invoice_line(invoice_id: str, customer_id: str, boundary: datetime) -> str:
    """A line of ``dunning invoice import``: an invoice on the default policy at any hour, already overdue,
    whose reminder the other system sent when it fell due; its warning is due at ``boundary``
    (which must lie less than the reminder-to-warning gap ahead, so that the reminder lies in the past)."""
    stages = DunningPolicy.default()
    due_at = boundary - stages.stage(StageAction.WARNING).offset
    invoice = _invoice(invoice_id, due_at, {"stages": _default_stages(), "sending_window": None}, customer_id=customer_id)
    sent_at = policy.stage_due_at(invoice, stages.stage(StageAction.REMINDER), timedelta(0))
    line = invoice.model_dump(mode="json") | {"last_notice": {"stage": "reminder", "sent_at": sent_at.isoformat()}}
    return json.dumps(line)


def lifecycle_invoice(invoice_id: str, customer_id: str, due_at: datetime, gap: timedelta) -> Invoice:
    """Reminder, warning and late fee at one, two and three ``gap`` after ``due_at``, at any hour."""
    stages = [{"action": action.value, "offset": gap * (n + 1)} for n, action in enumerate(LIFECYCLE_STAGES)]
    return _invoice(invoice_id, due_at, {"stages": stages, "sending_window": None}, customer_id=customer_id)


def stage_moments(invoice: Invoice) -> list[datetime]:
    """When each stage of the invoice's policy is due."""
    return [policy.stage_due_at(invoice, stage, timedelta(0)) for stage in invoice.policy.stages]


def open_invoice(invoice_id: str, today: date) -> Invoice:
    """An invoice on the full default policy (sending window, Romanian holidays), due in 14 days."""
    due_at = datetime(today.year, today.month, today.day, 9, tzinfo=timezone.utc) + timedelta(days=14)
    return _invoice(
        invoice_id, due_at, {"stages": _default_stages()}, issue_date=today, time_zone="Europe/Bucharest", country="RO"
    )


def boundary_invoice(invoice_id: str, boundary: datetime) -> Invoice:
    """The default policy at any hour, due a day before ``boundary``: its reminder is due at ``boundary``."""
    due_at = boundary - DunningPolicy.default().stage(StageAction.REMINDER).offset
    return _invoice(invoice_id, due_at, {"stages": _default_stages(), "sending_window": None})


def _default_stages() -> list[dict[str, Any]]:
    return [stage.model_dump(mode="json") for stage in DunningPolicy.default().stages]


# --- histories -------------------------------------------------------------------------------

SHAPE_EVENTS = {
    "timers": EventType.EVENT_TYPE_TIMER_STARTED,
    "activities": EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED,
    "markers": EventType.EVENT_TYPE_MARKER_RECORDED,  # local activities and patches
    "updates": EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED,
    "workflow_tasks": EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED,
    "search_attribute_upserts": EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES,
}


def history_shape(history: WorkflowHistory) -> dict[str, int]:
    """How many timers, activities, updates, ... a history holds, and its length."""
    counts = {name: 0 for name in SHAPE_EVENTS}
    for event in history.events:
        for name, event_type in SHAPE_EVENTS.items():
            if event.event_type == event_type:
                counts[name] += 1
    counts["events"] = len(history.events)
    return counts


# --- driving -----------------------------------------------------------------------------------


async def sleep_until(moment: datetime) -> None:
    delay = (moment - utc_now()).total_seconds()
    if delay > 0:
        await asyncio.sleep(delay)


async def poll(
    check: Callable[[], Awaitable[T]], done: Callable[[T], bool], timeout: float, interval: float = 0.2
) -> T:
    """Call ``check`` until ``done`` says its answer will do; TimeoutError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        answer = await check()
        if done(answer):
            return answer
        if time.monotonic() > deadline:
            raise TimeoutError(f"not done within {timeout:g} s (last answer: {answer!r:.200})")
        await asyncio.sleep(interval)


async def run_bounded(jobs: Sequence[Callable[[], Awaitable[T]]], concurrency: int) -> list[T | BaseException]:
    """Run the jobs with at most ``concurrency`` at a time; each job's result or exception, in order."""
    slots = asyncio.Semaphore(concurrency)

    async def one(job: Callable[[], Awaitable[T]]) -> T:
        async with slots:
            return await job()

    return await asyncio.gather(*(one(job) for job in jobs), return_exceptions=True)
