"""Requests that change an open invoice's course: disputes, payment plans, legal decisions, factoring, a re-send,
and its customer's pause (ops paused the customer: ``workflows.customer_ops``).

The workflow's update handlers call ``check_*`` from their validators (a refusal never reaches the
history) and then the request's method, which changes the ledger and records what it decided.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ApplicationError

from workflows import accrual, policy
from workflows.charges import note_late_charges_stop
from workflows.customer_control import ControlMessage
from workflows.events import (
    DisputeOpened,
    DisputeResolved,
    InvoiceFactored,
    InvoiceResent,
    LegalDecisionTaken,
    PaymentPlanAgreed,
)
from workflows.models import (
    DecideLegal,
    DisputeOutcome,
    InvoiceState,
    LegalDecision,
    MarkFactored,
    NoticeKind,
    OpenDispute,
    PaymentPlan,
    ResolveDispute,
    format_money,
)
from workflows.outbox import Outbox
from workflows.state import CustomerPause, Dispute, InvoiceLedger, PlanInProgress


class Decisions:
    """Carries out the requests ops and the client make of an invoice; output goes through the outbox.

    ``close`` closes the invoice in a state; ``changed`` republishes and wakes the run loop.
    """

    def __init__(self, outbox: Outbox, *, close: Callable[[InvoiceState], None], changed: Callable[[], None]) -> None:
        self.outbox = outbox
        self.ledger = outbox.ledger
        self._close, self._changed = close, changed

    def _money(self, amount_minor: int) -> str:
        return format_money(amount_minor, self.ledger.invoice.currency)

    # --- disputes ------------------------------------------------------------------------------

    def check_open_dispute(self, dispute: OpenDispute) -> None:
        require_open(self.ledger)
        if self.ledger.dispute:
            raise ApplicationError("a dispute is already open on this invoice", type="InvalidRequest")
        if self.ledger.plan:
            raise ApplicationError("the invoice is on a payment plan; a dispute cannot be opened", type="InvalidRequest")

    def open_dispute(self, dispute: OpenDispute) -> None:
        now = workflow.now()
        accrual.post(self.outbox, "dispute opened")  # interest stays frozen while the dispute is open
        self.ledger.dispute = Dispute(opened_at=now, reason=dispute.reason)
        self.outbox.record(DisputeOpened(reason=dispute.reason))
        self.ledger.remember(now, f"Dispute opened: {dispute.reason}")
        self.outbox.queue_notice(NoticeKind.DISPUTE_OPENED)
        self._changed()

    def check_resolve_dispute(self, resolution: ResolveDispute) -> None:
        require_open(self.ledger)
        if not self.ledger.dispute:
            raise ApplicationError("no dispute is open on this invoice", type="InvalidRequest")
        if resolution.outcome == DisputeOutcome.UPHELD and resolution.credit_minor > self.ledger.balance_minor:
            raise ApplicationError(
                f"credit {self._money(resolution.credit_minor)} exceeds the balance {self._money(self.ledger.balance_minor)}",
                type="InvalidRequest",
            )

    def resolve_dispute(self, resolution: ResolveDispute) -> None:
        ledger, now = self.ledger, workflow.now()
        assert ledger.dispute is not None
        rejected = resolution.outcome == DisputeOutcome.REJECTED
        moved_by = policy.dispute_shift(ledger, ledger.dispute.opened_at, now, rejected=rejected)
        ledger.paused += moved_by
        if pause := ledger.customer_pause:  # the customer's pause goes on: it counts from now, and before the dispute
            ledger.paused += max(ledger.dispute.opened_at - pause.since, timedelta(0))
            pause.since = now
        ledger.dispute = None
        accrual.resume(ledger)
        ledger.credited_minor += resolution.credit_minor
        self.outbox.record(
            DisputeResolved(
                outcome=resolution.outcome,
                credit_minor=resolution.credit_minor,
                note=resolution.note,
                escalation_moved_by=moved_by,
            )
        )
        ledger.remember(now, f"Dispute {resolution.outcome.value}")
        self.outbox.queue_notice(
            NoticeKind.DISPUTE_RESOLVED, detail=resolution.outcome.value, amount_minor=resolution.credit_minor
        )
        if ledger.net_minor <= 0:
            self._close(InvoiceState.SETTLED)
        self._changed()

    # --- the customer's pause -------------------------------------------------------------------

    def customer_control(self, message: ControlMessage) -> None:
        """The customer was paused or resumed by ops: no step while paused; resumed, the steps still to come move
        by the pause's length (as for an upheld dispute). A message no newer than the last one taken is dropped."""
        ledger, now = self.ledger, workflow.now()
        if message.sequence <= ledger.customer_control_seen or ledger.escalation.closed:
            return
        ledger.customer_control_seen = message.sequence
        pause = ledger.customer_pause
        by = f"{message.requested_by}: {message.reason}"
        if message.paused:
            until = f" until {message.until.isoformat(timespec='minutes')}" if message.until else ""
            if pause is None:
                ledger.remember(now, f"Escalation paused: customer on hold{until} ({by})")
            ledger.customer_pause = CustomerPause(
                since=pause.since if pause else now, reason=message.reason, requested_by=message.requested_by, until=message.until
            )
        elif pause is not None:
            moved_by = policy.customer_pause_shift(ledger, now)
            ledger.paused += moved_by
            ledger.customer_pause = None
            ledger.remember(now, f"Escalation resumed: customer no longer on hold; steps still to come move by {moved_by}")
        self._changed()

    # --- payment plans -------------------------------------------------------------------------

    def check_plan(self, plan: PaymentPlan) -> None:
        ledger = self.ledger
        require_open(ledger)
        if ledger.dispute or ledger.plan:
            raise ApplicationError("the invoice already has an open dispute or payment plan", type="InvalidRequest")
        if plan.total_minor != ledger.balance_minor:
            raise ApplicationError(
                f"instalments sum to {self._money(plan.total_minor)} but the balance is {self._money(ledger.balance_minor)}",
                type="InvalidRequest",
            )
        today = policy.local_date(ledger.invoice, workflow.now())
        if plan.instalments[0].due_date < today:
            raise ApplicationError(f"the first instalment is due before today ({today})", type="InvalidRequest")

    def agree_payment_plan(self, plan: PaymentPlan) -> None:
        ledger, now = self.ledger, workflow.now()
        accrual.forgo(ledger)  # the plan is for the balance as it stands; interest stays frozen while it holds
        ledger.plan = PlanInProgress(
            plan=plan, agreed_at=now, settled_at_agreement_minor=ledger.paid_minor + ledger.credited_minor
        )
        self.outbox.record(PaymentPlanAgreed(plan=plan))
        ledger.remember(now, f"Payment plan agreed: {len(plan.instalments)} instalment(s)")
        self.outbox.queue_notice(NoticeKind.PLAN_AGREED, instalments=plan.instalments)
        self._changed()

    # --- a re-send, legal decisions, factoring ---------------------------------------------------

    def resend_invoice(self) -> None:
        self.outbox.record(InvoiceResent(balance_minor=self.ledger.balance_minor))
        self.ledger.remember(workflow.now(), "Invoice re-sent on request")
        self.outbox.queue_notice(NoticeKind.INVOICE_ISSUED, detail="resend")
        self._changed()

    def check_legal(self, decision: DecideLegal) -> None:
        require_open(self.ledger)
        escalation = self.ledger.escalation
        if escalation == InvoiceState.LEGAL_ACTION:
            if decision.decision not in (LegalDecision.SETTLE, LegalDecision.WRITE_OFF):
                raise ApplicationError("legal action is under way: only settle or write off", type="InvalidRequest")
        elif escalation != InvoiceState.LEGAL_REVIEW:
            raise ApplicationError(f"no legal review is open (invoice is {escalation.value})", type="InvalidRequest")
        amount = decision.settle_amount_minor
        if amount is not None and amount > self.ledger.balance_minor:
            raise ApplicationError(
                f"settlement {self._money(amount)} exceeds the balance {self._money(self.ledger.balance_minor)}",
                type="InvalidRequest",
            )

    def decide_legal(self, decision: DecideLegal) -> None:
        ledger, now = self.ledger, workflow.now()
        accrual.post(self.outbox, "legal decision")
        ledger.legal_decision = decision.decision
        self.outbox.record(
            LegalDecisionTaken(
                decision=decision.decision,
                settle_amount_minor=decision.settle_amount_minor,
                note=decision.note,
                balance_minor=ledger.balance_minor,
            )
        )
        ledger.remember(now, f"Legal decision: {decision.decision.value.replace('_', ' ')}")
        if decision.decision == LegalDecision.SUE:
            ledger.escalation = InvoiceState.LEGAL_ACTION
            note_late_charges_stop(self.outbox)
        elif decision.decision == LegalDecision.SETTLE:
            assert decision.settle_amount_minor is not None
            ledger.written_off_minor += ledger.balance_minor - decision.settle_amount_minor
            ledger.escalation = InvoiceState.LEGAL_ACTION
            note_late_charges_stop(self.outbox)
        elif decision.decision == LegalDecision.WRITE_OFF:
            ledger.written_off_minor += ledger.balance_minor
            self._close(InvoiceState.WRITTEN_OFF)
        else:
            ledger.escalation = InvoiceState.AGENCY
            ledger.legal_review_again_at = now + ledger.invoice.policy.legal_review_again_after
        self._changed()

    def check_factored(self, factoring: MarkFactored) -> None:
        require_open(self.ledger)
        if self.ledger.escalation in (InvoiceState.LEGAL_ACTION,):
            raise ApplicationError("legal action is under way: settle or write off first", type="InvalidRequest")

    def mark_factored(self, factoring: MarkFactored) -> None:
        ledger = self.ledger
        accrual.post(self.outbox, "sold to a factor")
        self.outbox.record(
            InvoiceFactored(factor=factoring.factor, advance_minor=factoring.advance_minor, balance_minor=ledger.balance_minor)
        )
        ledger.remember(workflow.now(), f"Receivable sold to factor {factoring.factor}")
        self._close(InvoiceState.FACTORED)
        self._changed()


def require_open(ledger: InvoiceLedger) -> None:
    """Refuse a request on a closed invoice (``InvoiceClosed``)."""
    if ledger.escalation.closed:
        state = ledger.escalation.value.replace("_", " ")
        raise ApplicationError(f"invoice {ledger.invoice.invoice_id} is closed ({state})", type="InvoiceClosed")
