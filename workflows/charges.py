"""When late charges stop for good: recorded once, with the reason, as a fact the read models copy."""

from __future__ import annotations

from temporalio import workflow

from workflows import accrual, policy
from workflows.events import LateChargesStopped
from workflows.models import format_money
from workflows.outbox import Outbox


def note_late_charges_stop(outbox: Outbox) -> None:
    """If late charges stop now (``policy.late_charges_stop``), record it: no later fee is charged."""
    ledger = outbox.ledger
    reason = policy.late_charges_stop(ledger)
    if reason is None:
        return
    if reason != "cap reached":
        accrual.post(outbox, f"late charges stop: {reason}")  # what accrued until now stays owed
    ledger.late_charges_stopped = reason
    outbox.record(LateChargesStopped(reason=reason, fees_minor=ledger.fees_minor))
    fees = format_money(ledger.fees_minor, ledger.invoice.currency)
    ledger.remember(workflow.now(), f"Late charges stop ({reason}) at {fees}")
