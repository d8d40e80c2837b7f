"""What the invoice workflow does when a step falls due: climb the policy's next rung, or a step between rungs.

Each rung does what the ladder table (``workflows.ladder``) says; the monthly late fee and the
renewed legal review repeat the work of their rung, notice included.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from functools import partial

from temporalio import workflow

from workflows import accrual, agency, ladder, policy
from workflows.charges import note_late_charges_stop
from workflows.events import (
    DiscountLapsed,
    EscalationStopped,
    InstalmentMissed,
    LateFeeCharged,
    LegalReviewOpened,
    StageReached,
)
from workflows.ladder import StageWork, StepKind
from workflows.models import COMPENSATION, Fee, InvoiceState, NoticeKind, StageAction, format_money
from workflows.outbox import Outbox
from workflows.patches import PATCH_DISCOUNT_LAPSE_EVENT, closed_meanwhile
from workflows.state import Step
from workflows.suspension import Suspension


class Steps:
    """Performs the run loop's steps on the ledger; output goes through the outbox."""

    def __init__(self, outbox: Outbox, suspension: Suspension) -> None:
        self.outbox = outbox
        self.ledger = outbox.ledger
        self.suspension = suspension

    async def perform(self, step: Step) -> None:
        """Do what the step that fell due says."""
        work: dict[StepKind, Callable[[], Awaitable[None]]] = {
            StepKind.STAGE: self._climb,
            StepKind.LATE_FEE: self._charge_late_fee,
            StepKind.INSTALMENT: self._check_instalment,
            StepKind.LEGAL_REVIEW: self._open_legal_review,
            StepKind.DISCOUNT_ENDS: self._note_discount_lapsed,
            StepKind.INTEREST: self._post_interest,
        }
        await work[step.kind]()

    async def catch_up(self, step: Step, next_step: Callable[[], Step | None]) -> None:
        """Take ``step`` and every step due with it; the client hears only the highest rung's notice.

        More than one notice due at once is a catch-up (a backdated invoice, a worker that was down): the
        invoice is where its days overdue put it, fees due charged and listed in that one notice, and the
        stages still to come count from now. The suspend rung still waits for its ultimatum (the interlock).
        """
        ledger = self.ledger
        climbed_from = ledger.next_stage_index
        self.outbox.gather()
        woke = workflow.now()  # due with it: due by now, not by the end of a step that took its time
        due: Step | None = step
        while due is not None and due.at <= woke:
            await self.perform(due)
            due = next_step()
        held_back = self.outbox.tell_highest()
        if held_back < 2 or ledger.escalation.closed:
            return
        now = workflow.now()
        if ledger.next_stage_index > climbed_from:
            last = ledger.invoice.policy.stages[ledger.next_stage_index - 1]
            late = now - policy.stage_due_at(ledger.invoice, last, policy.stage_delay(ledger))
            ledger.stages_moved_by += max(late, timedelta(0))
        ledger.remember(now, f"Caught up: {held_back} notices fell due at once, the client is told one")

    async def _climb(self) -> None:
        """Reach the policy's next stage and do what its rung of the ladder says."""
        ledger, now = self.ledger, workflow.now()
        stage = ledger.invoice.policy.stages[ledger.next_stage_index]
        if policy.escalation_stops_at(ledger, stage):
            self._stop_escalation(stage.action)
            return
        if stage.action == StageAction.SUSPEND and ledger.money_rules and not policy.cut_announced(ledger, now):
            self._announce_cut()
            return
        ledger.next_stage_index += 1
        accrual.post(self.outbox, f"stage {stage.action.value.replace('_', ' ')}")
        rung = ladder.RUNGS[stage.action]
        if rung.state_after is not None:
            ledger.escalation = rung.state_after
        self.outbox.record(StageReached(stage=rung.action, days_overdue=policy.days_overdue(ledger.invoice, now)))
        ledger.remember(now, f"Stage reached: {rung.action.value.replace('_', ' ')}")
        work: dict[StageWork, Callable[[], Awaitable[None]]] = {
            StageWork.CHARGE_LATE_FEE: self._reach_late_fee,
            StageWork.SUSPEND_SERVICE: self.suspension.suspend,
            StageWork.HAND_OVER_TO_AGENCY: partial(agency.hand_over, self.outbox),
            StageWork.OPEN_LEGAL_REVIEW: self._open_legal_review,
        }
        if rung.work in work:  # a notice-only rung has nothing to do but tell
            await work[rung.work]()
        if rung.work.sends_own_notice or closed_meanwhile(ledger):
            return  # the client is not told of a stage that their payment (or a decision) overtook
        self.outbox.queue_notice(rung.notice)

    def _stop_escalation(self, stage: StageAction) -> None:
        """The balance is below the policy's minimum: escalation stops where it is, for good."""
        ledger = self.ledger
        ledger.escalation_stopped = True
        minimum = ledger.invoice.policy.minimum_balance_to_escalate_minor
        self.outbox.record(EscalationStopped(balance_minor=ledger.balance_minor, minimum_minor=minimum, stage=stage))
        money = format_money(ledger.balance_minor, ledger.invoice.currency)
        ledger.remember(workflow.now(), f"Escalation stopped before the {stage.value.replace('_', ' ')}: {money} owed")

    def _announce_cut(self) -> None:
        """The cut is due but no delivered ultimatum named it: send one first; the cut waits the notice it gives."""
        self.ledger.cut_announcement_tried_at = workflow.now()
        self.ledger.remember(workflow.now(), "Suspension waits: the client is told its date first")
        self.outbox.queue_notice(NoticeKind.ULTIMATUM)

    async def _note_discount_lapsed(self) -> None:
        if workflow.patched(PATCH_DISCOUNT_LAPSE_EVENT):  # a fact, so the read models learn the next action
            last_day = policy.discount_deadline(self.ledger.invoice)
            assert last_day is not None  # the step is only planned for an offered discount
            self.outbox.record(DiscountLapsed(last_day=last_day))
        self.ledger.remember(workflow.now(), "Early-payment discount lapsed")

    async def _post_interest(self) -> None:
        accrual.post(self.outbox, "month end")
        note_late_charges_stop(self.outbox)

    async def _reach_late_fee(self) -> None:
        """The late-fee stage charges the first fee; an imported invoice's opening fees took its place."""
        if not self.ledger.fees:
            await self._charge_late_fee()
            return
        if policy.interest_applies(self.ledger):
            accrual.start(self.outbox)
        self.outbox.queue_notice(ladder.RUNGS[StageAction.LATE_FEE].notice)

    async def _charge_late_fee(self) -> None:
        ledger, now = self.ledger, workflow.now()
        number = len(ledger.fees) + 1
        interest = policy.interest_applies(ledger)
        if interest and number == 1:
            accrual.start(self.outbox)
        amount = policy.late_fee_amount(ledger, number)
        if amount <= 0:
            if interest:  # the interest posted is told, with the compensation if there is one
                self.outbox.queue_notice(ladder.RUNGS[StageAction.LATE_FEE].notice)
                note_late_charges_stop(self.outbox)
            return
        reason = COMPENSATION if interest else "late fee" if number == 1 else f"late fee, month {number} of delay"
        ledger.fees.append(Fee(number=number, amount_minor=amount, charged_at=now, reason=reason))
        self.outbox.record(LateFeeCharged(number=number, amount_minor=amount, reason=reason))
        ledger.remember(now, f"Late fee {number} charged: {format_money(amount, self.ledger.invoice.currency)}")
        self.outbox.queue_notice(ladder.RUNGS[StageAction.LATE_FEE].notice)
        note_late_charges_stop(self.outbox)

    async def _check_instalment(self) -> None:
        ledger, now = self.ledger, workflow.now()
        assert ledger.plan is not None
        ledger.plan.checked += 1
        expected = policy.plan_amount_expected(ledger, ledger.plan.checked)
        received = policy.plan_amount_received(ledger)
        if received >= expected:
            return
        missed, instalments = ledger.plan.checked, ledger.plan.plan.instalments
        ledger.paused += now - ledger.plan.agreed_at
        ledger.plan = None
        accrual.resume(ledger)
        self.outbox.record(InstalmentMissed(instalment=missed, expected_minor=expected, received_minor=received))
        ledger.remember(now, f"Instalment {missed} missed: escalation resumes at {ledger.escalation.value}")
        self.outbox.queue_notice(NoticeKind.INSTALMENT_MISSED, number=missed, instalments=instalments)

    async def _open_legal_review(self) -> None:
        ledger, now = self.ledger, workflow.now()
        ledger.escalation = InvoiceState.LEGAL_REVIEW
        ledger.legal_review_again_at = None
        ledger.legal_decision = None
        self.outbox.record(LegalReviewOpened(**policy.legal_summary(ledger, now)))
        ledger.remember(now, "Legal review opened: waiting for a decision")
        self.outbox.queue_notice(ladder.RUNGS[StageAction.LEGAL_REVIEW].notice)
