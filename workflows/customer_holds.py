"""The invoice's side of its customer's holds: at suspension it asks the customer workflow to hold the
support-and-orders block and its equipment, when it closes it releases them, and it records what the
customer answered as its own events and story (the same events as when each invoice cut alone).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow

from workflows import contracts
from workflows.events import (
    EquipmentRestored,
    EquipmentSuspended,
    RestoreFailed,
    ServiceChanged,
    ServiceRestored,
    ServiceSuspended,
    SuspendFailed,
)
from workflows.holds import HoldOutcome, HoldRequest, PieceOutcome, ReleaseRequest, equipment_piece, service_piece
from workflows.models import EquipmentResult, NoticeKind
from workflows.outbox import IO_RETRY, Outbox
from workflows.patches import closed_meanwhile

# the customer answers once its equipment reads back as cut or restored, or its retries gave up
CUSTOMER_ANSWER_TIMEOUT = timedelta(hours=2)
CUSTOMER_HEARTBEAT = timedelta(minutes=1)


class CustomerHolds:
    """Suspends and restores an invoice's service through its customer workflow; state in the ledger."""

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox
        self.ledger = outbox.ledger

    async def suspend(self) -> None:
        """Hold the block, then (where authorised, and unless the invoice closed meanwhile) the equipment."""
        ledger, invoice = self.ledger, self.ledger.invoice
        terms = invoice.terms
        answer = await self._ask_hold(self._hold("hold-service", block_service=True))
        ledger.suspended = ledger.held_at_customer = True
        block = answer.piece(service_piece(invoice.service))
        self.outbox.record(self._service_event(ServiceSuspended, blocked=True))
        others = [h for h in block.held_by if h != invoice.invoice_id] if block else []
        also = f" (already blocked for invoice {', '.join(others)})" if others else ""
        ledger.remember(workflow.now(), f"Service suspended: support and new orders blocked{also}")
        if terms.remote_disconnect_authorized and terms.equipment_ids and not closed_meanwhile(ledger):
            answer = await self._ask_hold(self._hold("hold-equipment", block_service=False))
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
        answer = await self._ask_release(request)
        for equipment_id in list(ledger.equipment_cut):
            piece = answer.piece(equipment_piece(equipment_id))
            if piece is not None:
                self._record_restore(piece)
        block = answer.piece(service_piece(invoice.service))
        holders = block.held_by if block is not None and block.cut else None
        ledger.suspended = ledger.held_at_customer = False
        self.outbox.record(self._service_event(ServiceRestored, blocked=holders is not None))
        if holders is not None:
            ledger.remember(now, f"Service stays suspended: invoice {', '.join(holders) or '(none)'} still holds it")
            return
        ledger.remember(now, "Service restored")
        self.outbox.queue_notice(NoticeKind.RESTORED)

    def _record_cut(self, piece: PieceOutcome) -> None:
        ledger, now = self.ledger, workflow.now()
        equipment_id = piece.equipment_id
        assert equipment_id is not None
        if piece.cut and piece.result is not None:
            result = piece.result.model_copy(update={"changed": piece.result.changed and piece.changed_now})
            self.outbox.record(_equipment_event(EquipmentSuspended, result))
            ledger.equipment_failed.pop(equipment_id, None)
            ledger.equipment_cut.append(equipment_id)
            others = ", ".join(h for h in piece.held_by if h != ledger.invoice.invoice_id) or "another"
            how = "cut" if piece.changed_now else f"already cut for invoice {others}"
            ledger.remember(now, f"Equipment {equipment_id} {how}: {result.state}")
        else:
            self.outbox.record(SuspendFailed(equipment_id=equipment_id, error=piece.error))
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
            self.outbox.record(_equipment_event(EquipmentRestored, piece.result))
            ledger.equipment_failed.pop(equipment_id, None)
            ledger.equipment_cut.remove(equipment_id)
            ledger.remember(now, f"Equipment {equipment_id} restored: {piece.result.state}")
        else:
            self.outbox.record(RestoreFailed(equipment_id=equipment_id, error=piece.error))
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

    def _service_event(self, kind: type[ServiceChanged], *, blocked: bool) -> ServiceChanged:
        terms, invoice = self.ledger.invoice.terms, self.ledger.invoice
        return kind(
            support_and_orders_blocked=blocked,
            remote_disconnect_authorized=terms.remote_disconnect_authorized,
            equipment_ids=list(terms.equipment_ids) if terms.remote_disconnect_authorized else [],
            service=invoice.service,
        )

    async def _ask_hold(self, request: HoldRequest) -> HoldOutcome:
        return await workflow.execute_activity_method(
            contracts.Customers.hold_at_customer, request, **_asking(f"Hold at customer {request.customer_id}")
        )

    async def _ask_release(self, request: ReleaseRequest) -> HoldOutcome:
        return await workflow.execute_activity_method(
            contracts.Customers.release_at_customer, request, **_asking(f"Release at customer {request.customer_id}")
        )


def _asking(summary: str) -> dict[str, Any]:
    """An activity that asks the customer's workflow and waits for its answer (heartbeating meanwhile)."""
    return {
        "start_to_close_timeout": CUSTOMER_ANSWER_TIMEOUT,
        "heartbeat_timeout": CUSTOMER_HEARTBEAT,
        "retry_policy": IO_RETRY,
        "summary": summary,
    }


def _equipment_event(kind: type[EquipmentSuspended] | type[EquipmentRestored], result: EquipmentResult) -> EquipmentSuspended | EquipmentRestored:
    """The invoice's event for what the customer's adapter read back."""
    return kind(equipment_id=result.equipment_id, changed=result.changed, state=result.state, dry_run=result.dry_run)
