"""The snapshot that ends each batch of events: what the workflow decided, for the read models to copy.

``observe`` sees every event the workflow emits and keeps what the snapshot needs beyond the
ledger (the last stage reached, the dated changes to the receivable, ...); ``take`` builds the
snapshot when the batch is appended and moves the batch's receivable entries and story lines
into it. Both work on the workflow's state alone, so the workflow stays deterministic.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from workflows import policy
from workflows.events import InvoiceSnapshot, ReceivableEntry
from workflows.models import DomainEvent, EventKind, Invoice, InvoiceState, LegalDecision, NextAction, StageAction
from workflows.state import BatchFacts, InvoiceLedger, Step


def observe(facts: BatchFacts, invoice: Invoice, event: DomainEvent) -> None:
    """Keep what ``event`` tells the next snapshot."""
    kind, data = event.kind, event.data
    if kind == EventKind.STAGE_REACHED:
        facts.last_stage = StageAction(data["stage"])
    elif kind == EventKind.AGENCY_HANDOVER:
        facts.sent_to_agency = True
    elif kind == EventKind.INVOICE_FACTORED:
        facts.factored_to = str(data["factor"])
    elif kind == EventKind.INVOICE_CLOSED:
        facts.closed_at = event.occurred_at
    elif kind == EventKind.NOTICE_FAILED:
        facts.notices_failed += 1
    entry = receivable_entry(invoice, event)
    if entry is not None:
        facts.receivables.append(entry)


def receivable_entry(invoice: Invoice, event: DomainEvent) -> ReceivableEntry | None:
    """How ``event`` changes what the client owes, dated in the client's time zone (None: it does not).

    The invoice counts from its issue date, a payment and the discount it earned from the day its money
    arrived, a late fee's reversal from the day the fee was charged, everything else from the day it happened. A settlement writes off what exceeds the settled amount.
    """
    kind, data = event.kind, event.data
    on = policy.local_date(invoice, event.occurred_at)
    if kind == EventKind.INVOICE_ISSUED:
        amount, on = invoice.amount_minor, invoice.issue_date
    elif kind in (EventKind.LATE_FEE_CHARGED, EventKind.INTEREST_ACCRUED):
        amount = int(data["amount_minor"])
    elif kind == EventKind.LATE_FEE_REVERSED:  # as if never charged: dated when it was
        amount = -int(data["amount_minor"])
        on = policy.local_date(invoice, _moment(data["charged_at"]))
    elif kind == EventKind.PAYMENT_RECORDED:
        amount = -int(data["amount_minor"])
        on = policy.local_date(invoice, _moment(data["received_at"]))
    elif kind in (EventKind.DISCOUNT_APPLIED, EventKind.SMALL_BALANCE_WRITTEN_OFF):
        amount = -int(data["amount_minor"])
        if data.get("paid_on"):  # a discount, from the day the money that earned it arrived
            on = date.fromisoformat(str(data["paid_on"]))
    elif kind == EventKind.DISPUTE_RESOLVED:
        amount = -int(data["credit_minor"])
    elif kind == EventKind.INVOICE_FACTORED:
        amount = -int(data["balance_minor"])
    elif kind == EventKind.LEGAL_DECISION and data["decision"] == LegalDecision.SETTLE:
        amount = -(int(data["balance_minor"]) - int(data["settle_amount_minor"] or 0))
    elif kind == EventKind.LEGAL_DECISION and data["decision"] == LegalDecision.WRITE_OFF:
        amount = -int(data["balance_minor"])
    else:
        return None
    if amount == 0:
        return None
    return ReceivableEntry(sequence=event.sequence, effective_on=on, amount_minor=amount, reason=kind)


def invoice_facts(invoice: Invoice) -> dict[str, Any]:
    """What every snapshot repeats of the invoice itself, so a read model needs no other source."""
    return {
        "customer_id": invoice.customer_id,
        "currency": invoice.currency,
        "service": invoice.service,
        "time_zone": invoice.time_zone,
        "issue_date": invoice.issue_date,
        "due_date": invoice.due_date,
        "amount_minor": invoice.amount_minor,
    }


def decided_now(ledger: InvoiceLedger, step: Step | None, now: datetime) -> dict[str, Any]:
    """What the status query and the snapshot both show: the state, the amounts and what comes next."""
    invoice = ledger.invoice
    return {
        "state": ledger.state,
        "fees_minor": ledger.fees_minor,
        "paid_minor": ledger.paid_minor,
        "credited_minor": ledger.credited_minor,
        "discount_minor": ledger.discount_minor,
        "written_off_minor": ledger.written_off_minor,
        "balance_minor": ledger.balance_minor,
        "overpaid_minor": ledger.overpaid_minor,
        "interest_minor": ledger.interest_minor,
        "interest_accruing_minor": policy.interest_accruing_minor(ledger, now),
        "discount_available_minor": policy.discount_available(ledger, now),
        "days_overdue": policy.days_overdue(invoice, now),
        "next_action": NextAction(what=step.label, at=step.at, kind=step.kind) if step else None,
        "disputed": ledger.dispute is not None,
        "on_payment_plan": ledger.plan is not None,
        "rejected_payments": ledger.rejected_payments,
        "legal_summary": policy.legal_summary(ledger, now) if ledger.escalation == InvoiceState.LEGAL_REVIEW else None,
    }


def take(ledger: InvoiceLedger, step: Step | None, now: datetime, through: int | None = None) -> InvoiceSnapshot:
    """The invoice after the events emitted so far; ``step`` is the next step the workflow will take.

    The receivable entries up to event ``through`` (default: all) and the story lines go into this
    snapshot and are not kept for the next. A batch split in several appends (``Outbox.flush``) has
    a snapshot on each part, ``last_sequence`` its last event: the state is the one after them all.
    """
    invoice, facts = ledger.invoice, ledger.batch_facts
    last = ledger.next_sequence - 1 if through is None else through
    untold = min(ledger.actions_total - facts.story_told, len(ledger.actions))
    receivables = [r for r in facts.receivables if r.sequence <= last]
    facts.receivables = [r for r in facts.receivables if r.sequence > last]
    facts.story_told = ledger.actions_total
    return InvoiceSnapshot(
        **invoice_facts(invoice),
        **decided_now(ledger, step, now),
        taken_at=now,
        last_sequence=last,
        escalation=ledger.escalation,
        last_stage=facts.last_stage,
        suspended=ledger.suspended,
        suspended_service=invoice.service if ledger.suspended else None,
        sent_to_agency=facts.sent_to_agency,
        factored_to=facts.factored_to,
        equipment_held=list(ledger.equipment_cut),
        legal_review_again_at=ledger.legal_review_again_at,
        failed_notices=facts.notices_failed,
        closed_at=facts.closed_at if ledger.escalation.closed else None,
        closed_on=policy.local_date(invoice, facts.closed_at) if facts.closed_at and ledger.escalation.closed else None,
        late_charges_stopped=ledger.late_charges_stopped,
        escalation_stopped=ledger.escalation_stopped,
        cut_announced_for=ledger.cut_announced_for,
        recovered_minor=ledger.recovered_minor,
        receivables=receivables,
        story=ledger.actions[len(ledger.actions) - untold :] if untold else [],
    )


def _moment(value: object) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
