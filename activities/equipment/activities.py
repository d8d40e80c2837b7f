"""The ``suspend_equipment`` and ``restore_equipment`` activities: the adapters behind the registry,
the kill switches, dry run and the record of every action.

Order of checks for each request: a completed action under the same idempotency key is returned
as it was (a retry never acts twice); an id the registry refuses and a kill switch that is on are
refused without retry and recorded; in dry run the action is recorded, not done; otherwise the
adapter acts and reads back, heartbeating meanwhile. A suspend records the state it found before
cutting (the first reading under its key stays); a restore puts back only what that cut changed.
Transient failures raise, so Temporal retries; failures that a retry cannot mend (credentials,
configuration) are recorded and not retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, NoReturn, TypeVar

import asyncpg
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.equipment.adapter import EquipmentAdapter, EquipmentError
from activities.equipment.journal import (
    DRY_RUN_STATE,
    Outcome,
    completed_action,
    kill_switch_for,
    record_action,
    remember_state_before_cut,
    state_before_cut,
)
from activities.equipment.redfish import RedfishAdapter
from activities.equipment.registry import Equipment, EquipmentRefused, Registry
from activities.equipment.snmp import SnmpAdapter
from activities.equipment.webhook import WebhookAdapter
from workflows import contracts
from workflows.models import EquipmentRequest, EquipmentResult

T = TypeVar("T")
DEFAULT_HEARTBEAT_INTERVAL = timedelta(seconds=5)


ADAPTERS: dict[str, Callable[[Any], EquipmentAdapter]] = {
    "redfish": RedfishAdapter,
    "snmp": SnmpAdapter,
    "webhook": WebhookAdapter,
}


def adapter_for(equipment: Equipment) -> EquipmentAdapter:
    """The adapter that speaks this equipment's protocol."""
    return ADAPTERS[equipment.kind](equipment)


class EquipmentActivities(contracts.Equipment):
    """Cut and restore a customer's equipment, named by registry id only."""

    def __init__(
        self, registry: Registry, pool: asyncpg.Pool, dry_run: bool = False, global_kill_switch: bool = False
    ) -> None:
        self.registry = registry
        self.pool = pool
        self.dry_run = dry_run
        self.global_kill_switch = global_kill_switch

    @activity.defn(name="suspend_equipment")
    async def suspend_equipment(self, request: EquipmentRequest) -> EquipmentResult:
        """Cut one piece of the customer's equipment (idempotent by the request's key)."""
        return await self._carry_out("suspend", request)

    @activity.defn(name="restore_equipment")
    async def restore_equipment(self, request: EquipmentRequest) -> EquipmentResult:
        """Bring one piece of the customer's equipment back (idempotent by the request's key)."""
        return await self._carry_out("restore", request)

    async def _carry_out(self, action: str, request: EquipmentRequest) -> EquipmentResult:
        done = await completed_action(self.pool, request.idempotency_key)
        if done is not None:
            if (done.action, done.equipment_id) != (action, request.equipment_id):
                raise ApplicationError(
                    f"idempotency key {request.idempotency_key!r} was already used"
                    f" to {done.action} {done.equipment_id}",
                    type="IdempotencyKeyReused",
                    non_retryable=True,
                )
            return done
        try:
            equipment = self.registry.resolve(request.equipment_id, request.customer_id)
        except EquipmentRefused as exc:
            await self._refuse(request, action, Outcome.REFUSED, str(exc), "EquipmentRefused")
        kill_switch = await self._kill_switch(request.customer_id)
        if kill_switch:
            await self._refuse(request, action, Outcome.KILL_SWITCH, kill_switch, "KillSwitchOn")

        if self.dry_run:
            what = f"would {action} {equipment.kind} {equipment.id} at {equipment.endpoint}"
            activity.logger.info("dry run: %s for %s (%s)", what, request.requested_by, request.reason)
            await record_action(self.pool, request, action, Outcome.DRY_RUN, dry_run=True, detail=what)
            return EquipmentResult(
                equipment_id=equipment.id, action=action, changed=False, state=DRY_RUN_STATE, dry_run=True
            )

        adapter = adapter_for(equipment)
        if action == "suspend":
            work = adapter.suspend(request, functools.partial(remember_state_before_cut, self.pool, request))
        else:
            work = adapter.restore(request, await state_before_cut(self.pool, request))
        try:
            reading = await heartbeating(work)
        except EquipmentError as exc:
            if exc.retryable:
                raise
            await record_action(self.pool, request, action, Outcome.FAILED, detail=str(exc))
            raise ApplicationError(str(exc), type=type(exc).__name__, non_retryable=True) from exc
        outcome = Outcome.CHANGED if reading.changed else Outcome.UNCHANGED
        await record_action(self.pool, request, action, outcome, state=reading.state)
        activity.logger.info("%s %s: %s, reads %s", action, equipment.id, outcome.value, reading.state)
        return EquipmentResult(equipment_id=equipment.id, action=action, changed=reading.changed, state=reading.state)

    async def _kill_switch(self, customer_id: str) -> str | None:
        """Why actions on this customer's equipment are stopped now, or None; read at every call."""
        if self.global_kill_switch:
            return "the global kill switch is on (setting DUNNING_EQUIPMENT_KILL_SWITCH)"
        switch = await kill_switch_for(self.pool, customer_id)
        if switch is None:
            return None
        return f"kill switch for {switch.scope} set by {switch.set_by} at {switch.set_at.isoformat()}: {switch.reason}"

    async def _refuse(
        self, request: EquipmentRequest, action: str, outcome: Outcome, why: str, error_type: str
    ) -> NoReturn:
        activity.logger.warning("refused to %s %s: %s", action, request.equipment_id, why)
        await record_action(self.pool, request, action, outcome, dry_run=self.dry_run, detail=why)
        raise ApplicationError(why, type=error_type, non_retryable=True)


async def heartbeating(work: Awaitable[T]) -> T:
    """Await ``work`` while heartbeating, so Temporal sees the activity alive while a BMC powers off."""
    timeout = activity.info().heartbeat_timeout
    interval = (timeout / 3 if timeout else DEFAULT_HEARTBEAT_INTERVAL).total_seconds()
    task = asyncio.ensure_future(work)
    try:
        while True:
            activity.heartbeat()
            done, _ = await asyncio.wait({task}, timeout=interval)
            if done:
                return task.result()
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
