"""InvoiceWorkflow: one durable dunning state machine per invoice.

The run loop reads like the policy table: wait until the next step is due (or a handler wakes
it), perform the step, send what the handlers queued, write the events. Handlers at the bottom
only validate, change state and wake the loop; every piece of I/O is an activity.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import date, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RawValue, RetryPolicy, SearchAttributeIndexedValueType
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from workflows import ladder, policy
    from workflows import search_attributes as sa
    from workflows.ladder import StageWork, StepKind
    from workflows.models import (
        AgencyHandover,
        DecideLegal,
        DisputeOutcome,
        DomainEvent,
        EquipmentRequest,
        EquipmentResult,
        EventKind,
        Fee,
        Invoice,
        InvoiceOutcome,
        InvoiceState,
        InvoiceStatus,
        LegalDecision,
        MarkFactored,
        NextAction,
        NoticeKind,
        NoticeRequest,
        OpenDispute,
        Payment,
        PaymentPlan,
        PublicHolidaysRequest,
        ResolveDispute,
        ServiceAction,
        StageAction,
        format_money,
    )
    from workflows.state import Dispute, InvoiceLedger, InvoiceWorkflowInput, PlanInProgress, QueuedNotice, Step

NOTICE_RETRY = RetryPolicy(maximum_interval=timedelta(minutes=10), non_retryable_error_types=["PermanentDeliveryFailure"])
IO_RETRY = RetryPolicy(maximum_interval=timedelta(minutes=1))
# a piece of equipment still unreachable after about half an hour of tries is reported, not waited for
EQUIPMENT_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=5),
    maximum_interval=timedelta(minutes=10),
    maximum_attempts=6,
    non_retryable_error_types=["EquipmentRefused", "KillSwitchOn"],
)
# workflow.patched() ids: each guards a change made while invoices were in flight (see README, Versioning)
PATCH_SENDING_WINDOW = "sending-window"
PATCH_EQUIPMENT = "equipment-adapters"
PATCH_AGENCY_PACKAGE = "agency-package"
PATCH_STAGE_STOPS_AT_CLOSE = "stage-stops-at-close"
PAYMENT_SIGNAL = "payment_received"


@workflow.defn
class InvoiceWorkflow:
    """Escalates one invoice through the policy until it is paid, settled or written off."""

    @workflow.init
    def __init__(self, params: InvoiceWorkflowInput) -> None:
        self.ledger = params.carried or InvoiceLedger(invoice=params.invoice)
        self._history_limit = params.history_limit
        self._wake = False
        self._published = _started_with()  # what the invoice was started with needs no upsert
        self._running = False
        self._windowed = workflow.patched(PATCH_SENDING_WINDOW)
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
            await self._flush()
            if self.ledger.escalation.closed:
                break
            if self._history_is_long():
                await workflow.wait_condition(workflow.all_handlers_finished)
                await self._flush()
                if not self.ledger.escalation.closed:
                    workflow.continue_as_new(
                        InvoiceWorkflowInput(
                            invoice=self.invoice, carried=self.ledger, history_limit=self._history_limit
                        )
                    )
                continue
            if self._windowed:
                await self._learn_public_holidays()
            step = self._next_step()
            self._publish(step)
            if step and step.at <= workflow.now():
                await self._perform(step)
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
                await self._perform(step)
        if self.ledger.suspended and self.ledger.escalation != InvoiceState.WRITTEN_OFF:
            await self._restore()
            await self._flush()
        await workflow.wait_condition(workflow.all_handlers_finished)
        await self._flush()
        self._publish(None)
        return InvoiceOutcome(
            invoice_id=self.invoice.invoice_id,
            state=self.ledger.escalation,
            paid_minor=self.ledger.paid_minor,
            fees_minor=self.ledger.fees_minor,
            written_off_minor=self.ledger.written_off_minor,
            overpaid_minor=self.ledger.overpaid_minor,
        )

    def _history_is_long(self) -> bool:
        info = workflow.info()
        return info.is_continue_as_new_suggested() or info.get_current_history_length() >= self._history_limit

    async def _learn_public_holidays(self) -> None:
        """Look up the holidays of the years the sending window may need, once per year."""
        ledger = self.ledger
        missing = [y for y in policy.holiday_years_needed(self.invoice, workflow.now()) if y not in ledger.holiday_years]
        if not missing:
            return
        days = await workflow.execute_local_activity(
            "public_holidays",
            PublicHolidaysRequest(country=self.invoice.country or "", years=missing),
            result_type=list[date],
            start_to_close_timeout=timedelta(seconds=30),
            summary=f"Public holidays of {self.invoice.country} in {', '.join(map(str, missing))}",
        )
        ledger.public_holidays = sorted(set(ledger.public_holidays) | set(days))
        ledger.holiday_years.extend(missing)

    def _issue(self) -> None:
        now = workflow.now()
        self._event(EventKind.INVOICE_ISSUED, invoice=self.invoice.model_dump(mode="json"))
        self._queue_notice(NoticeKind.INVOICE_ISSUED)
        self.ledger.remember(now, f"Invoice issued for {format_money(self.invoice.amount_minor, self.invoice.currency)}")
        stages = self.invoice.policy.stages
        if stages[0].action == StageAction.COURTESY and policy.stage_due_at(self.invoice, stages[0], self.ledger.paused) <= now:
            self.ledger.next_stage_index = 1  # too late for a courtesy note

    def _next_step(self) -> Step | None:
        return policy.next_step(self.ledger, workflow.now(), self._windowed)

    async def _perform(self, step: Step) -> None:
        work = {
            StepKind.STAGE: self._climb,
            StepKind.LATE_FEE: self._charge_late_fee,
            StepKind.INSTALMENT: self._check_instalment,
            StepKind.LEGAL_REVIEW: self._open_legal_review,
            StepKind.DISCOUNT_ENDS: self._note_discount_lapsed,
        }
        await work[step.kind]()

    async def _climb(self) -> None:
        """Reach the policy's next stage and do what its rung of the ladder says."""
        stage = self.invoice.policy.stages[self.ledger.next_stage_index]
        self.ledger.next_stage_index += 1
        rung, now = ladder.RUNGS[stage.action], workflow.now()
        if rung.state_after is not None:
            self.ledger.escalation = rung.state_after
        self._event(EventKind.STAGE_REACHED, stage=rung.action.value, days_overdue=policy.days_overdue(self.invoice, now))
        self.ledger.remember(now, f"Stage reached: {rung.action.value.replace('_', ' ')}")
        work = {
            StageWork.CHARGE_LATE_FEE: self._charge_late_fee,
            StageWork.SUSPEND_SERVICE: self._suspend,
            StageWork.HAND_OVER_TO_AGENCY: self._hand_over_to_agency,
            StageWork.OPEN_LEGAL_REVIEW: self._open_legal_review,
        }.get(rung.work)
        if work:
            await work()
        if rung.work.sends_own_notice or self._closed_meanwhile():
            return  # the client is not told of a stage that their payment (or a decision) overtook
        self._queue_notice(rung.notice)

    async def _hand_over_to_agency(self) -> None:
        sent = await self._send_agency_package() if workflow.patched(PATCH_AGENCY_PACKAGE) else False
        if sent or not self._closed_meanwhile():
            self._event(EventKind.AGENCY_HANDOVER, balance_minor=self.ledger.balance_minor, package_sent=sent)

    async def _note_discount_lapsed(self) -> None:
        self.ledger.remember(workflow.now(), "Early-payment discount lapsed")

    def _closed_meanwhile(self) -> bool:
        """A request closed the invoice while a stage waited on its activities: the stage stops there."""
        return self.ledger.escalation.closed and workflow.patched(PATCH_STAGE_STOPS_AT_CLOSE)

    async def _charge_late_fee(self) -> None:
        ledger, now = self.ledger, workflow.now()
        number = len(ledger.fees) + 1
        amount = policy.late_fee_amount(ledger, number)
        if amount <= 0:
            return
        reason = "late fee" if number == 1 else f"late fee, month {number} of delay"
        ledger.fees.append(Fee(number=number, amount_minor=amount, charged_at=now, reason=reason))
        self._event(EventKind.LATE_FEE_CHARGED, number=number, amount_minor=amount, reason=reason)
        ledger.remember(now, f"Late fee {number} charged: {format_money(amount, self.invoice.currency)}")
        self._queue_notice(ladder.RUNGS[StageAction.LATE_FEE].notice)

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
        self._event(EventKind.INSTALMENT_MISSED, instalment=missed, expected_minor=expected, received_minor=received)
        ledger.remember(now, f"Instalment {missed} missed: escalation resumes at {ledger.escalation.value}")
        self._queue_notice(NoticeKind.INSTALMENT_MISSED, number=missed, instalments=instalments)

    async def _open_legal_review(self) -> None:
        ledger, now = self.ledger, workflow.now()
        ledger.escalation = InvoiceState.LEGAL_REVIEW
        ledger.legal_review_again_at = None
        ledger.legal_decision = None
        self._event(EventKind.LEGAL_REVIEW_OPENED, **policy.legal_summary(ledger, now))
        ledger.remember(now, "Legal review opened: waiting for a decision")
        self._queue_notice(ladder.RUNGS[StageAction.LEGAL_REVIEW].notice)

    async def _suspend(self) -> None:
        """Block support and orders, then cut each authorised piece of equipment."""
        result = await self._service_activity("suspend")
        self.ledger.suspended = True
        self._event(EventKind.SERVICE_SUSPENDED, **result, service=self.invoice.service)
        self.ledger.remember(workflow.now(), "Service suspended: support and new orders blocked")
        terms = self.invoice.terms
        if (
            terms.remote_disconnect_authorized
            and terms.equipment_ids
            and workflow.patched(PATCH_EQUIPMENT)
            and not self._closed_meanwhile()
        ):
            await self._change_equipment("suspend", list(terms.equipment_ids))

    async def _restore(self) -> None:
        """Restore each piece of equipment that was cut (and only those), then lift the block."""
        if self.ledger.equipment_cut and workflow.patched(PATCH_EQUIPMENT):
            await self._change_equipment("restore", list(self.ledger.equipment_cut))
        result = await self._service_activity("restore")
        self.ledger.suspended = False
        self._event(EventKind.SERVICE_RESTORED, **result, service=self.invoice.service)
        self.ledger.remember(workflow.now(), "Service restored")
        self._queue_notice(NoticeKind.RESTORED)

    async def _service_activity(self, verb: str) -> dict:
        return await workflow.execute_activity(
            f"{verb}_service",
            self._service_action(verb),
            start_to_close_timeout=timedelta(seconds=30),  # database rows only: a dead worker's task retries soon
            retry_policy=IO_RETRY,
            summary=f"{verb.capitalize()} support and orders of customer {self.invoice.customer_id}",
        )

    async def _change_equipment(self, verb: str, equipment_ids: list[str]) -> None:
        """One activity per piece, in parallel; a piece that stays unreachable is reported, not waited for."""
        outcomes = await asyncio.gather(*(self._one_equipment(verb, eid) for eid in equipment_ids))
        ledger, now = self.ledger, workflow.now()
        for equipment_id, result, error in outcomes:
            if result is not None:
                kind = EventKind.EQUIPMENT_SUSPENDED if verb == "suspend" else EventKind.EQUIPMENT_RESTORED
                self._event(kind, **result.model_dump(exclude={"action"}))
                ledger.equipment_failed.pop(equipment_id, None)
                if verb == "suspend":
                    ledger.equipment_cut.append(equipment_id)
                else:
                    ledger.equipment_cut.remove(equipment_id)
                ledger.remember(now, f"Equipment {equipment_id} {'cut' if verb == 'suspend' else 'restored'}: {result.state}")
            else:
                kind = EventKind.SUSPEND_FAILED if verb == "suspend" else EventKind.RESTORE_FAILED
                self._event(kind, equipment_id=equipment_id, error=error)
                ledger.equipment_failed[equipment_id] = f"{verb} failed: {error}"
                ledger.remember(now, f"Equipment {equipment_id}: {verb} FAILED ({error})")

    async def _one_equipment(self, verb: str, equipment_id: str) -> tuple[str, EquipmentResult | None, str]:
        request = EquipmentRequest(
            idempotency_key=f"{workflow.info().workflow_id}/{verb}-equipment-{equipment_id}",
            equipment_id=equipment_id,
            customer_id=self.invoice.customer_id,
            invoice_id=self.invoice.invoice_id,
            reason=f"invoice {self.invoice.invoice_id} {'unpaid' if verb == 'suspend' else 'settled'}",
            requested_by=f"workflow {workflow.info().workflow_id}",
        )
        try:
            result = await workflow.execute_activity(
                f"{verb}_equipment",
                request,
                result_type=EquipmentResult,
                start_to_close_timeout=timedelta(minutes=5),
                heartbeat_timeout=timedelta(minutes=1),
                retry_policy=EQUIPMENT_RETRY,
                summary=f"{verb.capitalize()} equipment {equipment_id}",
            )
        except ActivityError as err:
            return equipment_id, None, _one_line(err.cause or err)
        return equipment_id, result, ""

    def _service_action(self, verb: str) -> ServiceAction:
        terms = self.invoice.terms
        return ServiceAction(
            idempotency_key=f"{workflow.info().workflow_id}/{verb}-{self.ledger.next_sequence}",
            customer_id=self.invoice.customer_id,
            invoice_id=self.invoice.invoice_id,
            remote_disconnect_authorized=terms.remote_disconnect_authorized,
            equipment_ids=list(terms.equipment_ids),
            reason=f"invoice {self.invoice.invoice_id} {'unpaid' if verb == 'suspend' else 'settled'}",
        )

    async def _send_agency_package(self) -> bool:
        """Write the history first, then send the hand-over package to the agency; False if it failed or the
        invoice closed meanwhile."""
        await self._flush()
        if self._closed_meanwhile():
            return False
        ledger = self.ledger
        handover = AgencyHandover(
            idempotency_key=f"{workflow.info().workflow_id}/agency-package",
            invoice=self.invoice,
            fees=list(ledger.fees),
            paid_minor=ledger.paid_minor,
            credited_minor=ledger.credited_minor + ledger.discount_minor,
            balance_minor=ledger.balance_minor,
            days_overdue=policy.days_overdue(self.invoice, workflow.now()),
        )
        try:
            await workflow.execute_activity(
                "send_agency_package",
                handover,
                start_to_close_timeout=timedelta(minutes=2),
                retry_policy=NOTICE_RETRY,
                summary="Send the hand-over package to the collection agency",
            )
        except ActivityError as err:
            self._notice_failed("agency_package", "agency-package", "agency", err)
            return False
        ledger.remember(workflow.now(), "Hand-over package sent to the collection agency")
        return True

    # --- output: notices and events --------------------------------------------------------

    async def _flush(self) -> None:
        """Send every queued notice, then write every pending event, until nothing is left."""
        ledger = self.ledger
        while ledger.outbox or ledger.pending_events:
            if ledger.outbox:
                await self._send_notice(ledger.outbox[0])
                ledger.outbox.pop(0)
                continue
            batch = list(ledger.pending_events)
            await workflow.execute_activity(
                "append_events",
                batch,
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=IO_RETRY,
                summary=f"Record {len(batch)} event(s)",
            )
            del ledger.pending_events[: len(batch)]

    async def _send_notice(self, queued: QueuedNotice) -> None:
        request = self._notice_request(queued)
        label = queued.kind.value.replace("_", " ")
        try:
            result = await workflow.execute_activity(
                "send_notice",
                request,
                start_to_close_timeout=timedelta(minutes=1),  # SMTP and webhook time out well within it
                retry_policy=NOTICE_RETRY,
                summary=f"Send {label} notice",
            )
        except ActivityError as err:
            self._notice_failed(queued.kind.value, queued.step, "all", err)
            return
        # histories from before the channels change carry a bare Message-ID: e-mail only
        delivered = result.get("delivered", []) if isinstance(result, dict) else ["email"]
        failed = result.get("failed", {}) if isinstance(result, dict) else {}
        if delivered:
            self._event(
                EventKind.NOTICE_SENT, kind=queued.kind.value, step=queued.step, to=str(request.to_email), channels=delivered
            )
        for channel, error in sorted(failed.items()):
            self._notice_failed(queued.kind.value, queued.step, channel, error)

    def _notice_failed(self, kind: str, step: str, channel: str, error: object) -> None:
        if isinstance(error, ActivityError):
            error = error.cause or error
        if kind not in self.ledger.failed_notices:
            self.ledger.failed_notices.append(kind)
        self._event(EventKind.NOTICE_FAILED, kind=kind, step=step, channel=channel, error=_one_line(error))
        self.ledger.remember(workflow.now(), f"Notice FAILED: {kind.replace('_', ' ')} ({channel}): {_one_line(error)}")

    def _notice_request(self, queued: QueuedNotice) -> NoticeRequest:
        ledger, invoice, now = self.ledger, self.invoice, workflow.now()
        terms = invoice.terms
        announces_cut = queued.kind in (NoticeKind.ULTIMATUM, NoticeKind.SUSPENDED)
        suspension_at = policy.suspension_at(ledger, self._windowed) if announces_cut else None
        return NoticeRequest(
            idempotency_key=f"{workflow.info().workflow_id}/{queued.step}",
            kind=queued.kind,
            invoice_id=invoice.invoice_id,
            customer_id=invoice.customer_id,
            to_name=invoice.contact.name,
            to_email=invoice.contact.email,
            language=invoice.language,
            time_zone=invoice.time_zone,
            currency=invoice.currency,
            invoice_amount_minor=invoice.amount_minor,
            fees=list(ledger.fees),
            paid_minor=ledger.paid_minor,
            credited_minor=ledger.credited_minor + ledger.discount_minor + ledger.written_off_minor,
            balance_minor=ledger.balance_minor,
            issue_date=invoice.issue_date,
            due_date=invoice.due_date,
            suspension_at=suspension_at,
            discount_minor=policy.discount_available(ledger, now) or ledger.discount_minor,
            discount_until=policy.discount_deadline(invoice),
            detail=queued.detail,
            country=invoice.country,
            days_overdue=policy.days_overdue(invoice, now),
            late_fee_percent_per_month=terms.late_fee_percent_per_month,
            fixed_late_fee_minor=terms.fixed_late_fee_minor,
            payment_minor=queued.amount_minor if queued.kind == NoticeKind.RECEIPT else 0,
            credit_minor=queued.amount_minor if queued.kind == NoticeKind.DISPUTE_RESOLVED else 0,
            instalments=list(queued.instalments),
            missed_instalment=queued.number,
            remote_disconnect=terms.remote_disconnect_authorized and bool(terms.equipment_ids),
            service=invoice.service,
        )

    def _queue_notice(self, kind: NoticeKind, detail: str = "", **facts: Any) -> None:
        self.ledger.notices_queued += 1
        step = f"{self.ledger.notices_queued:04d}-{kind.value}"
        self.ledger.outbox.append(QueuedNotice(kind=kind, step=step, detail=detail, **facts))

    def _event(self, kind: EventKind, /, **data: object) -> None:
        ledger = self.ledger
        ledger.pending_events.append(
            DomainEvent(
                invoice_id=self.invoice.invoice_id,
                sequence=ledger.next_sequence,
                kind=kind,
                occurred_at=workflow.now(),
                data=data,
            )
        )
        ledger.next_sequence += 1

    def _publish(self, step: Step | None) -> None:
        """Upsert the search attributes that changed and describe the state for the UI."""
        ledger, invoice, now = self.ledger, self.invoice, workflow.now()
        updates = [
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
        balance = format_money(ledger.balance_minor, invoice.currency)
        lines = [f"**{ledger.state.value.replace('_', ' ').capitalize()}**: {balance} due"]
        if step:
            lines.append(f"Next: {step.label.replace('_', ' ')} at {step.at.isoformat(timespec='minutes')}")
        elif ledger.dispute:
            lines.append(f"Waiting: dispute open since {ledger.dispute.opened_at:%Y-%m-%d} ({ledger.dispute.reason})")
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
        workflow.set_current_details("\n\n".join(lines))

    def _changed(self) -> None:
        """Called by every handler that changed state: republish and wake the run loop.

        A request delivered with the start runs before the loop: it only wakes it, and the loop
        publishes (a search-attribute upsert ahead of the update's acceptance would not replay).
        """
        if self._running:
            self._publish(self._next_step())
        self._wake = True

    # --- payments --------------------------------------------------------------------------

    def _payment_problem(self, payment: Payment) -> ApplicationError | None:
        """Why this payment cannot be recorded (None if it can, or if it already was, identically)."""
        ledger, invoice = self.ledger, self.invoice
        known = ledger.payments.get(payment.payment_id)
        if known is not None:
            if known != payment.amount_minor:
                return _refusal(
                    "PaymentConflict",
                    f"payment {payment.payment_id} was already recorded with amount {self._money(known)},"
                    f" not {self._money(payment.amount_minor)}",
                )
            return None
        if ledger.escalation.closed:
            return _refusal(
                "InvoiceClosed", f"invoice {invoice.invoice_id} is {ledger.escalation.value}: no further payments are accepted"
            )
        if payment.currency != invoice.currency:
            return _refusal(
                "WrongCurrency", f"payment currency {payment.currency} does not match invoice currency {invoice.currency}"
            )
        return None

    def _apply_payment(self, payment: Payment) -> int:
        ledger, now = self.ledger, workflow.now()
        if payment.payment_id in ledger.payments:
            return ledger.balance_minor
        ledger.payments[payment.payment_id] = payment.amount_minor
        self._event(
            EventKind.PAYMENT_RECORDED,
            payment_id=payment.payment_id,
            amount_minor=payment.amount_minor,
            received_at=(payment.received_at or now).isoformat(),
            balance_minor=ledger.balance_minor,
        )
        ledger.remember(now, f"Payment {payment.payment_id}: {format_money(payment.amount_minor, payment.currency)}")
        discount = policy.discount_available(ledger, now)
        if discount and ledger.net_minor - discount <= 0:
            ledger.discount_minor = discount
            self._event(EventKind.DISCOUNT_APPLIED, amount_minor=discount)
            ledger.remember(now, f"Early-payment discount applied: {format_money(discount, payment.currency)}")
        if ledger.net_minor <= 0:
            if ledger.overpaid_minor:
                self._event(EventKind.OVERPAYMENT_CREDITED, amount_minor=ledger.overpaid_minor)
            settled = ledger.legal_decision == LegalDecision.SETTLE
            self._close(InvoiceState.SETTLED if settled else InvoiceState.PAID)
        self._queue_notice(NoticeKind.RECEIPT, detail=payment.payment_id, amount_minor=payment.amount_minor)
        self._changed()
        return ledger.balance_minor

    def _reject_payment(self, reason: str, payload: dict | str) -> None:
        """Record a payment that cannot be applied, with its reason and what was sent (untrusted text made storable)."""
        reason = _storable(reason)
        payload = _storable(payload) if isinstance(payload, str) else payload
        self.ledger.rejected_payments += 1
        self._event(EventKind.PAYMENT_REJECTED, reason=reason, payload=payload)
        self.ledger.remember(workflow.now(), f"Payment rejected: {reason}")
        self._changed()

    def _close(self, state: InvoiceState) -> None:
        ledger = self.ledger
        ledger.escalation = state
        ledger.dispute = None
        ledger.plan = None
        # a piece that was never cut needs nothing more from ops once the invoice is closed
        ledger.equipment_failed = {k: v for k, v in ledger.equipment_failed.items() if k in ledger.equipment_cut}
        self._event(
            EventKind.INVOICE_CLOSED,
            state=state.value,
            paid_minor=ledger.paid_minor,
            fees_minor=ledger.fees_minor,
            written_off_minor=ledger.written_off_minor,
            overpaid_minor=ledger.overpaid_minor,
        )
        ledger.remember(workflow.now(), f"Invoice closed: {state.value.replace('_', ' ')}")

    # --- handlers --------------------------------------------------------------------------

    @workflow.update
    def record_payment(self, payment: Payment) -> int:
        """Record a payment; returns the new balance in minor units. Idempotent by payment id."""
        return self._apply_payment(payment)

    @record_payment.validator
    def _validate_payment(self, payment: Payment) -> None:
        if problem := self._payment_problem(payment):
            raise problem

    @workflow.signal(dynamic=True, description=f"{PAYMENT_SIGNAL}: a payment, fire-and-forget (any other name is dropped)")
    def signal_received(self, name: str, args: Sequence[RawValue]) -> None:
        """Every signal, whatever its name or its arguments, so none can fail a workflow task.

        ``payment_received`` (one ``Payment``) records a payment; its arguments are decoded here,
        so a bad one is recorded as rejected, never lost. Any other name is logged and dropped.
        """
        if name != PAYMENT_SIGNAL:
            workflow.logger.warning("dropped a signal named %r: this workflow only takes %r", name[:200], PAYMENT_SIGNAL)
            return
        if len(args) != 1:
            carried = f"{len(args)} arguments, not one payment" if args else "no payment"
            self._reject_payment(f"malformed payment: the signal carried {carried}", " | ".join(map(_raw_text, args)))
            return
        raw = args[0]
        raw_text = _raw_text(raw)
        try:
            payment = workflow.payload_converter().from_payload(raw.payload, Payment)
        except Exception as err:  # noqa: BLE001 - any decoding failure is a rejected payment, not a task failure
            self._reject_payment(f"malformed payment: {_one_line(err)}", raw_text)
            return
        if not isinstance(payment, Payment):  # a null or binary payload decodes to None or bytes, unchecked
            self._reject_payment(f"malformed payment: not a payment object but {type(payment).__name__}", raw_text)
            return
        if problem := self._payment_problem(payment):
            self._reject_payment(problem.message, payment.model_dump(mode="json"))
            return
        self._apply_payment(payment)

    @workflow.update
    def open_dispute(self, dispute: OpenDispute) -> InvoiceStatus:
        """The client disputes the invoice: escalation pauses until the dispute is resolved."""
        now = workflow.now()
        self.ledger.dispute = Dispute(opened_at=now, reason=dispute.reason)
        self._event(EventKind.DISPUTE_OPENED, reason=dispute.reason)
        self.ledger.remember(now, f"Dispute opened: {dispute.reason}")
        self._queue_notice(NoticeKind.DISPUTE_OPENED)
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
        ledger.paused += now - ledger.dispute.opened_at
        ledger.dispute = None
        ledger.credited_minor += resolution.credit_minor
        self._event(
            EventKind.DISPUTE_RESOLVED,
            outcome=resolution.outcome.value,
            credit_minor=resolution.credit_minor,
            note=resolution.note,
        )
        ledger.remember(now, f"Dispute {resolution.outcome.value}")
        self._queue_notice(
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
        ledger.plan = PlanInProgress(
            plan=plan, agreed_at=now, settled_at_agreement_minor=ledger.paid_minor + ledger.credited_minor
        )
        self._event(EventKind.PAYMENT_PLAN_AGREED, plan=plan.model_dump(mode="json"))
        ledger.remember(now, f"Payment plan agreed: {len(plan.instalments)} instalment(s)")
        self._queue_notice(NoticeKind.PLAN_AGREED, instalments=plan.instalments)
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
        self._event(EventKind.INVOICE_RESENT, balance_minor=self.ledger.balance_minor)
        self.ledger.remember(workflow.now(), "Invoice re-sent on request")
        self._queue_notice(NoticeKind.INVOICE_ISSUED, detail="resend")
        self._changed()

    @resend_invoice.validator
    def _validate_resend(self) -> None:
        self._require_open()

    @workflow.update
    def decide_legal(self, decision: DecideLegal) -> InvoiceStatus:
        """A human's decision at legal review: sue, settle for an amount, write off, or back to agency."""
        ledger, now = self.ledger, workflow.now()
        ledger.legal_decision = decision.decision
        self._event(
            EventKind.LEGAL_DECISION,
            decision=decision.decision.value,
            settle_amount_minor=decision.settle_amount_minor,
            note=decision.note,
            balance_minor=ledger.balance_minor,
        )
        ledger.remember(now, f"Legal decision: {decision.decision.value.replace('_', ' ')}")
        if decision.decision == LegalDecision.SUE:
            ledger.escalation = InvoiceState.LEGAL_ACTION
        elif decision.decision == LegalDecision.SETTLE:
            assert decision.settle_amount_minor is not None
            ledger.written_off_minor += ledger.balance_minor - decision.settle_amount_minor
            ledger.escalation = InvoiceState.LEGAL_ACTION
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
        self._event(
            EventKind.INVOICE_FACTORED,
            factor=factoring.factor,
            advance_minor=factoring.advance_minor,
            balance_minor=ledger.balance_minor,
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
            raise ApplicationError(f"invoice is {self.ledger.escalation.value}", type="InvoiceClosed")

    @workflow.query
    def status(self) -> InvoiceStatus:
        """State, amounts, next action and the story so far."""
        ledger, invoice, now = self.ledger, self.invoice, workflow.now()
        step = self._next_step()
        return InvoiceStatus(
            invoice_id=invoice.invoice_id,
            customer_id=invoice.customer_id,
            state=ledger.state,
            time_zone=invoice.time_zone,
            currency=invoice.currency,
            amount_minor=invoice.amount_minor,
            fees_minor=ledger.fees_minor,
            paid_minor=ledger.paid_minor,
            credited_minor=ledger.credited_minor + ledger.discount_minor,
            written_off_minor=ledger.written_off_minor,
            balance_minor=ledger.balance_minor,
            overpaid_minor=ledger.overpaid_minor,
            days_overdue=policy.days_overdue(invoice, now),
            disputed=ledger.dispute is not None,
            on_payment_plan=ledger.plan is not None,
            rejected_payments=ledger.rejected_payments,
            next_action=NextAction(what=step.label, at=step.at) if step else None,
            discount_available_minor=policy.discount_available(ledger, now),
            legal_summary=policy.legal_summary(ledger, now) if ledger.escalation == InvoiceState.LEGAL_REVIEW else None,
            actions=list(ledger.actions),
        )


def _refusal(kind: str, message: str) -> ApplicationError:
    """An update validator's refusal; ``kind`` is the error type callers switch on."""
    return ApplicationError(message, type=kind, non_retryable=True)


def _one_line(err: Exception) -> str:
    return " ".join(str(err).split())[:500]


def _started_with() -> list | None:
    """The search attributes the run started with, in ``_publish``'s form (an absent keyword list is an
    empty one); None unless every attribute is there. Read from the start event, so a replay sees the same."""
    started = workflow.info().typed_search_attributes
    values = []
    for key in sa.ALL:
        value = started.get(key)
        if value is None and key.indexed_value_type == SearchAttributeIndexedValueType.KEYWORD_LIST:
            value = []
        if value is None:
            return None
        values.append(key.value_set(value))
    return values


def _raw_text(raw: RawValue) -> str:
    return raw.payload.data.decode("utf-8", errors="replace")[:2000]


def _storable(text: str) -> str:
    """Untrusted text as the event log can keep it: PostgreSQL refuses NUL in text and jsonb."""
    return text.replace("\x00", "\ufffd")
