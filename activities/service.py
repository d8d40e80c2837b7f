"""Suspending and restoring a customer's service: the recorded decision that blocks support and orders.

Equipment adapters (cutting power or ports) plug in here in a later step; today a suspension
records the block, and the ``customer_blocks`` view tells helpdesk and ordering who is blocked.
"""

from __future__ import annotations

import asyncpg
from temporalio import activity

from workflows import contracts
from workflows.models import ServiceAction, ServiceChange


class ServiceActivities(contracts.Service):
    """Activities that change what a customer may use."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def _record(self, action: str, request: ServiceAction) -> ServiceChange:
        await self.pool.execute(
            "INSERT INTO service_actions (idempotency_key, customer_id, invoice_id, action,"
            " remote_disconnect_authorized, equipment_ids, reason) VALUES ($1, $2, $3, $4, $5, $6, $7)"
            " ON CONFLICT (idempotency_key) DO NOTHING",
            request.idempotency_key,
            request.customer_id,
            request.invoice_id,
            action,
            request.remote_disconnect_authorized,
            request.equipment_ids,
            request.reason,
        )
        return ServiceChange(
            support_and_orders_blocked=action == "suspend",
            remote_disconnect_authorized=request.remote_disconnect_authorized,
            equipment_ids=request.equipment_ids if request.remote_disconnect_authorized else [],
        )

    @activity.defn(name="suspend_service")
    async def suspend_service(self, request: ServiceAction) -> ServiceChange:
        """Block support and new orders for the customer (idempotent by the request's key)."""
        return await self._record("suspend", request)

    @activity.defn(name="restore_service")
    async def restore_service(self, request: ServiceAction) -> ServiceChange:
        """Lift the block that this invoice's suspension put in place."""
        return await self._record("restore", request)
