"""What the invoice workflow shows outside its history: search attributes, the UI's details, its status."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from temporalio import workflow
from temporalio.common import SearchAttributeIndexedValueType, SearchAttributeUpdate

from workflows import policy
from workflows import search_attributes as sa
from workflows.models import InvoiceState, InvoiceStatus, format_money
from workflows.snapshot import decided_now
from workflows.state import InvoiceLedger, Step


class Publisher:
    """Upserts the search attributes that changed since the last upsert (or the start), and the details."""

    def __init__(self) -> None:
        self._published = _started_with()  # what the invoice was started with needs no upsert

    def publish(self, ledger: InvoiceLedger, step: Step | None) -> None:
        """Upsert the search attributes that changed and describe the state for the UI."""
        invoice, now = ledger.invoice, workflow.now()
        updates: list[SearchAttributeUpdate[Any]] = [
            sa.INVOICE_STATE.value_set(ledger.state.value),
            sa.CUSTOMER_ID.value_set(invoice.customer_id),
            sa.AMOUNT_DUE.value_set(ledger.balance_minor),
            sa.CURRENCY.value_set(invoice.currency),
            sa.DUE_DATE.value_set(policy.due_moment(invoice)),
            sa.DAYS_OVERDUE.value_set(policy.days_overdue(invoice, now)),
            sa.REJECTED_PAYMENTS.value_set(ledger.rejected_payments),
            sa.FAILED_NOTICES.value_set(sorted(ledger.failed_notices)),
            sa.FAILED_EQUIPMENT.value_set(sorted(ledger.equipment_failed)),
        ]
        if updates != self._published:
            workflow.upsert_search_attributes(updates)
            self._published = updates
        workflow.set_current_details(_details(ledger, step))


def status_of(ledger: InvoiceLedger, step: Step | None, now: datetime) -> InvoiceStatus:
    """The status query's answer: state, amounts, next action and the story so far."""
    invoice = ledger.invoice
    return InvoiceStatus(
        **decided_now(ledger, step, now),
        invoice_id=invoice.invoice_id,
        customer_id=invoice.customer_id,
        time_zone=invoice.time_zone,
        currency=invoice.currency,
        amount_minor=invoice.amount_minor,
        actions=list(ledger.actions),
    )


def _details(ledger: InvoiceLedger, step: Step | None) -> str:
    """The state, the next step or what the invoice waits for, and what needs ops, in Markdown."""
    balance = format_money(ledger.balance_minor, ledger.invoice.currency)
    lines = [f"**{ledger.state.value.replace('_', ' ').capitalize()}**: {balance} due"]
    if step:
        lines.append(f"Next: {step.label.replace('_', ' ')} at {step.at.isoformat(timespec='minutes')}")
    elif ledger.dispute:
        lines.append(f"Waiting: dispute open since {ledger.dispute.opened_at:%Y-%m-%d} ({ledger.dispute.reason})")
    elif pause := ledger.customer_pause:
        until = f" until {pause.until:%Y-%m-%d %H:%M}" if pause.until else ""
        lines.append(f"Waiting: customer on hold since {pause.since:%Y-%m-%d}{until} ({pause.requested_by}: {pause.reason})")
    elif ledger.escalation == InvoiceState.LEGAL_REVIEW:
        lines.append("Waiting: a legal decision (sue, settle, write off or back to agency)")
    if ledger.rejected_payments:
        lines.append(f"Rejected payments: {ledger.rejected_payments} (see the payment_rejected events)")
    if ledger.failed_notices:
        failed = ", ".join(k.replace("_", " ") for k in ledger.failed_notices)
        lines.append(f"Failed notices: {failed} (see the notice_failed events)")
    if ledger.equipment_failed:
        lines.append("Equipment needing ops: " + "; ".join(f"{k}: {v}" for k, v in sorted(ledger.equipment_failed.items())))
    if ledger.equipment_cut:
        lines.append("Equipment cut: " + ", ".join(ledger.equipment_cut))
    return "\n\n".join(lines)


def _started_with() -> list[SearchAttributeUpdate[Any]] | None:
    """The search attributes the run started with, in ``publish``'s form (an absent keyword list is an
    empty one); None unless every attribute is there. Read from the start event, so a replay sees the same."""
    started = workflow.info().typed_search_attributes
    values: list[SearchAttributeUpdate[Any]] = []
    for key in sa.INVOICE:
        value = started.get(key)
        if value is None and key.indexed_value_type == SearchAttributeIndexedValueType.KEYWORD_LIST:
            value = []
        if value is None:
            return None
        values.append(key.value_set(value))
    return values
