"""CustomerWorkflow: one long-lived workflow per customer, ``customer-<customer id>``, owning what its invoices share.

Invoices stay the unit of escalation; an invoice at suspension asks its customer (``hold``) to
hold the support-and-orders block and its equipment, and releases them when it closes
(``release``). Each piece is cut when the first invoice holds it and restored when none holds it
any more; the keys of those actions name the customer workflow (its id and first run), the piece
and the hold generation, so a retry or a replay never acts twice. Ops may pause every escalation of the
customer's invoices and keep its equipment out of automatic cuts (``pause``, ``resume``, ``set_cuts``:
``workflows.customer_ops``). Started on demand by update-with-start (``activities.customer``,
``client.customers``); it continues as new when Temporal suggests it, carrying its ledger.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RawValue
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from workflows import contracts
    from workflows.cash import CUSTOMER_PAYMENT_SIGNAL, CashBook, CustomerPayment, InvoiceOpened, PaymentApplication
    from workflows.customer_control import CustomerControl, CutsRequest, PauseCustomer, ResumeCustomer
    from workflows.customer_notices import CustomerNotices
    from workflows.customer_ops import OpsDesk
    from workflows.customer_payments import CashDesk
    from workflows.customer_view import CustomerPublisher
    from workflows.digests import CustomerNoticeOutcome, NoticeAsked, NoticeTicket
    from workflows.holds import CustomerLedger, CustomerWorkflowInput, HoldOutcome, HoldRequest, Piece, ReleaseRequest
    from workflows.models import (
        EquipmentRequest,
        EquipmentResult,
        NoticeRequest,
        ServiceAction,
    )
    from workflows.outbox import IO_RETRY, one_line
    from workflows.suspension import change_equipment


@workflow.defn
class CustomerWorkflow:
    """Holds and releases a customer's service and equipment for its invoices; never completes on its own."""

    @workflow.init
    def __init__(self, params: CustomerWorkflowInput) -> None:
        self.ledger = params.carried or CustomerLedger(customer_id=params.customer_id)
        self._history_limit = params.history_limit
        self._publisher = CustomerPublisher()
        self._changed = False  # a handler changed the ledger: the loop republishes
        self._cash = CashDesk(self.ledger)
        self._digest_gathering = params.digest_gathering
        self._notices = CustomerNotices(self.ledger, params.digest_gathering)
        self._ops = OpsDesk(self.ledger)

    @workflow.run
    async def run(self, params: CustomerWorkflowInput) -> None:
        while True:
            self._ops.end_if_due()
            self._changed = False
            self._publisher.publish(self.ledger)
            try:
                await workflow.wait_condition(
                    lambda: self._changed
                    or bool(self.ledger.pending)
                    or self.ledger.cash.busy
                    or bool(self.ledger.control.to_tell)
                    or self._history_is_long(),
                    timeout=self._ops.pause_left(),  # None unless ops paused the customer until a date
                    timeout_summary="pause ends",
                )
            except TimeoutError:
                continue
            if self._changed:
                continue
            if self.ledger.pending:
                await self._reconcile()
                continue
            if self.ledger.control.to_tell:
                await self._ops.tell()
                continue
            if self.ledger.cash.busy:
                await self._cash.work()
                continue
            # a hold or a payment that arrives meanwhile waits for its cut or split: serve it first
            await workflow.wait_condition(
                lambda: workflow.all_handlers_finished()
                or bool(self.ledger.pending)
                or self.ledger.cash.busy
                or bool(self.ledger.control.to_tell)
            )
            if not self.ledger.pending and not self.ledger.cash.busy and not self.ledger.control.to_tell:
                workflow.continue_as_new(
                    CustomerWorkflowInput(
                        customer_id=self.ledger.customer_id,
                        carried=self.ledger,
                        history_limit=self._history_limit,
                        digest_gathering=self._digest_gathering,
                    )
                )

    def _history_is_long(self) -> bool:
        info = workflow.info()
        return info.is_continue_as_new_suggested() or info.get_current_history_length() >= self._history_limit

    async def _reconcile(self) -> None:
        """Cut what is newly held and restore what nobody holds: blocks are cut before equipment and
        lifted after it, as a single invoice always did."""
        pending = self.ledger.pending
        cut_blocks = [p for p in pending if not p.equipment_id and p.holders]
        equipment = [p for p in pending if p.equipment_id]
        lift_blocks = [p for p in pending if not p.equipment_id and not p.holders]
        for group in (cut_blocks, equipment, lift_blocks):
            await asyncio.gather(*(self._act(piece) for piece in group))

    async def _act(self, piece: Piece) -> None:
        if not self.ledger.to_act(piece):  # a release (or hold) while an earlier group acted made it right already
            return
        cutting = bool(piece.holders)
        if cutting:
            piece.generation += 1
            piece.cut_for = piece.holders[-1]  # the hold that asked for this cut (the first, but after a failed one)
        verb = "suspend" if cutting else "restore"
        info = workflow.info()  # the first run id: a customer workflow started again after a termination acts anew
        key = f"{info.workflow_id}/{info.first_execution_run_id}/{piece.name}/{'cut' if cutting else 'restore'}-{piece.generation}"
        by = piece.cut_for if cutting else piece.released_by
        piece.acting = True
        try:
            if piece.equipment_id:
                piece.result = await self._equipment(verb, key, piece)
            else:
                await self._block(verb, key, piece)
        except ActivityError as err:  # its retries gave up (or it was cancelled): the piece waits for ops or the next request
            piece.error, piece.stuck = one_line(err.cause or err), True
            self.ledger.remember(workflow.now(), f"{piece.name}: {verb} FAILED ({piece.error})")
            return
        finally:
            piece.acting = False
        piece.cut, piece.error, piece.changed_by = cutting, "", by
        state = f": {piece.result.state}" if piece.equipment_id and piece.result else ""
        what = f"cut for invoice {by}" if cutting else f"restored: invoice {by} was the last to hold it"
        self.ledger.remember(workflow.now(), f"{piece.name} {what}{state}")

    async def _equipment(self, verb: str, key: str, piece: Piece) -> EquipmentResult:
        assert piece.equipment_id is not None and piece.cut_for is not None
        holders = ", ".join(piece.holders)
        request = EquipmentRequest(
            idempotency_key=key,
            equipment_id=piece.equipment_id,
            customer_id=self.ledger.customer_id,
            invoice_id=piece.cut_for,
            reason=(f"invoices {holders} unpaid" if verb == "suspend" else "no invoice holds it any more")[:200],
            requested_by=f"workflow {workflow.info().workflow_id} for invoice {piece.cut_for}"[:200],
        )
        return await change_equipment(verb, request)

    async def _block(self, verb: str, key: str, piece: Piece) -> None:
        """The support-and-orders block is a recorded decision, under the invoice whose hold started it."""
        assert piece.cut_for is not None
        await workflow.execute_activity_method(
            contracts.Service.suspend_service if verb == "suspend" else contracts.Service.restore_service,
            ServiceAction(
                idempotency_key=key,
                customer_id=self.ledger.customer_id,
                invoice_id=piece.cut_for,
                remote_disconnect_authorized=piece.remote_disconnect_authorized,
                equipment_ids=piece.equipment_ids,
                reason=(f"invoices {', '.join(piece.holders)} unpaid" if verb == "suspend" else "no invoice holds it any more"),
            ),
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=IO_RETRY,
            summary=f"{verb.capitalize()} {piece.name.replace(':', ' ')} of customer {self.ledger.customer_id}",
        )

    # --- handlers --------------------------------------------------------------------------

    @workflow.update
    async def hold(self, request: HoldRequest) -> HoldOutcome:
        """An invoice at suspension holds pieces; answers once the first hold of each piece has cut it (or failed)."""
        if request.idempotency_key in self.ledger.answers:
            return self.ledger.answers[request.idempotency_key]
        names = self.ledger.take_hold(request)
        self._changed = True
        self.ledger.remember(workflow.now(), f"Invoice {request.invoice_id} holds {', '.join(names) or 'nothing'}")
        if kept := self._ops.excluded(names):
            self.ledger.remember(workflow.now(), f"{', '.join(kept)} not cut: ops excluded the customer from automatic cuts")
        await workflow.wait_condition(lambda: self.ledger.settled(names))
        self._changed = True
        return self.ledger.answer(request.idempotency_key, self.ledger.outcome(names, request.invoice_id))

    @hold.validator
    def _validate_hold(self, request: HoldRequest) -> None:
        self._require_mine(request.customer_id)
        if not request.block_service and not request.equipment_ids:
            raise ApplicationError("a hold names the service block or some equipment", type="InvalidRequest")

    @workflow.update
    async def release(self, request: ReleaseRequest) -> HoldOutcome:
        """A closed invoice releases what it held; answers once what nobody holds any more is restored (or failed)."""
        if request.idempotency_key in self.ledger.answers:
            return self.ledger.answers[request.idempotency_key]
        names = self.ledger.drop_hold(request)
        self._changed = True
        self.ledger.remember(workflow.now(), f"Invoice {request.invoice_id} closed ({request.state.value}): releases {', '.join(names) or 'nothing'}")
        await workflow.wait_condition(lambda: self.ledger.settled(names))
        self._changed = True
        return self.ledger.answer(request.idempotency_key, self.ledger.outcome(names, request.invoice_id))

    @release.validator
    def _validate_release(self, request: ReleaseRequest) -> None:
        self._require_mine(request.customer_id)

    @workflow.update
    def take_stage_notice(self, notice: NoticeRequest) -> NoticeTicket:
        """An invoice's stage notice, gathered with the others of its sending window; says when they go out."""
        return self._notices.take(notice)

    @take_stage_notice.validator
    def _validate_stage_notice(self, notice: NoticeRequest) -> None:
        self._notices.validate(notice)

    @workflow.update
    async def stage_notice_sent(self, asked: NoticeAsked) -> CustomerNoticeOutcome:
        """How a stage notice went out, alone or in a digest; answers once it did (``customer_notices``)."""
        return await self._notices.outcome(asked.idempotency_key)

    @stage_notice_sent.validator
    def _validate_notice_asked(self, asked: NoticeAsked) -> None:
        self._notices.validate_asked(asked)

    @workflow.update
    async def record_payment(self, payment: CustomerPayment) -> PaymentApplication:
        """A payment to the customer: split across its open invoices (the remittance's first, then oldest due),
        the rest kept as credit; answers once every part reached its invoice. Idempotent by payment id."""
        if problem := self._cash.conflict(payment):  # a payment with this id arrived since validation
            raise problem
        application = self._cash.take(payment)
        self._changed = True
        await workflow.wait_condition(lambda: application.done)
        return application

    @record_payment.validator
    def _validate_payment(self, payment: CustomerPayment) -> None:
        self._require_mine(payment.customer_id)
        if problem := self._cash.conflict(payment):
            raise problem

    @workflow.signal(name=CUSTOMER_PAYMENT_SIGNAL)
    def payment_received(self, payment: RawValue) -> None:
        """A payment, fire-and-forget: decoded here, so a malformed one is rejected in the story, never a task failure."""
        decoded = self._cash.decode(payment)
        if isinstance(decoded, str):
            self._cash.reject(decoded)
        else:
            self._cash.take(decoded)
        self._changed = True

    @workflow.signal
    def invoice_opened(self, opened: InvoiceOpened) -> None:
        """An invoice of the customer was started: it is open, and takes the customer's credit, if any."""
        if opened.customer_id != self.ledger.customer_id:
            workflow.logger.warning("invoice %s of customer %s dropped", opened.invoice.invoice_id, opened.customer_id)
            return
        self._cash.opened(opened.invoice)
        self._ops.opened(opened.invoice.invoice_id)
        self._changed = True

    @workflow.update
    def pause(self, request: PauseCustomer) -> CustomerControl:
        """Ops pause every escalation of the customer's invoices (with who and why), until ``resume`` or the until-date."""
        control = self._ops.pause(request)
        self._changed = True
        return control

    @pause.validator
    def _validate_pause(self, request: PauseCustomer) -> None:
        self._require_mine(request.customer_id)
        self._ops.check_pause(request)

    @workflow.update
    def resume(self, request: ResumeCustomer) -> CustomerControl:
        """Ops end the customer's pause now; its invoices' steps come later by the pause's length."""
        control = self._ops.resume(request)
        self._changed = True
        return control

    @resume.validator
    def _validate_resume(self, request: ResumeCustomer) -> None:
        self._require_mine(request.customer_id)

    @workflow.update
    def set_cuts(self, request: CutsRequest) -> CustomerControl:
        """Ops keep the customer's equipment out of automatic cuts, or put it back in (suspension still blocks
        support and orders)."""
        control = self._ops.set_cuts(request)
        self._changed = True
        return control

    @set_cuts.validator
    def _validate_cuts(self, request: CutsRequest) -> None:
        self._require_mine(request.customer_id)

    @workflow.query
    def cash(self) -> CashBook:
        """The customer's payments, how each was split, and its credit."""
        return self.ledger.cash

    @workflow.query
    def control(self) -> CustomerControl:
        """What ops decided about the customer: its pause, its exclusion from cuts, and the decisions with who and why."""
        return self.ledger.control

    @workflow.query
    def holds(self) -> CustomerLedger:
        """Every piece, who holds it and what was done to it; the customer's story."""
        return self.ledger

    def _require_mine(self, customer_id: str) -> None:
        if customer_id != self.ledger.customer_id:
            raise ApplicationError(
                f"customer {customer_id} asked workflow {workflow.info().workflow_id}", type="InvalidRequest"
            )

