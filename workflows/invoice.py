"""InvoiceWorkflow: one durable dunning state machine per invoice.

The run loop reads like the policy table: wait until the next step is due (or a handler wakes
it), perform the step, send what the handlers queued, write the events. Handlers at the bottom
only validate, change state and wake the loop; every piece of I/O is an activity.

The rooms it composes, all in ``workflows/``: ``ladder`` (what each rung means), ``policy``
(when the next step is due), ``steps`` (what a due step does), ``outbox`` (events and notices),
``suspension`` and ``agency`` (the rungs that reach beyond the client), ``payments`` (the
payment signal and refusals), ``publishing`` (search attributes, UI details, the status answer).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RawValue
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from workflows import accrual, contracts, policy
    from workflows.charges import note_late_charges_stop
    from workflows.events import (
        DiscountApplied,
        DisputeOpened,
        DisputeResolved,
        InvoiceClosed,
        InvoiceFactored,
        InvoiceIssued,
        InvoiceResent,
        LegalDecisionTaken,
        OverpaymentCredited,
        PaymentPlanAgreed,
        PaymentRecorded,
        PaymentRejected,
        RecoveryRecorded,
        SmallBalanceWrittenOff,
    )
    from workflows.models import (
        DecideLegal,
        DisputeOutcome,
        Invoice,
        InvoiceOutcome,
        InvoiceState,
        InvoiceStatus,
        LegalDecision,
        MarkFactored,
        NoticeKind,
        OpenDispute,
        Payment,
        PaymentPlan,
        PublicHolidaysRequest,
        ResolveDispute,
        StageAction,
        format_money,
    )
    from workflows.outbox import Outbox
    from workflows.patches import (
        PATCH_CONTINUE_ON_SIGNALS,
        PATCH_COUNTED_REJECTIONS,
        PATCH_MONEY_RULES,
        PATCH_SENDING_WINDOW,
        PATCH_STATUTORY_INTEREST,
        PATCH_WAKE_ON_LONG_HISTORY,
    )
    from workflows.payments import PAYMENT_SIGNAL, Malformed, RawExcerpt, decode_payment, payment_problem, storable
    from workflows.publishing import Publisher, status_of
    from workflows.state import (
        COUNT_WRITTEN_EVERY,
        REJECTIONS_STORED_PER_DAY,
        SIGNALS_PER_RUN,
        Dispute,
        InvoiceLedger,
        InvoiceWorkflowInput,
        PlanInProgress,
        Step,
    )
    from workflows.steps import Steps
    from workflows.suspension import Suspension


@workflow.defn
class InvoiceWorkflow:
    """Escalates one invoice through the policy until it is paid, settled or written off."""

    @workflow.init
    def __init__(self, params: InvoiceWorkflowInput) -> None:
        self.ledger = params.carried or InvoiceLedger(
            invoice=params.invoice, minimum_notice_override=params.minimum_notice
        )
        self._history_limit = params.history_limit
        self._history_bytes_limit = params.history_bytes_limit
        self._signals = 0  # taken by this run
        self._wake = False
        self._publisher = Publisher()
        self._running = False
        self._windowed = workflow.patched(PATCH_SENDING_WINDOW)
        self.ledger.money_rules = workflow.patched(PATCH_MONEY_RULES)
        # asked here, once a run, not in a handler: a request delivered with the start runs before the loop, and
        # a patch marker (with its search attribute) ahead of an update's acceptance would not replay
        self._counts_rejections = workflow.patched(PATCH_COUNTED_REJECTIONS)
        self._wakes_on_long_history = workflow.patched(PATCH_WAKE_ON_LONG_HISTORY)
        self._continues_on_signals = workflow.patched(PATCH_CONTINUE_ON_SIGNALS)
        self.ledger.interest_rules = workflow.patched(PATCH_STATUTORY_INTEREST)
        self._outbox = Outbox(self.ledger, window_applies=self._windowed)
        self._suspension = Suspension(self._outbox)
        self._steps = Steps(self._outbox, self._suspension)
        if params.carried is None:
            # here, not in run(): a request delivered with the start must find the invoice issued
            self._issue()

    @property
    def invoice(self) -> Invoice:
        return self.ledger.invoice

    # --- the run loop ---------------------------------------------------------------------

    @workflow.run
    async def run(self, params: InvoiceWorkflowInput) -> InvoiceOutcome:
        self._running = True
        while True:
            await self._outbox.flush()
            if self.ledger.escalation.closed:
                break
            if self._history_is_long():
                await workflow.wait_condition(workflow.all_handlers_finished)
                await self._outbox.flush()
                if not self.ledger.escalation.closed:
                    workflow.continue_as_new(
                        InvoiceWorkflowInput(
                            invoice=self.invoice,
                            carried=self.ledger,
                            history_limit=self._history_limit,
                            history_bytes_limit=self._history_bytes_limit,
                        )
                    )
                continue
            if self._windowed:
                await self._learn_public_holidays()
            await accrual.learn_rates(self.ledger)
            step = self._next_step()
            self._publisher.publish(self.ledger, step)
            if step and step.at <= workflow.now():
                await self._steps.perform(step)
                continue
            self._wake = False
            try:
                await workflow.wait_condition(
                    lambda: self._wake,
                    timeout=(step.at - workflow.now()) if step else None,
                    timeout_summary=step.label if step else None,
                )
            except TimeoutError:
                assert step is not None
                await self._steps.perform(step)
        if self.ledger.escalation == InvoiceState.WRITTEN_OFF and self.ledger.money_rules:
            await self._take_recoveries()
        if self.ledger.suspended and (
            self.ledger.escalation != InvoiceState.WRITTEN_OFF or policy.recovered_in_full(self.ledger)
        ):
            await self._suspension.restore()
            await self._outbox.flush()
        await workflow.wait_condition(workflow.all_handlers_finished)
        await self._outbox.flush()
        self._publisher.publish(self.ledger, None)
        return InvoiceOutcome(
            invoice_id=self.invoice.invoice_id,
            state=self.ledger.escalation,
            paid_minor=self.ledger.paid_minor,
            fees_minor=self.ledger.fees_minor,
            written_off_minor=self.ledger.written_off_minor,
            overpaid_minor=self.ledger.overpaid_minor,
            credited_minor=self.ledger.credited_minor,
            balance_minor=self.ledger.balance_minor,
            last_sequence=self.ledger.next_sequence - 1,
            recovered_minor=self.ledger.recovered_minor,
            interest_minor=self.ledger.interest_minor,
        )

    async def _take_recoveries(self) -> None:
        """A written-off invoice takes payments as recoveries for the policy's while, until they cover the write-off."""
        until = workflow.now() + self.invoice.policy.recoveries_accepted_for
        while not policy.recovered_in_full(self.ledger) and workflow.now() < until:
            self._publisher.publish(self.ledger, None)
            self._wake = False
            try:
                await workflow.wait_condition(
                    lambda: self._wake, timeout=until - workflow.now(), timeout_summary="recoveries no longer taken"
                )
            except TimeoutError:
                break
            await self._outbox.flush()

    def _history_is_long(self) -> bool:
        """Time to continue as new: Temporal suggests it, the history reached its length or size limit, or the
        run took ``SIGNALS_PER_RUN`` signals (patched: older runs never counted them)."""
        info = workflow.info()
        return (
            info.is_continue_as_new_suggested()
            or info.get_current_history_length() >= self._history_limit
            or info.get_current_history_size() >= self._history_bytes_limit
            or (self._signals >= SIGNALS_PER_RUN and self._continues_on_signals)
        )

    async def _learn_public_holidays(self) -> None:
        """Look up the holidays of the years the sending window may need, once per year."""
        ledger = self.ledger
        missing = [y for y in policy.holiday_years_needed(self.invoice, workflow.now()) if y not in ledger.holiday_years]
        if not missing:
            return
        days = await workflow.execute_local_activity_method(
            contracts.Calendar.public_holidays,
            PublicHolidaysRequest(country=self.invoice.country or "", years=missing),
            start_to_close_timeout=timedelta(seconds=30),
            summary=f"Public holidays of {self.invoice.country} in {', '.join(map(str, missing))}",
        )
        ledger.public_holidays = sorted(set(ledger.public_holidays) | set(days))
        ledger.holiday_years.extend(missing)

    def _issue(self) -> None:
        now = workflow.now()
        self._outbox.record(InvoiceIssued(invoice=self.invoice))
        self._outbox.queue_notice(NoticeKind.INVOICE_ISSUED)
        self.ledger.remember(now, f"Invoice issued for {format_money(self.invoice.amount_minor, self.invoice.currency)}")
        stages = self.invoice.policy.stages
        if stages[0].action == StageAction.COURTESY and policy.stage_due_at(self.invoice, stages[0], self.ledger.paused) <= now:
            self.ledger.next_stage_index = 1  # too late for a courtesy note

    def _next_step(self) -> Step | None:
        return policy.next_step(self.ledger, workflow.now(), self._windowed)

    def _changed(self) -> None:
        """Called by every handler that changed state: republish and wake the run loop.

        A request delivered with the start runs before the loop: it only wakes it, and the loop
        publishes (a search-attribute upsert ahead of the update's acceptance would not replay).
        """
        if self._running:
            self._publisher.publish(self.ledger, self._next_step())
        self._wake = True

    # --- payments --------------------------------------------------------------------------

    def _apply_payment(self, payment: Payment) -> int:
        ledger, now = self.ledger, workflow.now()
        if payment.payment_id in ledger.payments or payment.payment_id in ledger.recoveries:
            return ledger.balance_minor
        if ledger.escalation == InvoiceState.WRITTEN_OFF:
            self._record_recovery(payment)
            return ledger.balance_minor
        # interest on the old principal up to the day the money arrived; the paid part stops accruing then
        value_day = policy.local_date(self.invoice, payment.received_at or now)
        accrual.post(self._outbox, f"payment {payment.payment_id}", through=value_day)
        ledger.payments[payment.payment_id] = payment.amount_minor
        self._outbox.record(
            PaymentRecorded(
                payment_id=payment.payment_id,
                amount_minor=payment.amount_minor,
                received_at=payment.received_at or now,
                balance_minor=ledger.balance_minor,
            )
        )
        ledger.remember(now, f"Payment {payment.payment_id}: {format_money(payment.amount_minor, payment.currency)}")
        discount = policy.discount_available(ledger, now)
        if discount and ledger.net_minor - discount <= 0:
            ledger.discount_minor = discount
            self._outbox.record(DiscountApplied(amount_minor=discount))
            ledger.remember(now, f"Early-payment discount applied: {format_money(discount, payment.currency)}")
        if residue := policy.small_balance_residue(ledger):
            ledger.written_off_minor += residue
            self._outbox.record(SmallBalanceWrittenOff(amount_minor=residue, payment_id=payment.payment_id))
            ledger.remember(now, f"Small balance written off: {format_money(residue, payment.currency)}")
        if ledger.net_minor <= 0:
            if ledger.overpaid_minor:
                self._outbox.record(OverpaymentCredited(amount_minor=ledger.overpaid_minor))
            settled = ledger.legal_decision == LegalDecision.SETTLE
            self._close(InvoiceState.SETTLED if settled else InvoiceState.PAID)
        self._outbox.queue_notice(
            NoticeKind.RECEIPT, detail=payment.payment_id, amount_minor=payment.amount_minor, residue_minor=residue
        )
        self._changed()
        return ledger.balance_minor

    def _record_recovery(self, payment: Payment) -> None:
        """A payment on a written-off invoice: recorded as a recovery, with a receipt."""
        ledger, now = self.ledger, workflow.now()
        ledger.recoveries[payment.payment_id] = payment.amount_minor
        unrecovered = max(0, ledger.written_off_minor - ledger.recovered_minor)
        self._outbox.record(
            RecoveryRecorded(
                payment_id=payment.payment_id,
                amount_minor=payment.amount_minor,
                received_at=payment.received_at or now,
                recovered_minor=ledger.recovered_minor,
                unrecovered_minor=unrecovered,
            )
        )
        ledger.remember(now, f"Recovery {payment.payment_id}: {format_money(payment.amount_minor, payment.currency)}")
        self._outbox.queue_notice(
            NoticeKind.RECEIPT, detail=payment.payment_id, amount_minor=payment.amount_minor, recovery=True
        )
        self._changed()

    def _reject_payment(self, reason: str, payload: dict | RawExcerpt) -> None:
        """Record a payment that cannot be applied: with its reason and what was sent (bounded, untrusted text
        made storable) while the invoice has stored fewer than ``REJECTIONS_STORED_PER_DAY`` today, else counted.

        Since the patch it only wakes the loop, which publishes once: a flood delivers thousands of signals in
        one workflow task, and a search-attribute upsert after each would outlast Temporal's deadlock timeout (2 s).
        """
        ledger, now, reason = self.ledger, workflow.now(), storable(reason)
        ledger.rejected_payments += 1
        tally = ledger.rejections
        if tally.window_over(now):
            self._write_rejection_count()
            tally.window_start, tally.stored = now, 0
        bounded = self._counts_rejections
        if bounded and tally.stored >= REJECTIONS_STORED_PER_DAY:
            tally.count(now, reason)
            if tally.counted >= COUNT_WRITTEN_EVERY:
                self._write_rejection_count()
        else:
            tally.stored += 1
            if isinstance(payload, RawExcerpt):
                rejected = PaymentRejected(
                    reason=reason, payload=payload.text, payload_bytes=payload.size, payload_sha256=payload.sha256
                )
            else:
                rejected = PaymentRejected(reason=reason, payload=payload)
            self._outbox.record(rejected)
            ledger.remember(now, f"Payment rejected: {reason[:200]}")
        if bounded:
            self._wake = True
        else:
            self._changed()

    def _write_rejection_count(self) -> None:
        """Write the rejections counted and not yet written, if any (``payment_rejections_counted``)."""
        tally = self.ledger.rejections
        if not tally.counted:
            return
        counted = tally.take_count()
        self._outbox.record(counted)
        self.ledger.remember(workflow.now(), f"{counted.count} more payment(s) rejected, counted (see the log)")

    def _close(self, state: InvoiceState) -> None:
        ledger = self.ledger
        self._write_rejection_count()
        ledger.escalation = state
        ledger.dispute = None
        ledger.plan = None
        # a piece that was never cut needs nothing more from ops once the invoice is closed
        ledger.equipment_failed = {k: v for k, v in ledger.equipment_failed.items() if k in ledger.equipment_cut}
        self._outbox.record(
            InvoiceClosed(
                state=state,
                paid_minor=ledger.paid_minor,
                fees_minor=ledger.fees_minor,
                written_off_minor=ledger.written_off_minor,
                overpaid_minor=ledger.overpaid_minor,
            )
        )
        ledger.remember(workflow.now(), f"Invoice closed: {state.value.replace('_', ' ')}")

    # --- handlers --------------------------------------------------------------------------

    @workflow.update
    def record_payment(self, payment: Payment) -> int:
        """Record a payment; returns the new balance in minor units. Idempotent by payment id."""
        return self._apply_payment(payment)

    @record_payment.validator
    def _validate_payment(self, payment: Payment) -> None:
        if problem := payment_problem(self.ledger, payment):
            raise problem

    @workflow.signal(dynamic=True, description=f"{PAYMENT_SIGNAL}: a payment, fire-and-forget (any other name is dropped)")
    def signal_received(self, name: str, args: Sequence[RawValue]) -> None:
        """Every signal, whatever its name or its arguments, so none can fail a workflow task.

        ``payment_received`` (one ``Payment``) records a payment; its arguments are decoded here,
        so a bad one is recorded as rejected, never lost. Any other name is logged and dropped.
        """
        self._signals += 1
        if name != PAYMENT_SIGNAL:
            workflow.logger.warning("dropped a signal named %r: this workflow only takes %r", name[:200], PAYMENT_SIGNAL)
            if self._wakes_on_long_history and self._history_is_long():
                self._wake = True  # the loop continues as new before dropped signals fill the history
            return
        payment = decode_payment(args)
        if isinstance(payment, Malformed):
            self._reject_payment(payment.reason, payment.sent)
        elif problem := payment_problem(self.ledger, payment):
            self._reject_payment(problem.message, payment.model_dump(mode="json"))
        else:
            self._apply_payment(payment)

    @workflow.update
    def open_dispute(self, dispute: OpenDispute) -> InvoiceStatus:
        """The client disputes the invoice: escalation pauses until the dispute is resolved."""
        now = workflow.now()
        accrual.post(self._outbox, "dispute opened")  # interest stays frozen while the dispute is open
        self.ledger.dispute = Dispute(opened_at=now, reason=dispute.reason)
        self._outbox.record(DisputeOpened(reason=dispute.reason))
        self.ledger.remember(now, f"Dispute opened: {dispute.reason}")
        self._outbox.queue_notice(NoticeKind.DISPUTE_OPENED)
        self._changed()
        return self.status()

    @open_dispute.validator
    def _validate_open_dispute(self, dispute: OpenDispute) -> None:
        self._require_open()
        if self.ledger.dispute:
            raise ApplicationError("a dispute is already open on this invoice", type="InvalidRequest")
        if self.ledger.plan:
            raise ApplicationError("the invoice is on a payment plan; a dispute cannot be opened", type="InvalidRequest")

    @workflow.update
    def resolve_dispute(self, resolution: ResolveDispute) -> InvoiceStatus:
        """End the dispute: upheld with a credit, or rejected; escalation resumes, shifted by the pause."""
        ledger, now = self.ledger, workflow.now()
        assert ledger.dispute is not None
        rejected = resolution.outcome == DisputeOutcome.REJECTED
        moved_by = policy.dispute_shift(ledger, ledger.dispute.opened_at, now, rejected=rejected)
        ledger.paused += moved_by
        ledger.dispute = None
        accrual.resume(ledger)
        ledger.credited_minor += resolution.credit_minor
        self._outbox.record(
            DisputeResolved(
                outcome=resolution.outcome,
                credit_minor=resolution.credit_minor,
                note=resolution.note,
                escalation_moved_by=moved_by,
            )
        )
        ledger.remember(now, f"Dispute {resolution.outcome.value}")
        self._outbox.queue_notice(
            NoticeKind.DISPUTE_RESOLVED, detail=resolution.outcome.value, amount_minor=resolution.credit_minor
        )
        if ledger.net_minor <= 0:
            self._close(InvoiceState.SETTLED)
        self._changed()
        return self.status()

    @resolve_dispute.validator
    def _validate_resolve_dispute(self, resolution: ResolveDispute) -> None:
        self._require_open()
        if not self.ledger.dispute:
            raise ApplicationError("no dispute is open on this invoice", type="InvalidRequest")
        if resolution.outcome == DisputeOutcome.UPHELD and resolution.credit_minor > self.ledger.balance_minor:
            raise ApplicationError(
                f"credit {self._money(resolution.credit_minor)} exceeds the balance {self._money(self.ledger.balance_minor)}",
                type="InvalidRequest",
            )

    @workflow.update
    def agree_payment_plan(self, plan: PaymentPlan) -> InvoiceStatus:
        """Replace escalation by instalments; a missed one resumes escalation where it stopped."""
        ledger, now = self.ledger, workflow.now()
        accrual.forgo(ledger)  # the plan is for the balance as it stands; interest stays frozen while it holds
        ledger.plan = PlanInProgress(
            plan=plan, agreed_at=now, settled_at_agreement_minor=ledger.paid_minor + ledger.credited_minor
        )
        self._outbox.record(PaymentPlanAgreed(plan=plan))
        ledger.remember(now, f"Payment plan agreed: {len(plan.instalments)} instalment(s)")
        self._outbox.queue_notice(NoticeKind.PLAN_AGREED, instalments=plan.instalments)
        self._changed()
        return self.status()

    @agree_payment_plan.validator
    def _validate_plan(self, plan: PaymentPlan) -> None:
        self._require_open()
        ledger = self.ledger
        if ledger.dispute or ledger.plan:
            raise ApplicationError("the invoice already has an open dispute or payment plan", type="InvalidRequest")
        if plan.total_minor != ledger.balance_minor:
            raise ApplicationError(
                f"instalments sum to {self._money(plan.total_minor)} but the balance is {self._money(ledger.balance_minor)}",
                type="InvalidRequest",
            )
        today = policy.local_date(self.invoice, workflow.now())
        if plan.instalments[0].due_date < today:
            raise ApplicationError(f"the first instalment is due before today ({today})", type="InvalidRequest")

    @workflow.update
    def resend_invoice(self) -> None:
        """Re-send the current invoice with fees now, without moving the escalation clock."""
        self._outbox.record(InvoiceResent(balance_minor=self.ledger.balance_minor))
        self.ledger.remember(workflow.now(), "Invoice re-sent on request")
        self._outbox.queue_notice(NoticeKind.INVOICE_ISSUED, detail="resend")
        self._changed()

    @resend_invoice.validator
    def _validate_resend(self) -> None:
        self._require_open()

    @workflow.update
    def decide_legal(self, decision: DecideLegal) -> InvoiceStatus:
        """A human's decision at legal review: sue, settle for an amount, write off, or back to agency."""
        ledger, now = self.ledger, workflow.now()
        accrual.post(self._outbox, "legal decision")
        ledger.legal_decision = decision.decision
        self._outbox.record(
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
            note_late_charges_stop(self._outbox)
        elif decision.decision == LegalDecision.SETTLE:
            assert decision.settle_amount_minor is not None
            ledger.written_off_minor += ledger.balance_minor - decision.settle_amount_minor
            ledger.escalation = InvoiceState.LEGAL_ACTION
            note_late_charges_stop(self._outbox)
        elif decision.decision == LegalDecision.WRITE_OFF:
            ledger.written_off_minor += ledger.balance_minor
            self._close(InvoiceState.WRITTEN_OFF)
        else:
            ledger.escalation = InvoiceState.AGENCY
            ledger.legal_review_again_at = now + self.invoice.policy.legal_review_again_after
        self._changed()
        return self.status()

    @decide_legal.validator
    def _validate_legal(self, decision: DecideLegal) -> None:
        self._require_open()
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

    @workflow.update
    def mark_factored(self, factoring: MarkFactored) -> InvoiceStatus:
        """The receivable was sold to a factor: client-facing escalation ends; the block, if any, lifts."""
        ledger = self.ledger
        accrual.post(self._outbox, "sold to a factor")
        self._outbox.record(
            InvoiceFactored(factor=factoring.factor, advance_minor=factoring.advance_minor, balance_minor=ledger.balance_minor)
        )
        ledger.remember(workflow.now(), f"Receivable sold to factor {factoring.factor}")
        self._close(InvoiceState.FACTORED)
        self._changed()
        return self.status()

    @mark_factored.validator
    def _validate_factored(self, factoring: MarkFactored) -> None:
        self._require_open()
        if self.ledger.escalation in (InvoiceState.LEGAL_ACTION,):
            raise ApplicationError("legal action is under way: settle or write off first", type="InvalidRequest")

    def _money(self, amount_minor: int) -> str:
        return format_money(amount_minor, self.invoice.currency)

    def _require_open(self) -> None:
        if self.ledger.escalation.closed:
            state = self.ledger.escalation.value.replace("_", " ")
            raise ApplicationError(f"invoice {self.invoice.invoice_id} is closed ({state})", type="InvoiceClosed")

    @workflow.query
    def status(self) -> InvoiceStatus:
        """State, amounts, next action and the story so far."""
        return status_of(self.ledger, self._next_step(), workflow.now())
