"""An imported invoice's opening: the fees and the last notice of the system that chased it before.

The fees are owed as the first late fees (the policy's fees count on after them); the stages up to
the last notice are taken as done without a word to the client, and the stages after it count from
when it went out. Checked at the edge (``problems``), applied once when the workflow starts (``open_books``).
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

from workflows import ladder, policy
from workflows.events import LateFeeCharged, StageReached
from workflows.ladder import StageWork
from workflows.models import OPENING_FEE, Fee, Invoice, Opening, StageAction, format_money
from workflows.outbox import Outbox

# the rungs another system may have done already: those that only tell the client (and charge a fee)
ALREADY_DONE_WORK = (StageWork.NOTICE_ONLY, StageWork.CHARGE_LATE_FEE)


def problems(invoice: Invoice, opening: Opening) -> list[str]:
    """Why ``opening`` does not fit ``invoice`` (empty: it does)."""
    found = []
    if notice := opening.last_notice:
        if ladder.RUNGS[notice.stage].work not in ALREADY_DONE_WORK:
            found.append(f"last_notice: the {notice.stage.value} stage does more than tell; it cannot be taken as done")
        elif notice.stage not in (s.action for s in invoice.policy.stages):
            found.append(f"last_notice: the invoice's policy has no {notice.stage.value} stage")
        if notice.sent_at.date() < invoice.issue_date:
            found.append(f"last_notice: sent before the issue date {invoice.issue_date.isoformat()}")
    found += [
        f"opening_fees[{n}]: charged before the due date {invoice.due_date.isoformat()}"
        for n, fee in enumerate(opening.fees)
        if fee.charged_on < invoice.due_date
    ]
    return found


def open_books(outbox: Outbox, opening: Opening) -> None:
    """Record the opening fees as the first late fees, and climb silently to the stage of the last notice."""
    ledger, now = outbox.ledger, workflow.now()
    invoice = ledger.invoice
    for fee in opening.fees:
        number = len(ledger.fees) + 1
        at = policy.local_moment(invoice, fee.charged_on)
        ledger.fees.append(Fee(number=number, amount_minor=fee.amount_minor, charged_at=at, reason=OPENING_FEE))
        outbox.record(LateFeeCharged(number=number, amount_minor=fee.amount_minor, reason=OPENING_FEE))
        ledger.remember(now, f"Opening fee {number}: {format_money(fee.amount_minor, invoice.currency)}")
    notice = opening.last_notice
    if notice is None:
        return
    actions = [s.action for s in invoice.policy.stages]
    if notice.stage not in actions:  # checked at the edge; a start that skipped it tells nothing false
        return
    index = actions.index(notice.stage)
    ledger.next_stage_index = index + 1
    rung = ladder.RUNGS[notice.stage]
    if rung.state_after is not None:
        ledger.escalation = rung.state_after
    if policy.interest_applies(ledger) and StageAction.LATE_FEE in actions[: index + 1]:
        ledger.interest.accrues_from = invoice.due_date + timedelta(days=1)  # posted by the run loop's steps
    ledger.stages_moved_by = notice.sent_at - policy.stage_due_at(invoice, invoice.policy.stages[index], ledger.paused)
    outbox.record(StageReached(stage=notice.stage, days_overdue=policy.days_overdue(invoice, notice.sent_at)))
    ledger.remember(now, f"Imported at stage {notice.stage.value.replace('_', ' ')}: its notice went out {notice.sent_at:%Y-%m-%d %H:%M %Z}")
