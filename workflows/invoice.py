"""InvoiceWorkflow: one durable dunning state machine per invoice.

The run loop reads like the policy table: wait until the next step is due (or a handler wakes
it), perform the step, send what the handlers queued, write the events. Handlers at the bottom
only validate, change state and wake the loop; every piece of I/O is an activity.

The rooms it composes, all in ``workflows/``: ``ladder`` (what each rung means), ``policy``
(when the next step is due), ``steps`` (what a due step does), ``outbox`` (events and notices),
``suspension`` and ``agency`` (the rungs that reach beyond the client), ``payments`` (payments
applied, recovered or refused), ``decisions`` (disputes, plans, legal decisions, factoring),
``publishing`` (search attributes, UI details, the status answer).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.common import RawValue

with workflow.unsafe.imports_passed_through():
    from workflows import accrual, contracts, patches, policy
    from workflows.customer_control import CUSTOMER_CONTROL_SIGNAL, ControlMessage
    from workflows.decisions import Decisions, require_open
    from workflows.events import InvoiceClosed, InvoiceIssued
    from workflows.models import (
        DecideLegal,
        Invoice,
        InvoiceOutcome,
        InvoiceState,
        InvoiceStatus,
        MarkFactored,
        NoticeKind,
        OpenDispute,
        Opening,
        Payment,
        PaymentPlan,
        PublicHolidaysRequest,
        ResolveDispute,
        StageAction,
        format_money,
    )
    from workflows.opening import open_books
    from workflows.outbox import Outbox
    from workflows.patches import (
        PATCH_CATCH_UP,
        PATCH_CONTINUE_ON_SIGNALS,
        PATCH_COUNTED_REJECTIONS,
        PATCH_CUSTOMER_CONTROL,
        PATCH_CUSTOMER_NOTICES,
        PATCH_MONEY_RULES,
        PATCH_SENDING_WINDOW,
        PATCH_STATUTORY_INTEREST,
        PATCH_VALUE_DATES,
        PATCH_WAKE_ON_LONG_HISTORY,
    )
    from workflows.payments import PAYMENT_SIGNAL, PaymentDesk, payment_problem, write_rejection_count
    from workflows.publishing import Publisher, status_of
    from workflows.state import SIGNALS_PER_RUN, InvoiceLedger, InvoiceWorkflowInput, Step
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
        # asked here, once a run, not in a handler: a request delivered with the start runs before the loop, and
        # a patch marker (with its search attribute) ahead of an update's acceptance would not replay
        taken = patches.taken_this_run()
        self._windowed = PATCH_SENDING_WINDOW in taken
        self.ledger.money_rules = PATCH_MONEY_RULES in taken
        self.ledger.value_dates = PATCH_VALUE_DATES in taken
        self.ledger.interest_rules = PATCH_STATUTORY_INTEREST in taken
        self.ledger.catch_up = PATCH_CATCH_UP in taken
        counts_rejections = PATCH_COUNTED_REJECTIONS in taken
        self._wakes_on_long_history = PATCH_WAKE_ON_LONG_HISTORY in taken
        self._continues_on_signals = PATCH_CONTINUE_ON_SIGNALS in taken
        self._outbox = Outbox(self.ledger, window_applies=self._windowed, via_customer=PATCH_CUSTOMER_NOTICES in taken)
        self._suspension = Suspension(self._outbox)
        self._steps = Steps(self._outbox, self._suspension)
        self._payments = PaymentDesk(
            self._outbox, counts_rejections=counts_rejections, close=self._close, changed=self._changed, wake=self._wake_loop
        )
        self._decisions = Decisions(self._outbox, close=self._close, changed=self._changed)
        if params.carried is None:
            # here, not in run(): a request delivered with the start must find the invoice issued
            self._issue(params.opening)

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
                await self._take(step)
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
                await self._take(step)
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

    async def _take(self, step: Step) -> None:
        """Perform the step due; since ``catch-up``, with every step due with it, telling the client once."""
        if self.ledger.catch_up:
            await self._steps.catch_up(step, self._next_step)
        else:
            await self._steps.perform(step)

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

    def _issue(self, opening: Opening | None) -> None:
        """Record the invoice and send it; an imported one, or one started with a stage already due
        (``catch-up``), is told by that stage's notice instead."""
        now, ledger = workflow.now(), self.ledger
        self._outbox.record(InvoiceIssued(invoice=self.invoice))
        ledger.remember(now, f"Invoice issued for {format_money(self.invoice.amount_minor, self.invoice.currency)}")
        stages = self.invoice.policy.stages
        if stages[0].action == StageAction.COURTESY and policy.stage_due_at(self.invoice, stages[0], ledger.paused) <= now:
            ledger.next_stage_index = 1  # too late for a courtesy note
        if opening is not None:
            open_books(self._outbox, opening)
        # a stage due when the invoice was started, not one that fell due while no worker ran its first task:
        # that invoice is sent as ever (its stage follows)
        started = workflow.info().workflow_start_time
        told_by_a_stage = ledger.catch_up and (opening is not None or self._stage_due_at_start(started))
        if not told_by_a_stage:
            self._outbox.queue_notice(NoticeKind.INVOICE_ISSUED)

    def _stage_due_at_start(self, started: datetime) -> bool:
        ledger, stages = self.ledger, self.invoice.policy.stages
        if ledger.next_stage_index >= len(stages):
            return False
        return policy.stage_due_at(self.invoice, stages[ledger.next_stage_index], policy.stage_delay(ledger)) <= started

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

    def _wake_loop(self) -> None:
        """Wake the run loop without republishing: it publishes once after a flood of rejections."""
        self._wake = True

    # --- closing ---------------------------------------------------------------------------

    def _close(self, state: InvoiceState) -> None:
        ledger = self.ledger
        write_rejection_count(self._outbox)
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

    # --- handlers: each validates, then hands the request to its room ----------------------

    @workflow.update
    def record_payment(self, payment: Payment) -> int:
        """Record a payment; returns the new balance in minor units. Idempotent by payment id."""
        return self._payments.apply(payment)

    @record_payment.validator
    def _validate_payment(self, payment: Payment) -> None:
        if problem := payment_problem(self.ledger, payment, workflow.now()):
            raise problem

    @workflow.signal(
        dynamic=True,
        description=f"{PAYMENT_SIGNAL}: a payment, fire-and-forget; {CUSTOMER_CONTROL_SIGNAL}: the customer's pause"
        " (any other name is dropped)",
    )
    def signal_received(self, name: str, args: Sequence[RawValue]) -> None:
        """Every signal, whatever its name or its arguments, so none can fail a workflow task.

        ``payment_received`` (one ``Payment``) records a payment; its arguments are decoded here,
        so a bad one is recorded as rejected, never lost. ``customer_control`` (one ``ControlMessage``,
        from the customer workflow) pauses or resumes escalation. Any other name is logged and dropped.
        """
        self._signals += 1
        if name == CUSTOMER_CONTROL_SIGNAL and workflow.patched(PATCH_CUSTOMER_CONTROL):
            self._take_customer_control(args)
            return
        if name != PAYMENT_SIGNAL:
            workflow.logger.warning("dropped a signal named %r: this workflow only takes %r", name[:200], PAYMENT_SIGNAL)
            if self._wakes_on_long_history and self._history_is_long():
                self._wake = True  # the loop continues as new before dropped signals fill the history
            return
        self._payments.take_signal(args)

    def _take_customer_control(self, args: Sequence[RawValue]) -> None:
        """Decode the customer's message; a malformed one, or one for another customer, is logged and dropped."""
        try:
            message = workflow.payload_converter().from_payload(args[0].payload, ControlMessage) if len(args) == 1 else None
        except Exception as err:  # noqa: BLE001 - a bad message is dropped, never a task failure
            workflow.logger.warning("dropped a malformed %s signal: %s", CUSTOMER_CONTROL_SIGNAL, str(err)[:200])
            return
        if not isinstance(message, ControlMessage) or message.customer_id != self.invoice.customer_id:
            workflow.logger.warning("dropped a %s signal not from this invoice's customer", CUSTOMER_CONTROL_SIGNAL)
            return
        self._decisions.customer_control(message)

    @workflow.update
    def open_dispute(self, dispute: OpenDispute) -> InvoiceStatus:
        """The client disputes the invoice: escalation pauses until the dispute is resolved."""
        self._decisions.open_dispute(dispute)
        return self.status()

    @open_dispute.validator
    def _validate_open_dispute(self, dispute: OpenDispute) -> None:
        self._decisions.check_open_dispute(dispute)

    @workflow.update
    def resolve_dispute(self, resolution: ResolveDispute) -> InvoiceStatus:
        """End the dispute: upheld with a credit, or rejected; escalation resumes, shifted by the pause."""
        self._decisions.resolve_dispute(resolution)
        return self.status()

    @resolve_dispute.validator
    def _validate_resolve_dispute(self, resolution: ResolveDispute) -> None:
        self._decisions.check_resolve_dispute(resolution)

    @workflow.update
    def agree_payment_plan(self, plan: PaymentPlan) -> InvoiceStatus:
        """Replace escalation by instalments; a missed one resumes escalation where it stopped."""
        self._decisions.agree_payment_plan(plan)
        return self.status()

    @agree_payment_plan.validator
    def _validate_plan(self, plan: PaymentPlan) -> None:
        self._decisions.check_plan(plan)

    @workflow.update
    def resend_invoice(self) -> None:
        """Re-send the current invoice with fees now, without moving the escalation clock."""
        self._decisions.resend_invoice()

    @resend_invoice.validator
    def _validate_resend(self) -> None:
        require_open(self.ledger)

    @workflow.update
    def decide_legal(self, decision: DecideLegal) -> InvoiceStatus:
        """A human's decision at legal review: sue, settle for an amount, write off, or back to agency."""
        self._decisions.decide_legal(decision)
        return self.status()

    @decide_legal.validator
    def _validate_legal(self, decision: DecideLegal) -> None:
        self._decisions.check_legal(decision)

    @workflow.update
    def mark_factored(self, factoring: MarkFactored) -> InvoiceStatus:
        """The receivable was sold to a factor: client-facing escalation ends; the block, if any, lifts."""
        self._decisions.mark_factored(factoring)
        return self.status()

    @mark_factored.validator
    def _validate_factored(self, factoring: MarkFactored) -> None:
        self._decisions.check_factored(factoring)

    @workflow.query
    def status(self) -> InvoiceStatus:
        """State, amounts, next action and the story so far."""
        return status_of(self.ledger, self._next_step(), workflow.now())
