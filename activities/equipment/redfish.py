"""The Redfish adapter: power a server off through its BMC (iDRAC, iLO, OpenBMC) and on again.

Suspend asks for ``GracefulShutdown`` and, if the system is not off within ``graceful_timeout_s``,
for ``ForceOff``; restore asks for ``On``, unless the system was already off before the cut.
Every action reads ``PowerState`` first and back after.
Only the registry's endpoint is contacted: links the BMC returns must stay on that address, and
redirects are not followed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

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
from activities.equipment.registry import RedfishEquipment
from activities.tls import tls_verification, untrusted_certificate
from workflows.models import EquipmentRequest

logger = logging.getLogger(__name__)

SERVICE_ROOT = "/redfish/v1/"
SYSTEMS = "/redfish/v1/Systems"
OFF, ON = "Off", "On"
POWERED = frozenset({ON, "PoweringOn"})  # states a cut takes away, so a restore gives back
TRANSIENT_STATUS = frozenset({408, 429})


def _origin(url: str) -> tuple[str, str | None, int | None]:
    """Scheme, host and port of a URL, the default port spelled out."""
    parts = urlsplit(url)
    return parts.scheme, parts.hostname, parts.port or {"https": 443, "http": 80}.get(parts.scheme)


class _Bmc:
    """A connection to one BMC: requests with their failures turned into adapter errors."""

    def __init__(self, client: httpx.AsyncClient, equipment: RedfishEquipment) -> None:
        self.client = client
        self.equipment = equipment
        self.name = equipment.id
        self._origin = _origin(str(equipment.endpoint))

    async def log_in(self) -> str:
        """Open a Redfish session; sets ``X-Auth-Token`` on the client, returns the session's path."""
        root = await self.get_json(SERVICE_ROOT)
        sessions = ((root.get("Links") or {}).get("Sessions") or {}).get("@odata.id")
        if not isinstance(sessions, str):
            raise EquipmentMisconfigured(f"{self.name}: the BMC offers no SessionService; set auth = \"basic\"")
        response = await self.call(
            "POST",
            self.local(sessions),
            json={"UserName": self.equipment.username, "Password": self.equipment.credentials.read()},
        )
        token, location = response.headers.get("X-Auth-Token"), response.headers.get("Location")
        if not token or not location:
            raise EquipmentMisconfigured(f"{self.name}: the BMC opened a session without a token or location")
        self.client.headers["X-Auth-Token"] = token
        return self.local(location)

    async def log_out(self, session: str) -> None:
        """Close the session; a failure is logged, not raised (the BMC expires it anyway)."""
        try:
            await self.client.delete(session)
        except httpx.HTTPError as exc:
            logger.warning("%s: could not close the Redfish session: %s", self.name, exc)

    async def find_system(self) -> _System:
        """The configured system, or the BMC's only one."""
        path = self.equipment.system_path
        if path is None:
            members = (await self.get_json(SYSTEMS)).get("Members") or []
            paths = [m.get("@odata.id") for m in members if isinstance(m, dict)]
            if len(paths) != 1 or not isinstance(paths[0], str):
                raise EquipmentMisconfigured(
                    f"{self.name}: the BMC has {len(paths)} systems ({', '.join(map(str, paths))}); set system_path"
                )
            path = self.local(paths[0])
        document = await self.get_json(path)
        reset = (document.get("Actions") or {}).get("#ComputerSystem.Reset") or {}
        allowed = reset.get("ResetType@Redfish.AllowableValues")
        return _System(
            bmc=self,
            path=path,
            reset_target=self.local(reset.get("target") or f"{path}/Actions/ComputerSystem.Reset"),
            reset_types=frozenset(allowed) if isinstance(allowed, list) else None,
        )

    def local(self, link: str) -> str:
        """The path of a link the BMC returned, refused if it points to another address."""
        parts = urlsplit(link)
        if (parts.scheme or parts.netloc) and _origin(link) != self._origin:
            raise EquipmentMisconfigured(f"{self.name}: the BMC pointed outside its own address ({link})")
        if not parts.path.startswith("/redfish/"):
            raise EquipmentMisconfigured(f"{self.name}: unexpected Redfish link {link!r}")
        return parts.path

    async def get_json(self, path: str) -> dict[str, Any]:
        """GET a Redfish resource."""
        response = await self.call("GET", path)
        try:
            document = response.json()
        except ValueError:
            document = None
        if not isinstance(document, dict):
            raise EquipmentMisconfigured(f"{self.name}: GET {path} answered no JSON object: is this a Redfish BMC?")
        return document

    async def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One request; a failure becomes the adapter error that says what to do about it."""
        endpoint = self.equipment.endpoint
        try:
            response = await self.client.request(method, path, **kwargs)
        except httpx.ConnectError as exc:
            if untrusted_certificate(exc):
                raise EquipmentMisconfigured(
                    f"{self.name}: the TLS certificate of {endpoint} is not trusted;"
                    " set ca_file to the CA that signed it"
                ) from exc
            raise EquipmentUnreachable(f"{self.name}: cannot connect to {endpoint}: {exc}") from exc
        except httpx.HTTPError as exc:
            raise EquipmentUnreachable(f"{self.name}: {method} {path} failed: {exc!r}") from exc
        status = response.status_code
        if status in (401, 403):
            raise EquipmentAuthFailed(
                f"{self.name}: the BMC refused the credentials of {self.equipment.username!r} (HTTP {status})"
            )
        if status >= 500 or status in TRANSIENT_STATUS:
            raise EquipmentUnreachable(f"{self.name}: {method} {path} answered HTTP {status}")
        if status >= 300:
            raise EquipmentMisconfigured(f"{self.name}: {method} {path} answered HTTP {status}: {response.text[:200]}")
        return response


@dataclass
class _System:
    """One ComputerSystem on a BMC connection."""

    bmc: _Bmc
    path: str
    reset_target: str
    reset_types: frozenset[str] | None  # None: the BMC does not say, try the standard ones

    async def power_state(self) -> str:
        state = (await self.bmc.get_json(self.path)).get("PowerState")
        if not isinstance(state, str):
            raise EquipmentMisconfigured(f"{self.bmc.name}: {self.path} reports no PowerState")
        return state

    def allows(self, reset_type: str) -> bool:
        return self.reset_types is None or reset_type in self.reset_types

    async def reset(self, reset_type: str) -> None:
        logger.info("%s: ComputerSystem.Reset %s", self.bmc.name, reset_type)
        await self.bmc.call("POST", self.reset_target, json={"ResetType": reset_type})

    async def wait_for(self, wanted: str, timeout: float) -> bool:
        """Poll PowerState until it is ``wanted`` (True) or ``timeout`` seconds pass (False)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if await self.power_state() == wanted:
                return True
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            await asyncio.sleep(min(self.bmc.equipment.poll_interval_s, remaining))


class RedfishAdapter:
    """Suspend, restore and read one server through its BMC's Redfish API."""

    def __init__(self, equipment: RedfishEquipment) -> None:
        self.equipment = equipment

    async def status(self) -> str:
        """The system's PowerState now."""
        async with self._system() as system:
            return await system.power_state()

    async def suspend(self, request: EquipmentRequest, remember: Remember = not_remembered) -> Reading:
        """Power off: GracefulShutdown, then ForceOff after ``graceful_timeout_s``; the PowerState found is
        remembered first."""
        async with self._system() as system:
            state = await system.power_state()
            await remember({"PowerState": state})
            if state == OFF:
                return Reading(changed=False, state=OFF)
            graceful_timeout = self.equipment.graceful_timeout_s
            if graceful_timeout > 0 and system.allows("GracefulShutdown"):
                await system.reset("GracefulShutdown")
                if await system.wait_for(OFF, graceful_timeout):
                    return Reading(changed=True, state=OFF)
                logger.warning("%s: not off %ss after GracefulShutdown: ForceOff", self.equipment.id, graceful_timeout)
            await system.reset("ForceOff")
            return await self._confirm(system, OFF)

    async def restore(self, request: EquipmentRequest, before: StateBeforeCut | None = None) -> Reading:
        """Power on, unless the system was not powered before the cut (its owner had switched it off)."""
        async with self._system() as system:
            state = await system.power_state()
            if state == ON or (before is not None and before.get("PowerState") not in POWERED):
                return Reading(changed=False, state=state)
            await system.reset("On")
            return await self._confirm(system, ON)

    async def _confirm(self, system: _System, wanted: str) -> Reading:
        if await system.wait_for(wanted, self.equipment.power_timeout_s):
            return Reading(changed=True, state=wanted)
        state = await system.power_state()
        raise EquipmentStateUnconfirmed(
            f"{self.equipment.id}: PowerState is {state!r}, not {wanted!r},"
            f" {self.equipment.power_timeout_s}s after the reset"
        )

    @asynccontextmanager
    async def _system(self) -> AsyncIterator[_System]:
        """A connection to the BMC, logged in, with the system found; logs out afterwards."""
        equipment = self.equipment
        async with httpx.AsyncClient(
            base_url=str(equipment.endpoint).rstrip("/"),
            verify=tls_verification(equipment.ca_file, equipment.verify_tls),
            timeout=equipment.request_timeout_s,
            follow_redirects=False,
            headers={"Accept": "application/json", "OData-Version": "4.0"},
        ) as client:
            bmc = _Bmc(client, equipment)
            session = None
            if equipment.auth == "basic":
                client.auth = httpx.BasicAuth(equipment.username, equipment.credentials.read())
            else:
                session = await bmc.log_in()
            try:
                yield await bmc.find_system()
            finally:
                if session is not None:
                    await bmc.log_out(session)
