"""Suspending and restoring a client's service: the support-and-orders block, then each piece of equipment."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

from workflows import contracts
from workflows.customer_holds import CustomerHolds
from workflows.events import (
    EquipmentRestored,
    EquipmentSuspended,
    RestoreFailed,
    ServiceRestored,
    ServiceSuspended,
    SuspendFailed,
)
from workflows.models import (
    EQUIPMENT_ACTIVITY_TIMEOUT,
    EquipmentRequest,
    EquipmentResult,
    NoticeKind,
    ServiceAction,
    ServiceChange,
)
from workflows.outbox import IO_RETRY, Outbox, one_line
from workflows.patches import PATCH_CUSTOMER_HOLDS, PATCH_EQUIPMENT, closed_meanwhile

# a piece of equipment still unreachable after about half an hour of tries is reported, not waited for
EQUIPMENT_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=5),
    maximum_interval=timedelta(minutes=10),
    maximum_attempts=6,
    non_retryable_error_types=["EquipmentRefused", "KillSwitchOn"],
)


async def change_equipment(verb: str, request: EquipmentRequest) -> EquipmentResult:
    """Cut (``suspend``) or restore one piece of equipment through its adapter, retried as ``EQUIPMENT_RETRY`` says."""
    change = contracts.Equipment.suspend_equipment if verb == "suspend" else contracts.Equipment.restore_equipment
    return await workflow.execute_activity_method(
        change,
        request,
        start_to_close_timeout=EQUIPMENT_ACTIVITY_TIMEOUT,
        heartbeat_timeout=timedelta(minutes=1),
        retry_policy=EQUIPMENT_RETRY,
        summary=f"{verb.capitalize()} equipment {request.equipment_id}",
    )


class Suspension:
    """The suspend rung's work and its undoing when the invoice closes; state in the ledger, output via the outbox."""

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox
        self.ledger = outbox.ledger
        self.customer = CustomerHolds(outbox)

    async def suspend(self) -> None:
        """Block support and orders, then cut each authorised piece of equipment (through the customer
        workflow since ``customer-holds``; runs started before it keep acting alone)."""
        if workflow.patched(PATCH_CUSTOMER_HOLDS):
            await self.customer.suspend()
            return
        result = await self._service_activity("suspend")
        self.ledger.suspended = True
        self.outbox.record(ServiceSuspended.after(result, self.ledger.invoice.service))
        self.ledger.remember(workflow.now(), "Service suspended: support and new orders blocked")
        terms = self.ledger.invoice.terms
        if (
            terms.remote_disconnect_authorized
            and terms.equipment_ids
            and workflow.patched(PATCH_EQUIPMENT)
            and not closed_meanwhile(self.ledger)
        ):
            await self._change_equipment("suspend", list(terms.equipment_ids))

    async def restore(self) -> None:
        """Restore each piece of equipment that was cut (and only those), then lift the block."""
        if self.ledger.held_at_customer:
            await self.customer.release()
            return
        if self.ledger.equipment_cut and workflow.patched(PATCH_EQUIPMENT):
            await self._change_equipment("restore", list(self.ledger.equipment_cut))
        result = await self._service_activity("restore")
        self.ledger.suspended = False
        self.outbox.record(ServiceRestored.after(result, self.ledger.invoice.service))
        self.ledger.remember(workflow.now(), "Service restored")
        self.outbox.queue_notice(NoticeKind.RESTORED)

    async def _service_activity(self, verb: str) -> ServiceChange:
        change = contracts.Service.suspend_service if verb == "suspend" else contracts.Service.restore_service
        return await workflow.execute_activity_method(
            change,
            self._service_action(verb),
            start_to_close_timeout=timedelta(seconds=30),  # database rows only: a dead worker's task retries soon
            retry_policy=IO_RETRY,
            summary=f"{verb.capitalize()} support and orders of customer {self.ledger.invoice.customer_id}",
        )

    async def _change_equipment(self, verb: str, equipment_ids: list[str]) -> None:
        """One activity per piece, in parallel; a piece that stays unreachable is reported, not waited for."""
        outcomes = await asyncio.gather(*(self._one_equipment(verb, eid) for eid in equipment_ids))
        ledger, now = self.ledger, workflow.now()
        for equipment_id, result, error in outcomes:
            if result is not None:
                changed = EquipmentSuspended if verb == "suspend" else EquipmentRestored
                self.outbox.record(
                    changed(equipment_id=result.equipment_id, changed=result.changed, state=result.state, dry_run=result.dry_run)
                )
                ledger.equipment_failed.pop(equipment_id, None)
                if verb == "suspend":
                    ledger.equipment_cut.append(equipment_id)
                else:
                    ledger.equipment_cut.remove(equipment_id)
                ledger.remember(now, f"Equipment {equipment_id} {'cut' if verb == 'suspend' else 'restored'}: {result.state}")
            else:
                failed = SuspendFailed if verb == "suspend" else RestoreFailed
                self.outbox.record(failed(equipment_id=equipment_id, error=error))
                ledger.equipment_failed[equipment_id] = f"{verb} failed: {error}"
                ledger.remember(now, f"Equipment {equipment_id}: {verb} FAILED ({error})")

    async def _one_equipment(self, verb: str, equipment_id: str) -> tuple[str, EquipmentResult | None, str]:
        invoice = self.ledger.invoice
        request = EquipmentRequest(
            idempotency_key=f"{workflow.info().workflow_id}/{verb}-equipment-{equipment_id}",
            equipment_id=equipment_id,
            customer_id=invoice.customer_id,
            invoice_id=invoice.invoice_id,
            reason=f"invoice {invoice.invoice_id} {'unpaid' if verb == 'suspend' else 'settled'}",
            requested_by=f"workflow {workflow.info().workflow_id}",
        )
        try:
            result = await change_equipment(verb, request)
        except ActivityError as err:
            return equipment_id, None, one_line(err.cause or err)
        return equipment_id, result, ""

    def _service_action(self, verb: str) -> ServiceAction:
        invoice = self.ledger.invoice
        terms = invoice.terms
        return ServiceAction(
            idempotency_key=f"{workflow.info().workflow_id}/{verb}-{self.ledger.next_sequence}",
            customer_id=invoice.customer_id,
            invoice_id=invoice.invoice_id,
            remote_disconnect_authorized=terms.remote_disconnect_authorized,
            equipment_ids=list(terms.equipment_ids),
            reason=f"invoice {invoice.invoice_id} {'unpaid' if verb == 'suspend' else 'settled'}",
        )
