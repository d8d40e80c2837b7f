"""What the customer workflow shows outside its history: search attributes and the UI's one-sentence details."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, time, timezone
from typing import Any

from temporalio import workflow
from temporalio.common import SearchAttributeUpdate

from workflows import search_attributes as sa
from workflows.holds import CustomerInvoice, CustomerLedger, Piece
from workflows.models import format_money


def standing(ledger: CustomerLedger) -> str:
    """``on_hold`` (ops paused it), ``suspended`` (an invoice holds a piece) or ``current``."""
    if ledger.on_hold:
        return "on_hold"
    return "suspended" if any(p.holders for p in ledger.pieces.values()) else "current"


class CustomerPublisher:
    """Upserts the customer's search attributes when they change, and its details."""

    def __init__(self) -> None:
        self._published: list | None = None

    def publish(self, ledger: CustomerLedger) -> None:
        now = workflow.now()
        open_invoices = _open(ledger)
        oldest = min((i.due_date for i in open_invoices), default=None)
        updates: list[SearchAttributeUpdate[Any]] = [
            sa.CUSTOMER_ID.value_set(ledger.customer_id),
            sa.CUSTOMER_STANDING.value_set(standing(ledger)),
            sa.OPEN_INVOICES.value_set(float(len(open_invoices))),
            sa.SUSPENDED_INVOICES.value_set(float(len({h for p in ledger.pieces.values() for h in p.holders}))),
            sa.ON_HOLD.value_set(ledger.on_hold),
            sa.DAYS_OVERDUE.value_set(max(0, (now.date() - oldest).days) if oldest else 0),
        ]
        if oldest:
            updates.append(sa.DUE_DATE.value_set(datetime.combine(oldest, time(), tzinfo=timezone.utc)))
        if updates != self._published:
            workflow.upsert_search_attributes(updates)
            self._published = updates
        workflow.set_current_details(details(ledger))


def details(ledger: CustomerLedger) -> str:
    """In a sentence: what the customer owes, what is cut for whom, and what happens next (and its credit, and
    what ops decided)."""
    sentence = _holds_sentence(ledger)
    if credit := ledger.cash.credit():
        kept = " and ".join(format_money(amount, currency) for currency, amount in sorted(credit.items()))
        sentence += f" Credit {kept}: applied to the next invoice that opens."
    return sentence + _ops_sentence(ledger)


def _ops_sentence(ledger: CustomerLedger) -> str:
    control, said = ledger.control, ""
    if pause := control.pause:
        until = f" until {pause.until.isoformat(timespec='minutes')}" if pause.until else " until resumed"
        said += (
            f" On hold since {pause.since.isoformat(timespec='minutes')}{until}"
            f" ({pause.requested_by}: {pause.reason}): no invoice escalates meanwhile."
        )
    if control.cuts_excluded:
        decided = next((d for d in reversed(control.decisions) if d.what.startswith("excluded")), None)
        why = f" ({decided.requested_by}: {decided.reason})" if decided else ""
        said += f" Excluded from automatic cuts{why}: suspension blocks support and orders only."
    return said


def _holds_sentence(ledger: CustomerLedger) -> str:
    owed: dict[str, int] = defaultdict(int)
    for invoice in _open(ledger):
        owed[invoice.currency] += invoice.balance_minor
    amounts = " and ".join(format_money(amount, currency) for currency, amount in sorted(owed.items()))
    holders = sorted({h for p in ledger.pieces.values() for h in p.holders})
    if not holders:
        owes = f"Owes {amounts} on {len(_open(ledger))} open invoice(s)" if owed else "Owes nothing we know of"
        return f"{owes}; nothing is cut: the customer waits for an invoice to reach suspension."
    cut = [_label(p) for p in ledger.pieces.values() if p.cut]
    stuck = [f"{_label(p)} ({p.error})" for p in ledger.pieces.values() if p.stuck]
    sentence = (
        f"Owes {amounts or 'nothing more'} (as its invoices last said) with {len(holders)} invoice(s)"
        f" suspended ({', '.join(holders)}); {', '.join(cut) or 'nothing'} cut, restored when no invoice holds it any more."
    )
    if stuck:
        sentence += f" Needs ops: {'; '.join(stuck)}."
    return sentence


def _open(ledger: CustomerLedger) -> list[CustomerInvoice]:
    """The invoices the customer knows to owe something: those that hold a piece (a written-off one too)."""
    return list(ledger.invoices.values())


def _label(piece: Piece) -> str:
    if piece.equipment_id:
        return f"equipment {piece.equipment_id}"
    return f"support and orders for {piece.service}" if piece.service else "support and orders"
