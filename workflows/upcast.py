"""Snapshots for events written before events carried them (histories v1-v4): the one upcaster.

Until release v5 the workflow wrote facts without saying what it had decided, and the read
models re-ran the policy over them. Those rows are still in ``invoice_events`` (``format`` 1).
``upcast`` folds such an invoice's events once, as the read models of v4 did, into the snapshot
the workflow would have attached; the projector stores it in ``upcast_snapshots`` and never
upcasts the same event twice. Newer batches carry the workflow's own snapshot, which wins.

What v4's fold could not know stays as it was then: the next action counts stages only (not
late fees, instalments or the discount), and the story starts with the first v5 batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import date, datetime, timedelta

from workflows import ladder, policy, snapshot
from workflows.events import InvoiceSnapshot, ReceivableEntry
from workflows.ladder import StepKind
from workflows.models import DomainEvent, EventKind, Invoice, InvoiceState, LegalDecision, NextAction, StageAction
from workflows.state import shown_state

HolidaysOf = Callable[[str, int], frozenset[date]]


class _Fold:
    """An invoice as v4's read models folded it."""

    def __init__(self, invoice: Invoice, issued: DomainEvent) -> None:
        self.invoice = invoice
        first = invoice.policy.stages[0]
        too_late = first.action == StageAction.COURTESY and policy.stage_due_at(invoice, first, timedelta(0)) <= issued.occurred_at
        self.stage_index = 1 if too_late else 0
        self.escalation = InvoiceState.ISSUED
        self.last_stage: StageAction | None = None
        self.amounts = {"fees": 0, "paid": 0, "credited": 0, "discount": 0, "written_off": 0}
        self.disputed = self.on_plan = self.suspended = self.sent_to_agency = False
        self.paused = timedelta(0)
        self.paused_since: datetime | None = None
        self.factored_to: str | None = None
        self.legal_review_again_at: datetime | None = None
        self.closed_at: datetime | None = None
        self.rejected = self.failed_notices = 0
        self.equipment_held: list[str] = []

    def apply(self, event: DomainEvent) -> None:
        kind, data, at = event.kind, event.data, event.occurred_at
        if kind == EventKind.STAGE_REACHED:
            stage = StageAction(data["stage"])
            self.escalation = ladder.STATE_AFTER_STAGE.get(stage, self.escalation)
            actions = [s.action for s in self.invoice.policy.stages]
            self.stage_index = (actions.index(stage) if stage in actions else self.stage_index - 1) + 1
            self.last_stage = stage
        elif kind == EventKind.LATE_FEE_CHARGED:
            self.amounts["fees"] += int(data["amount_minor"])
        elif kind == EventKind.PAYMENT_RECORDED:
            self.amounts["paid"] += int(data["amount_minor"])
        elif kind == EventKind.PAYMENT_REJECTED:
            self.rejected += 1
        elif kind == EventKind.DISCOUNT_APPLIED:
            self.amounts["discount"] += int(data["amount_minor"])
        elif kind in (EventKind.DISPUTE_OPENED, EventKind.PAYMENT_PLAN_AGREED):
            self.disputed = self.disputed or kind == EventKind.DISPUTE_OPENED
            self.on_plan = self.on_plan or kind == EventKind.PAYMENT_PLAN_AGREED
            self.paused_since = at
        elif kind in (EventKind.DISPUTE_RESOLVED, EventKind.INSTALMENT_MISSED):
            if self.paused_since is not None:
                self.paused += at - self.paused_since
            self.paused_since = None
            self.disputed = self.disputed and kind != EventKind.DISPUTE_RESOLVED
            self.on_plan = self.on_plan and kind != EventKind.INSTALMENT_MISSED
            self.amounts["credited"] += int(data.get("credit_minor", 0))
        elif kind in (EventKind.SERVICE_SUSPENDED, EventKind.SERVICE_RESTORED):
            self.suspended = kind == EventKind.SERVICE_SUSPENDED
        elif kind == EventKind.EQUIPMENT_SUSPENDED:
            self.equipment_held.append(str(data["equipment_id"]))
        elif kind == EventKind.EQUIPMENT_RESTORED and data["equipment_id"] in self.equipment_held:
            self.equipment_held.remove(str(data["equipment_id"]))
        elif kind == EventKind.AGENCY_HANDOVER:
            self.sent_to_agency = True
        elif kind == EventKind.INVOICE_FACTORED:
            self.factored_to = str(data["factor"])
        elif kind == EventKind.LEGAL_REVIEW_OPENED:
            self.escalation, self.legal_review_again_at = InvoiceState.LEGAL_REVIEW, None
        elif kind == EventKind.LEGAL_DECISION:
            self._decide(event)
        elif kind == EventKind.INVOICE_CLOSED:
            self.escalation, self.disputed, self.on_plan, self.closed_at = InvoiceState(data["state"]), False, False, at
        elif kind == EventKind.NOTICE_FAILED:
            self.failed_notices += 1

    def _decide(self, event: DomainEvent) -> None:
        decision = LegalDecision(event.data["decision"])
        balance = int(event.data["balance_minor"])
        if decision == LegalDecision.SETTLE:
            self.amounts["written_off"] += balance - int(event.data["settle_amount_minor"] or 0)
        elif decision == LegalDecision.WRITE_OFF:
            self.amounts["written_off"] += balance
        if decision in (LegalDecision.SUE, LegalDecision.SETTLE):
            self.escalation = InvoiceState.LEGAL_ACTION
        elif decision == LegalDecision.AGENCY:
            self.escalation = InvoiceState.AGENCY
            self.legal_review_again_at = event.occurred_at + self.invoice.policy.legal_review_again_after

    def next_action(self, holidays_of: HolidaysOf) -> NextAction | None:
        """v4's next action: the next stage (or the renewed legal review), moved into the sending window."""
        waiting = (InvoiceState.LEGAL_REVIEW, InvoiceState.LEGAL_ACTION)
        if self.escalation.closed or self.disputed or self.on_plan or self.escalation in waiting:
            return None
        invoice, stages = self.invoice, self.invoice.policy.stages
        if self.legal_review_again_at is not None:
            kind, what, at = StepKind.LEGAL_REVIEW, StageAction.LEGAL_REVIEW.value, self.legal_review_again_at
        elif self.stage_index < len(stages):
            stage = stages[self.stage_index]
            kind, what, at = StepKind.STAGE, stage.action.value, policy.stage_due_at(invoice, stage, self.paused)
        else:
            return None
        year = policy.local_date(invoice, at).year
        days_off = holidays_of(invoice.country, year) | holidays_of(invoice.country, year + 1) if invoice.country else frozenset()
        return NextAction(what=what, at=policy.next_sending_moment(invoice, at, days_off), kind=kind)

    def snapshot(self, last: DomainEvent, receivables: list[ReceivableEntry], holidays_of: HolidaysOf) -> InvoiceSnapshot:
        invoice, amounts = self.invoice, self.amounts
        net = invoice.amount_minor + amounts["fees"] - sum(v for k, v in amounts.items() if k != "fees")
        return InvoiceSnapshot(
            **snapshot.invoice_facts(invoice),
            taken_at=last.occurred_at,
            last_sequence=last.sequence,
            state=shown_state(self.escalation, disputed=self.disputed, on_plan=self.on_plan),
            escalation=self.escalation,
            last_stage=self.last_stage,
            fees_minor=amounts["fees"],
            paid_minor=amounts["paid"],
            credited_minor=amounts["credited"],
            discount_minor=amounts["discount"],
            written_off_minor=amounts["written_off"],
            balance_minor=max(0, net),
            overpaid_minor=max(0, -net),
            discount_available_minor=0,
            days_overdue=policy.days_overdue(invoice, last.occurred_at),
            next_action=self.next_action(holidays_of),
            disputed=self.disputed,
            on_payment_plan=self.on_plan,
            suspended=self.suspended,
            suspended_service=invoice.service if self.suspended else None,
            sent_to_agency=self.sent_to_agency,
            factored_to=self.factored_to,
            equipment_held=list(self.equipment_held),
            legal_review_again_at=self.legal_review_again_at,
            legal_summary=None,
            rejected_payments=self.rejected,
            failed_notices=self.failed_notices,
            closed_at=self.closed_at,
            closed_on=policy.local_date(invoice, self.closed_at) if self.closed_at else None,
            receivables=receivables,
            story=[],
        )


def upcast(events: Iterable[DomainEvent], upcast_sequences: set[int], holidays_of: HolidaysOf) -> InvoiceSnapshot | None:
    """The snapshot after the last of ``upcast_sequences`` (events of one invoice, in order, from its first).

    Its receivable entries are those of the events in ``upcast_sequences``; None if the invoice
    was never issued (nothing to fold) or none of its events is to be upcast.
    """
    fold: _Fold | None = None
    receivables: list[ReceivableEntry] = []
    last: DomainEvent | None = None
    for event in events:
        if event.kind == EventKind.INVOICE_ISSUED and fold is None:
            invoice = Invoice.model_validate(event.data["invoice"])
            fold = _Fold(invoice, event)
        elif fold is not None:
            fold.apply(event)
        if fold is None or event.sequence not in upcast_sequences:
            continue
        entry = snapshot.receivable_entry(fold.invoice, event)
        if entry is not None:
            receivables.append(entry)
        last = event
        if event.sequence == max(upcast_sequences):
            break
    if fold is None or last is None:
        return None
    return fold.snapshot(last, receivables, holidays_of)
