"""The invoice's side of its customer's holds: at suspension it asks the customer workflow to hold the
support-and-orders block and its equipment, when it closes it releases them, and it records what the
customer answered as its own events and story (the same events as when each invoice cut alone).
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

from workflows.holds import HoldOutcome, HoldRequest, PieceOutcome, ReleaseRequest, equipment_piece, service_piece
from workflows.models import EventKind, NoticeKind
from workflows.outbox import IO_RETRY, Outbox
from workflows.patches import closed_meanwhile

# the customer answers once its equipment reads back as cut or restored, or its retries gave up
CUSTOMER_ANSWER_TIMEOUT = timedelta(hours=2)


class CustomerHolds:
    """Suspends and restores an invoice's service through its customer workflow; state in the ledger."""

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox
        self.ledger = outbox.ledger

    async def suspend(self) -> None:
        """Hold the block, then (where authorised, and unless the invoice closed meanwhile) the equipment."""
        ledger, invoice = self.ledger, self.ledger.invoice
        terms = invoice.terms
        answer = await self._ask("hold_at_customer", self._hold("hold-service", block_service=True))
        ledger.suspended = ledger.held_at_customer = True
        block = answer.piece(service_piece(invoice.service))
        self.outbox.event(EventKind.SERVICE_SUSPENDED, **self._service_facts(blocked=True))
        others = [h for h in block.held_by if h != invoice.invoice_id] if block else []
        also = f" (already blocked for invoice {', '.join(others)})" if others else ""
        ledger.remember(workflow.now(), f"Service suspended: support and new orders blocked{also}")
        if terms.remote_disconnect_authorized and terms.equipment_ids and not closed_meanwhile(ledger):
            answer = await self._ask("hold_at_customer", self._hold("hold-equipment", block_service=False))
            for piece in answer.pieces:
                self._record_cut(piece)

    async def release(self) -> None:
        """Give back everything held; what nobody else holds the customer restores, and the client hears of it."""
        ledger, invoice, now = self.ledger, self.ledger.invoice, workflow.now()
        request = ReleaseRequest(
            idempotency_key=f"{workflow.info().workflow_id}/release",
            customer_id=invoice.customer_id,
            invoice_id=invoice.invoice_id,
            state=ledger.escalation,
        )
        answer = await self._ask("release_at_customer", request)
        for equipment_id in list(ledger.equipment_cut):
            piece = answer.piece(equipment_piece(equipment_id))
            if piece is not None:
                self._record_restore(piece)
        block = answer.piece(service_piece(invoice.service))
        still_blocked = block is not None and block.cut
        ledger.suspended = ledger.held_at_customer = False
        self.outbox.event(EventKind.SERVICE_RESTORED, **self._service_facts(blocked=still_blocked))
        if still_blocked:
            ledger.remember(now, f"Service stays suspended: invoice {', '.join(block.held_by) or '(none)'} still holds it")
            return
        ledger.remember(now, "Service restored")
        self.outbox.queue_notice(NoticeKind.RESTORED)

    def _record_cut(self, piece: PieceOutcome) -> None:
        ledger, now = self.ledger, workflow.now()
        equipment_id = piece.equipment_id
        assert equipment_id is not None
        if piece.cut and piece.result is not None:
            result = piece.result.model_copy(update={"changed": piece.result.changed and piece.changed_now})
            self.outbox.event(EventKind.EQUIPMENT_SUSPENDED, **result.model_dump(exclude={"action"}))
            ledger.equipment_failed.pop(equipment_id, None)
            ledger.equipment_cut.append(equipment_id)
            others = ", ".join(h for h in piece.held_by if h != ledger.invoice.invoice_id) or "another"
            how = "cut" if piece.changed_now else f"already cut for invoice {others}"
            ledger.remember(now, f"Equipment {equipment_id} {how}: {result.state}")
        else:
            self.outbox.event(EventKind.SUSPEND_FAILED, equipment_id=equipment_id, error=piece.error)
            ledger.equipment_failed[equipment_id] = f"suspend failed: {piece.error}"
            ledger.remember(now, f"Equipment {equipment_id}: suspend FAILED ({piece.error})")

    def _record_restore(self, piece: PieceOutcome) -> None:
        ledger, now = self.ledger, workflow.now()
        equipment_id = piece.equipment_id
        assert equipment_id is not None
        if piece.held_by:
            ledger.equipment_cut.remove(equipment_id)
            ledger.remember(now, f"Equipment {equipment_id} stays cut: invoice {', '.join(piece.held_by)} still holds it")
        elif not piece.cut and piece.result is not None:
            self.outbox.event(EventKind.EQUIPMENT_RESTORED, **piece.result.model_dump(exclude={"action"}))
            ledger.equipment_failed.pop(equipment_id, None)
            ledger.equipment_cut.remove(equipment_id)
            ledger.remember(now, f"Equipment {equipment_id} restored: {piece.result.state}")
        else:
            self.outbox.event(EventKind.RESTORE_FAILED, equipment_id=equipment_id, error=piece.error)
            ledger.equipment_failed[equipment_id] = f"restore failed: {piece.error}"
            ledger.remember(now, f"Equipment {equipment_id}: restore FAILED ({piece.error})")

    def _hold(self, what: str, *, block_service: bool) -> HoldRequest:
        ledger, invoice = self.ledger, self.ledger.invoice
        terms = invoice.terms
        return HoldRequest(
            idempotency_key=f"{workflow.info().workflow_id}/{what}",
            customer_id=invoice.customer_id,
            invoice_id=invoice.invoice_id,
            service=invoice.service,
            block_service=block_service,
            remote_disconnect_authorized=terms.remote_disconnect_authorized,
            equipment_ids=list(terms.equipment_ids),
            due_date=invoice.due_date,
            balance_minor=ledger.balance_minor,
            currency=invoice.currency,
        )

    def _service_facts(self, blocked: bool) -> dict:
        terms, invoice = self.ledger.invoice.terms, self.ledger.invoice
        return {
            "support_and_orders_blocked": blocked,
            "remote_disconnect_authorized": terms.remote_disconnect_authorized,
            "equipment_ids": list(terms.equipment_ids) if terms.remote_disconnect_authorized else [],
            "service": invoice.service,
        }

    async def _ask(self, activity: str, request: HoldRequest | ReleaseRequest) -> HoldOutcome:
        customer = request.customer_id
        return await workflow.execute_activity(
            activity,
            request,
            result_type=HoldOutcome,
            start_to_close_timeout=CUSTOMER_ANSWER_TIMEOUT,
            heartbeat_timeout=timedelta(minutes=1),
            retry_policy=IO_RETRY,
            summary=f"{'Hold' if activity.startswith('hold') else 'Release'} at customer {customer}",
        )

