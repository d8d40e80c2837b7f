"""The webhook adapter: a signed HTTP call to a customer's controller (RouterOS REST, a firewall manager, ...).

Each call POSTs JSON ``{action, equipment_id, customer_id, invoice_id, reason}`` with ``action`` one
of ``suspend``, ``restore`` or ``status``, signed by the Standard Webhooks scheme under the shared
secret (``activities.signing``): ``webhook-id`` (also sent as ``Idempotency-Key``) is the same on every
retry of one suspend or restore step, ``webhook-timestamp`` and ``webhook-signature``. The controller
answers ``{"state": "suspended"}`` or ``{"state": "active"}``. An action asks for the status first,
acts only if needed, and asks again to confirm; a restore leaves alone what was not active before the
cut. Redirects are not followed.
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

import httpx

from activities.equipment.adapter import (
    EquipmentAuthFailed,
    EquipmentMisconfigured,
    EquipmentStateUnconfirmed,
    EquipmentUnreachable,
    Reading,
    Remember,
    StateBeforeCut,
    not_remembered,
)
from activities.equipment.registry import WebhookEquipment
from activities.signing import signed_headers
from activities.tls import tls_verification, untrusted_certificate
from workflows.models import EquipmentRequest

logger = logging.getLogger(__name__)

SUSPENDED, ACTIVE = "suspended", "active"
TRANSIENT_STATUS = frozenset({408, 429})


class WebhookAdapter:
    """Suspend, restore and read one piece of equipment through the customer's controller."""

    def __init__(self, equipment: WebhookEquipment) -> None:
        self.equipment = equipment

    async def status(self) -> str:
        """The state the controller reports now."""
        async with self._client() as client:
            return await self._post(client, self._payload("status"), uuid.uuid4().hex)

    async def suspend(self, request: EquipmentRequest, remember: Remember = not_remembered) -> Reading:
        """Ask the controller to suspend, unless it already reports 'suspended'; its state is remembered first."""
        async with self._client() as client:
            state = await self._status(client, request)
            await remember({"state": state})
            return await self._act(client, "suspend", SUSPENDED, request, state)

    async def restore(self, request: EquipmentRequest, before: StateBeforeCut | None = None) -> Reading:
        """Ask the controller to restore, unless it already reports 'active' or was not active before the cut."""
        async with self._client() as client:
            state = await self._status(client, request)
            if before is not None and before.get("state") != ACTIVE:
                return Reading(changed=False, state=state)
            return await self._act(client, "restore", ACTIVE, request, state)

    async def _status(self, client: httpx.AsyncClient, request: EquipmentRequest) -> str:
        return await self._post(client, self._payload("status", request), uuid.uuid4().hex)

    async def _act(
        self, client: httpx.AsyncClient, action: str, wanted: str, request: EquipmentRequest, state: str
    ) -> Reading:
        if state == wanted:
            return Reading(changed=False, state=wanted)
        logger.info("%s: webhook %s", self.equipment.id, action)
        await self._post(client, self._payload(action, request), request.idempotency_key)
        state = await self._status(client, request)
        if state != wanted:
            raise EquipmentStateUnconfirmed(f"{self.equipment.id}: the controller reports {state!r} after {action}")
        return Reading(changed=True, state=state)

    def _payload(self, action: str, request: EquipmentRequest | None = None) -> dict[str, Any]:
        return {
            "action": action,
            "equipment_id": self.equipment.id,
            "customer_id": self.equipment.customer_id,
            "invoice_id": request.invoice_id if request else None,
            "reason": request.reason if request else None,
        }

    def _client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            verify=tls_verification(self.equipment.ca_file, self.equipment.verify_tls),
            timeout=self.equipment.request_timeout_s,
            follow_redirects=False,
        )

    async def _post(self, client: httpx.AsyncClient, payload: dict[str, Any], idempotency_key: str) -> str:
        """POST one signed call; the ``state`` the controller answers."""
        equipment = self.equipment
        body = json.dumps(payload, separators=(",", ":")).encode()
        headers = signed_headers(equipment.credentials.read(), body, idempotency_key)
        try:
            response = await client.post(str(equipment.endpoint), content=body, headers=headers)
        except httpx.ConnectError as exc:
            if untrusted_certificate(exc):
                raise EquipmentMisconfigured(
                    f"{equipment.id}: the TLS certificate of {equipment.endpoint} is not trusted; set ca_file"
                ) from exc
            raise EquipmentUnreachable(f"{equipment.id}: cannot connect to {equipment.endpoint}: {exc}") from exc
        except httpx.HTTPError as exc:
            raise EquipmentUnreachable(f"{equipment.id}: {payload['action']} call failed: {exc!r}") from exc
        status = response.status_code
        if status in (401, 403):
            raise EquipmentAuthFailed(f"{equipment.id}: the controller refused the signature (HTTP {status})")
        if status >= 500 or status in TRANSIENT_STATUS:
            raise EquipmentUnreachable(f"{equipment.id}: the controller answered HTTP {status}")
        if status >= 300:
            raise EquipmentMisconfigured(
                f"{equipment.id}: the controller answered HTTP {status}: {response.text[:200]}"
            )
        try:
            state = response.json().get("state")
        except (ValueError, AttributeError):
            state = None
        if not isinstance(state, str):
            raise EquipmentMisconfigured(f"{equipment.id}: the controller did not answer JSON {{\"state\": ...}}")
        return state
