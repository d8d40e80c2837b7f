"""What ``dunning dev`` prints while it runs: one readable line per event the service appends to the
event log (stage reached, notice sent, late fee, equipment cut, payment applied, ...), as it is committed."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from datetime import timezone
from typing import Any

import asyncpg

from activities.projections import NOTIFY_CHANNEL
from workflows.models import EventKind, format_money

log = logging.getLogger(__name__)
POLL_S = 5.0  # the safety net for a notification lost while the connection was busy


def describe(kind: str, data: dict[str, Any], currency: str | None) -> str | None:
    """One event as a short sentence (None for events a watching person does not need)."""

    def money(minor: int) -> str:
        return format_money(minor, currency) if currency else str(minor)

    match kind:
        case EventKind.INVOICE_ISSUED:
            invoice = data["invoice"]
            return f"issued to {invoice['customer_id']}: {format_money(invoice['amount_minor'], invoice['currency'])}"
        case EventKind.STAGE_REACHED:
            overdue = f" ({data['days_overdue']} days overdue)" if data["days_overdue"] else ""
            return f"stage {data['stage'].replace('_', ' ')} reached{overdue}"
        case EventKind.NOTICE_SENT:
            return f"notice sent: {data['kind'].replace('_', ' ')} to {data['to']}"
        case EventKind.NOTICE_FAILED:
            return f"notice failed: {data['kind'].replace('_', ' ')}: {data['error']}"
        case EventKind.LATE_FEE_CHARGED:
            return f"late fee {data['number']} charged: {money(data['amount_minor'])}"
        case EventKind.PAYMENT_RECORDED:
            return f"payment {data['payment_id']} of {money(data['amount_minor'])} applied: balance {money(data['balance_minor'])}"
        case EventKind.PAYMENT_REJECTED:
            return f"payment rejected: {data['reason']}"
        case EventKind.SERVICE_SUSPENDED:
            return "service suspended: support and new orders blocked"
        case EventKind.SERVICE_RESTORED:
            return "service restored"
        case EventKind.EQUIPMENT_SUSPENDED:
            return f"equipment {data['equipment_id']} cut ({data['state']})"
        case EventKind.EQUIPMENT_RESTORED:
            return f"equipment {data['equipment_id']} restored ({data['state']})"
        case EventKind.SUSPEND_FAILED | EventKind.RESTORE_FAILED:
            return f"{kind.replace('_', ' ')}: {data['equipment_id']}: {data['error']}"
        case EventKind.INVOICE_CLOSED:
            return f"closed: {data['state'].replace('_', ' ')}"
        case EventKind.DISPUTE_OPENED | EventKind.DISPUTE_RESOLVED | EventKind.PAYMENT_PLAN_AGREED:
            return kind.replace("_", " ")
        case EventKind.AGENCY_HANDOVER | EventKind.LEGAL_REVIEW_OPENED | EventKind.INVOICE_FACTORED:
            return kind.replace("_", " ")
        case EventKind.LEGAL_DECISION:
            return f"legal decision: {data['decision']}"
    return None


async def narrate(database_url: str, say: Callable[[str], None], stop: asyncio.Event) -> None:
    """Print a line for each event committed from now on, until ``stop`` is set; a lost connection is
    logged and reopened (the story goes on from where it was), never the end of the stack."""
    last = None
    while not stop.is_set():
        try:
            last = await _narrate(database_url, say, stop, last)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as err:
            log.warning("the narration lost the database (%s); retrying in %.0f s", err, POLL_S)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=POLL_S)


async def _narrate(database_url: str, say: Callable[[str], None], stop: asyncio.Event, last: int | None) -> int | None:
    conn = await asyncpg.connect(database_url)
    wake = asyncio.Event()
    try:
        await conn.add_listener(NOTIFY_CHANNEL, lambda *_: wake.set())
        if last is None:
            last = await conn.fetchval("SELECT coalesce(max(position), 0) FROM invoice_events")
        currencies: dict[str, str | None] = {}
        while not stop.is_set():
            wake.clear()
            rows = await conn.fetch(
                "SELECT position, invoice_id, kind, occurred_at, data FROM invoice_events"
                " WHERE position > $1 ORDER BY position",
                last,
            )
            for row in rows:
                last = row["position"]
                data = _json(row["data"])
                if row["kind"] == EventKind.INVOICE_ISSUED:
                    currencies[row["invoice_id"]] = data["invoice"]["currency"]
                elif row["invoice_id"] not in currencies:
                    currencies[row["invoice_id"]] = await _currency(conn, row["invoice_id"])
                line = describe(row["kind"], data, currencies[row["invoice_id"]])
                if line:
                    moment = row["occurred_at"].astimezone(timezone.utc).strftime("%H:%M:%S")
                    say(f"{moment}  {row['invoice_id']}  {line}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(_first(wake, stop), timeout=POLL_S)
        return last
    finally:
        await conn.close()


async def _first(*events: asyncio.Event) -> None:
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


async def _currency(conn: asyncpg.Connection, invoice_id: str) -> str | None:
    data = await conn.fetchval(
        "SELECT data FROM invoice_events WHERE invoice_id = $1 AND kind = $2", invoice_id, EventKind.INVOICE_ISSUED.value
    )
    return _json(data)["invoice"]["currency"] if data else None


def _json(data: str | dict[str, Any]) -> dict[str, Any]:
    return json.loads(data) if isinstance(data, str) else data
