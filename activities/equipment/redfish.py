"""The Redfish adapter: power a server off through its BMC (iDRAC, iLO, OpenBMC, Supermicro) and on again.

Suspend asks for the gentlest power-off the BMC takes and the entry's ``power_off`` allows
(``GracefulShutdown``, else ``PushPowerButton``) and, if the system is not off within
``graceful_timeout_s``, for ``ForceOff`` where allowed; restore asks for ``On``, unless the
system was already off before the cut (its owner had switched it off). The reset types
the BMC takes are read from ``ResetType@Redfish.AllowableValues`` and its ``@Redfish.ActionInfo``
resource; one it refuses anyway (HTTP 400) is passed over for the next. Every action reads
``PowerState`` first and back after; a reset answered 409 (iDRAC's "already powered OFF") or
202 (a task, followed until done) is judged by the state read back.

Only the registry's endpoint is contacted: links and redirects the BMC returns must stay on that
address (or a name of it listed in ``host_aliases``), and its session is always closed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx

from activities.equipment.adapter import (
    EquipmentAuthFailed,
    EquipmentError,
    EquipmentMisconfigured,
    EquipmentStateUnconfirmed,
    EquipmentUnreachable,
    Reading,
    Remember,
    StateBeforeCut,
    not_remembered,
)
from activities.equipment.registry import RedfishEquipment
from activities.tls import tls_failure, verified_transport
from workflows.models import EquipmentRequest

logger = logging.getLogger(__name__)

SERVICE_ROOT = "/redfish/v1/"
SYSTEMS = "/redfish/v1/Systems"
OFF, ON = "Off", "On"
POWERED = frozenset({ON, "PoweringOn"})  # states a cut takes away, so a restore gives back
TRANSIENT_STATUS = frozenset({408, 429})
REDIRECT_STATUS = frozenset({301, 302, 307, 308})
MAX_REDIRECTS = 5
# answers to a reset that are judged by the state read back: refused (400) or in conflict (409)
RESET_REFUSALS = frozenset({400, 409})
# the gentle power-offs each ``power_off`` setting allows, gentlest first
SOFT_POWER_OFF = {
    "graceful_only": ("GracefulShutdown",),
    "push_power_button": ("GracefulShutdown", "PushPowerButton"),
    "force_off_after": ("GracefulShutdown", "PushPowerButton"),
}
POWER_ON = ("On", "ForceOn", "PushPowerButton")
TASK_RUNNING = frozenset({"New", "Starting", "Running", "Pending", "Suspended", "Interrupted", "Stopping", "Service"})
TASK_FAILED = frozenset({"Exception", "Killed", "Cancelled"})
DEFAULT_PORTS = {"https": 443, "http": 80}


class ResetRefused(Exception):
    """The BMC refused a reset type (HTTP 400, or its task failed) while the system was not yet in the wanted state."""


def _redfish_message(response: httpx.Response) -> str:
    """The messages of a Redfish error body, or the start of the body."""
    try:
        error = response.json().get("error") or {}
        messages = [m.get("Message") for m in error.get("@Message.ExtendedInfo") or [] if isinstance(m, dict)]
        text = "; ".join(m for m in messages if isinstance(m, str)) or error.get("message")
    except (ValueError, AttributeError):
        text = None
    return text if isinstance(text, str) and text else response.text[:200]


class _Bmc:
    """A connection to one BMC: requests with their failures turned into adapter errors."""

    def __init__(self, client: httpx.AsyncClient, equipment: RedfishEquipment) -> None:
        self.client = client
        self.equipment = equipment
        self.name = equipment.id
        endpoint = urlsplit(str(equipment.endpoint))
        self._scheme, self._port = endpoint.scheme, endpoint.port or DEFAULT_PORTS[endpoint.scheme]
        names = [endpoint.hostname, *equipment.host_aliases, equipment.tls_server_name]
        self._names = {name.lower() for name in names if name}
        # the name to verify the certificate against (and send as SNI) when the endpoint is an address
        self._extensions = {"sni_hostname": equipment.tls_server_name} if equipment.tls_server_name else {}

    async def log_in(self, root: dict[str, Any]) -> str | None:
        """Open a Redfish session; sets ``X-Auth-Token`` on the client, returns the session's path.

        A session whose location is refused is closed at once, by its path on this BMC.
        """
        sessions = ((root.get("Links") or {}).get("Sessions") or {}).get("@odata.id")
        if not isinstance(sessions, str):
            raise EquipmentMisconfigured(f"{self.name}: the BMC offers no SessionService; set auth = \"basic\"")
        response = await self.call(
            "POST",
            self.local(sessions),
            json={"UserName": self.equipment.username, "Password": self.equipment.credentials.read()},
        )
        token = response.headers.get("X-Auth-Token")
        if not token:
            raise EquipmentMisconfigured(f"{self.name}: the BMC opened a session without a token")
        self.client.headers["X-Auth-Token"] = token
        location = response.headers.get("Location") or (_json_object(response) or {}).get("@odata.id")
        if not isinstance(location, str) or not location:
            logger.warning("%s: the BMC did not say where its session is; it will expire it", self.name)
            return None
        try:
            return self.local(urljoin(sessions, location))
        except EquipmentMisconfigured:
            await self.log_out(urlsplit(location).path)
            raise

    async def log_out(self, session: str) -> None:
        """Close the session; a failure is logged, not raised (the BMC expires it anyway)."""
        try:
            await self.call("DELETE", session)
        except EquipmentError as exc:
            logger.warning("%s: could not close the Redfish session %s: %s", self.name, session, exc)

    async def find_system(self, root: dict[str, Any]) -> _System:
        """The configured system, or the BMC's only one, with the reset types it takes."""
        path = self.equipment.system_path
        if path is None:
            collection = (root.get("Systems") or {}).get("@odata.id")
            members = (await self.get_json(self.local(collection) if isinstance(collection, str) else SYSTEMS)).get(
                "Members"
            ) or []
            paths = [m.get("@odata.id") for m in members if isinstance(m, dict)]
            if len(paths) != 1 or not isinstance(paths[0], str):
                raise EquipmentMisconfigured(
                    f"{self.name}: the BMC has {len(paths)} systems ({', '.join(map(str, paths))}); set system_path"
                )
            path = self.local(paths[0])
        document = await self.get_json(path)
        reset = (document.get("Actions") or {}).get("#ComputerSystem.Reset") or {}
        target = reset.get("target")
        if not isinstance(target, str):
            target = f"{path.rstrip('/')}/Actions/ComputerSystem.Reset"
        return _System(
            bmc=self,
            path=path,
            reset_target=self.local(target),
            reset_types=await self._reset_types(reset),
        )

    async def _reset_types(self, reset: dict[str, Any]) -> frozenset[str] | None:
        """The ResetTypes the BMC lists, in the action's annotation and its ActionInfo; None if it lists none."""
        listed = reset.get("ResetType@Redfish.AllowableValues")
        values = set(listed) if isinstance(listed, list) else None
        info = reset.get("@Redfish.ActionInfo")
        if isinstance(info, str):
            try:
                parameters = (await self.get_json(self.local(info))).get("Parameters") or []
            except EquipmentMisconfigured as exc:
                logger.warning("%s: cannot read the reset's ActionInfo: %s", self.name, exc)
                parameters = []
            for parameter in parameters:
                if isinstance(parameter, dict) and parameter.get("Name") == "ResetType":
                    allowable = parameter.get("AllowableValues")
                    if isinstance(allowable, list):
                        values = (values or set()) | set(allowable)
        return frozenset(v for v in values if isinstance(v, str)) if values is not None else None

    def local(self, link: str) -> str:
        """The path of a link the BMC returned, refused if it points to another address."""
        parts = urlsplit(link)
        if (parts.scheme or parts.netloc) and not self._same_bmc(link):
            raise EquipmentMisconfigured(
                f"{self.name}: the BMC pointed outside its own address ({link});"
                " if that is another name of this BMC, list it in host_aliases"
            )
        if not parts.path.startswith("/redfish/"):
            raise EquipmentMisconfigured(f"{self.name}: unexpected Redfish link {link!r}")
        return parts.path

    def _same_bmc(self, link: str) -> bool:
        parts = urlsplit(link)
        try:
            port = parts.port or DEFAULT_PORTS.get(parts.scheme)
        except ValueError:
            return False
        return (parts.scheme, port) == (self._scheme, self._port) and (parts.hostname or "").lower() in self._names

    async def get_json(self, path: str) -> dict[str, Any]:
        """GET a Redfish resource."""
        response = await self.call("GET", path)
        document = _json_object(response)
        if document is None:
            raise EquipmentMisconfigured(f"{self.name}: GET {path} answered no JSON object: is this a Redfish BMC?")
        return document

    async def call(
        self, method: str, path: str, answered: frozenset[int] = frozenset(), **kwargs: Any
    ) -> httpx.Response:
        """One request, following redirects that stay on this BMC; a failure becomes the adapter error
        that says what to do about it. Statuses in ``answered`` are returned for the caller to judge."""
        for _ in range(MAX_REDIRECTS + 1):
            response = await self._send(method, path, **kwargs)
            location = response.headers.get("Location")
            if response.status_code not in REDIRECT_STATUS or not location:
                return self._checked(method, path, response, answered)
            path = self.local(urljoin(path, location))
        raise EquipmentMisconfigured(f"{self.name}: {method} {path}: more than {MAX_REDIRECTS} redirects")

    async def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        endpoint = self.equipment.endpoint
        try:
            return await self.client.request(method, path, extensions=self._extensions, **kwargs)
        except httpx.ConnectError as exc:
            failure = tls_failure(exc)
            if failure is not None:
                raise EquipmentMisconfigured(self._tls_advice(*failure)) from exc
            raise EquipmentUnreachable(f"{self.name}: cannot connect to {endpoint}: {exc}") from exc
        except httpx.HTTPError as exc:
            raise EquipmentUnreachable(f"{self.name}: {method} {path} failed: {exc!r}") from exc

    def _tls_advice(self, kind: str, detail: str) -> str:
        endpoint = self.equipment.endpoint
        if kind == "pin":
            return f"{self.name}: the TLS certificate of {endpoint} is not the pinned one: {detail}"
        if kind == "name":
            return (
                f"{self.name}: the TLS certificate of {endpoint} was issued to another name ({detail});"
                " set tls_server_name to the name it carries, or pin it with tls_fingerprint_sha256"
            )
        return (
            f"{self.name}: the TLS certificate of {endpoint} is not trusted ({detail});"
            " set ca_file to the CA that signed it, or pin it with tls_fingerprint_sha256"
        )

    def _checked(self, method: str, path: str, response: httpx.Response, answered: frozenset[int]) -> httpx.Response:
        status = response.status_code
        if status in answered:
            return response
        if status in (401, 403):
            raise EquipmentAuthFailed(
                f"{self.name}: the BMC refused the credentials of {self.equipment.username!r} (HTTP {status})"
            )
        if status >= 500 or status in TRANSIENT_STATUS:
            raise EquipmentUnreachable(f"{self.name}: {method} {path} answered HTTP {status}")
        if status >= 300:
            raise EquipmentMisconfigured(
                f"{self.name}: {method} {path} answered HTTP {status}: {_redfish_message(response)}"
            )
        return response


def _json_object(response: httpx.Response) -> dict[str, Any] | None:
    """The response's JSON object, if it is one."""
    try:
        document = response.json()
    except ValueError:
        return None
    return document if isinstance(document, dict) else None


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

    def offered(self, reset_types: tuple[str, ...]) -> list[str]:
        """Those of ``reset_types`` the BMC lists (all of them if it lists none), in the given order."""
        return [t for t in reset_types if self.reset_types is None or t in self.reset_types]

    async def reset(self, reset_type: str, wanted: str, deadline: float) -> bool:
        """Ask for ``reset_type``: True if the BMC took it (its task, if any, followed until done or
        ``deadline``), False if it answered 400/409 and the system reads ``wanted`` already.
        ``ResetRefused`` if it refused this type; ``EquipmentStateUnconfirmed`` on another conflict."""
        logger.info("%s: ComputerSystem.Reset %s", self.bmc.name, reset_type)
        response = await self.bmc.call("POST", self.reset_target, RESET_REFUSALS, json={"ResetType": reset_type})
        status = response.status_code
        if status in RESET_REFUSALS:
            if await self.power_state() == wanted:
                logger.info("%s: %s answered HTTP %s; PowerState is %s", self.bmc.name, reset_type, status, wanted)
                return False
            message = f"{reset_type} answered HTTP {status}: {_redfish_message(response)}"
            if status == 409:
                raise EquipmentStateUnconfirmed(f"{self.bmc.name}: {message}")
            raise ResetRefused(message)
        if status == 202 and response.headers.get("Location"):
            monitor = self.bmc.local(urljoin(self.reset_target, response.headers["Location"]))
            await self._follow_task(reset_type, monitor, deadline)
        return True

    async def _follow_task(self, reset_type: str, monitor: str, deadline: float) -> None:
        """Poll a task monitor until the task is done (or ``deadline``); a failed task is a refusal."""
        loop = asyncio.get_running_loop()
        while True:
            answer = await self.bmc.call("GET", monitor, frozenset({404}))
            task = _json_object(answer) or {}
            state = task.get("TaskState")
            if answer.status_code == 404 or (answer.status_code != 202 and state not in TASK_RUNNING):
                break
            if loop.time() >= deadline:
                logger.warning("%s: the task of %s still runs; reading the state", self.bmc.name, reset_type)
                return
            await asyncio.sleep(min(self.bmc.equipment.poll_interval_s, max(deadline - loop.time(), 0)))
        if state in TASK_FAILED:
            messages = [m.get("Message") for m in task.get("Messages") or [] if isinstance(m, dict)]
            raise ResetRefused(f"the task of {reset_type} ended {state}: {'; '.join(filter(None, messages))}")

    async def wait_for(self, wanted: str, deadline: float) -> bool:
        """Poll PowerState until it is ``wanted`` (True) or the loop time ``deadline`` passes (False)."""
        loop = asyncio.get_running_loop()
        while True:
            if await self.power_state() == wanted:
                return True
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            await asyncio.sleep(min(self.bmc.equipment.poll_interval_s, remaining))


def _deadline(seconds: float) -> float:
    return asyncio.get_running_loop().time() + seconds


class RedfishAdapter:
    """Suspend, restore and read one server through its BMC's Redfish API."""

    def __init__(self, equipment: RedfishEquipment) -> None:
        self.equipment = equipment

    async def status(self) -> str:
        """The system's PowerState now."""
        async with self._system() as system:
            return await system.power_state()

    async def suspend(self, request: EquipmentRequest, remember: Remember = not_remembered) -> Reading:
        """Power off: the gentlest way the entry allows, then ForceOff after ``graceful_timeout_s`` if allowed;
        the PowerState found is remembered first."""
        async with self._system() as system:
            state = await system.power_state()
            await remember({"PowerState": state})
            if state == OFF:
                return Reading(changed=False, state=OFF)
            return await self._power_off(system)

    async def restore(self, request: EquipmentRequest, before: StateBeforeCut | None = None) -> Reading:
        """Power on, unless the system was not powered before the cut (its owner had switched it off)."""
        async with self._system() as system:
            state = await system.power_state()
            if state == ON or (before is not None and before.get("PowerState") not in POWERED):
                return Reading(changed=False, state=state)
            return await self._power_on(system)

    async def _power_off(self, system: _System) -> Reading:
        """Power off a system that read On: the gentle way first, ForceOff only where ``power_off`` allows it."""
        equipment = self.equipment
        policy, soft = equipment.power_off, SOFT_POWER_OFF[equipment.power_off]
        taken: list[str] = []
        refusals: list[str] = []
        gentle = system.offered(soft) if equipment.graceful_timeout_s > 0 else []
        for reset_type in gentle:
            deadline = _deadline(equipment.graceful_timeout_s)
            try:
                if not await system.reset(reset_type, OFF, deadline):
                    return Reading(changed=False, state=OFF)
            except ResetRefused as refusal:
                logger.warning("%s: %s; trying the next way", equipment.id, refusal)
                refusals.append(str(refusal))
                continue
            taken.append(reset_type)
            if await system.wait_for(OFF, deadline):
                return Reading(changed=True, state=OFF)
            break
        if policy != "force_off_after":
            if not taken:
                offered = ", ".join(sorted(system.reset_types or ())) or "none listed"
                raise EquipmentMisconfigured(
                    f"{equipment.id}: the BMC takes none of {', '.join(soft)} (it lists {offered}"
                    f"{''.join('; ' + r for r in refusals)}); power_off = \"{policy}\" allows nothing else:"
                    " set power_off = \"force_off_after\" to allow ForceOff"
                )
            state = await system.power_state()
            raise EquipmentStateUnconfirmed(
                f"{equipment.id}: PowerState is {state!r} {equipment.graceful_timeout_s}s after {taken[-1]};"
                f" power_off = \"{policy}\" does not allow ForceOff"
            )
        if taken:
            logger.warning("%s: not off %ss after %s: ForceOff", equipment.id, equipment.graceful_timeout_s, taken[-1])
        return await self._reset_and_confirm(system, "ForceOff", OFF, changed_before=bool(taken))

    async def _power_on(self, system: _System) -> Reading:
        """Power on a system that read Off: On, or what the BMC offers instead."""
        return await self._reset_and_confirm(system, next(iter(system.offered(POWER_ON)), "On"), ON)

    async def _reset_and_confirm(
        self, system: _System, reset_type: str, wanted: str, changed_before: bool = False
    ) -> Reading:
        deadline = _deadline(self.equipment.power_timeout_s)
        try:
            if not await system.reset(reset_type, wanted, deadline):
                return Reading(changed=changed_before, state=wanted)
        except ResetRefused as refusal:
            raise EquipmentMisconfigured(f"{self.equipment.id}: the BMC refused it: {refusal}") from None
        if await system.wait_for(wanted, deadline):
            return Reading(changed=True, state=wanted)
        state = await system.power_state()
        raise EquipmentStateUnconfirmed(
            f"{self.equipment.id}: PowerState is {state!r}, not {wanted!r},"
            f" {self.equipment.power_timeout_s}s after {reset_type}"
        )

    @asynccontextmanager
    async def _system(self) -> AsyncIterator[_System]:
        """A connection to the BMC, logged in, with the system found; the session is closed whatever happens."""
        equipment = self.equipment
        transport = verified_transport(
            equipment.ca_file,
            equipment.verify_tls,
            pinned=equipment.tls_fingerprint_sha256,
            check_chain_and_name=bool(equipment.ca_file or equipment.tls_server_name),
        )
        async with httpx.AsyncClient(
            base_url=str(equipment.endpoint).rstrip("/"),
            transport=transport,
            timeout=equipment.request_timeout_s,
            follow_redirects=False,
            headers={"Accept": "application/json", "OData-Version": "4.0"},
        ) as client:
            bmc = _Bmc(client, equipment)
            session = None
            if equipment.auth == "basic":
                client.auth = httpx.BasicAuth(equipment.username, equipment.credentials.read())
            root = await bmc.get_json(SERVICE_ROOT)
            if equipment.auth == "session":
                session = await bmc.log_in(root)
            try:
                yield await bmc.find_system(root)
            finally:
                if session is not None:
                    await bmc.log_out(session)
