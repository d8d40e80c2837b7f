"""The SNMP adapter: take a router's or switch's configured ports down (IF-MIB ifAdminStatus) and up.

Only the ports listed in the registry are read or written; every action reads their
ifAdminStatus first, sets only the ports not yet in the wanted state, and reads them back.
A restore brings up only the ports that were up before the cut.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from pysnmp.error import PySnmpError
from pysnmp.hlapi.v3arch.asyncio import (
    CommunityData,
    ContextData,
    ObjectIdentity,
    ObjectType,
    SnmpEngine,
    Udp6TransportTarget,
    UdpTransportTarget,
    UsmUserData,
    get_cmd,
    set_cmd,
    usm3DESEDEPrivProtocol,
    usmAesBlumenthalCfb192Protocol,
    usmAesBlumenthalCfb256Protocol,
    usmAesCfb128Protocol,
    usmAesCfb192Protocol,
    usmAesCfb256Protocol,
    usmDESPrivProtocol,
    usmHMAC128SHA224AuthProtocol,
    usmHMAC192SHA256AuthProtocol,
    usmHMAC256SHA384AuthProtocol,
    usmHMAC384SHA512AuthProtocol,
    usmHMACMD5AuthProtocol,
    usmHMACSHAAuthProtocol,
    usmNoPrivProtocol,
)
from pysnmp.proto import errind
from pysnmp.proto.rfc1902 import Integer
from pysnmp.proto.rfc1905 import EndOfMibView, NoSuchInstance, NoSuchObject
from pysnmp.smi.builder import MibBuilder
from pysnmp.smi.view import MibViewController

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
from activities.equipment.registry import LONG_AES, SnmpEquipment
from workflows.models import EquipmentRequest

logger = logging.getLogger(__name__)

IF_ADMIN_STATUS = "1.3.6.1.2.1.2.2.1.7"  # IF-MIB::ifAdminStatus, indexed by ifIndex
UP, DOWN = 1, 2
STATUS_NAMES = {1: "up", 2: "down", 3: "testing"}

AUTH_PROTOCOLS = {
    "md5": usmHMACMD5AuthProtocol,
    "sha": usmHMACSHAAuthProtocol,
    "sha224": usmHMAC128SHA224AuthProtocol,
    "sha256": usmHMAC192SHA256AuthProtocol,
    "sha384": usmHMAC256SHA384AuthProtocol,
    "sha512": usmHMAC384SHA512AuthProtocol,
}
PRIV_PROTOCOLS = {
    "none": usmNoPrivProtocol,
    "des": usmDESPrivProtocol,
    "3des": usm3DESEDEPrivProtocol,
    "aes128": usmAesCfb128Protocol,
}
# AES-192/256 by how the key is extended (pysnmp's plain usmAesCfb192/256Protocol are Reeder's)
LONG_AES_PROTOCOLS = {
    ("aes192", "blumenthal"): usmAesBlumenthalCfb192Protocol,
    ("aes256", "blumenthal"): usmAesBlumenthalCfb256Protocol,
    ("aes192", "reeder"): usmAesCfb192Protocol,
    ("aes256", "reeder"): usmAesCfb256Protocol,
}
# what an agent's USM answers (or what the manager concludes) when the user, key or level is wrong
CREDENTIAL_FAILURES = (
    errind.WrongDigest,
    errind.UnknownUserName,
    errind.UnknownSecurityName,
    errind.UnsupportedSecurityLevel,
    errind.DecryptionError,
    errind.AuthenticationFailure,
    errind.AuthenticationError,
)
# PDU error statuses that may clear on their own; any other (noAccess, notWritable, ...) will not
TRANSIENT_ERROR_STATUS = frozenset({"genErr", "resourceUnavailable", "commitFailed", "undoFailed", "tooBig"})


@functools.cache
def shared_mib_view() -> MibViewController:
    """One MIB view for every SNMP engine of the process.

    pysnmp's high-level API builds a view per engine and, when pysmi is installed, a MIB compiler
    with it: a second or two of CPU per engine. The adapter only uses numeric OIDs, so one view will do.
    """
    return MibViewController(MibBuilder())


def new_engine() -> SnmpEngine:
    """An SNMP engine that uses the shared MIB view (the high-level API looks for it in ``engine.cache``)."""
    engine = SnmpEngine()
    engine.cache["mibViewController"] = shared_mib_view()
    return engine


def privacy_protocol(equipment: SnmpEquipment) -> tuple:
    """pysnmp's privacy protocol for the entry: AES-192/256 with the entry's key extension."""
    if equipment.priv_protocol in PRIV_PROTOCOLS:
        return PRIV_PROTOCOLS[equipment.priv_protocol]
    return LONG_AES_PROTOCOLS[equipment.priv_protocol, equipment.aes_key_extension]


def summarise(statuses: dict[int, int]) -> str:
    """``'down'`` when every port is down, else each port's status: ``'12=down,13=up'``."""
    names = {port: STATUS_NAMES.get(value, str(value)) for port, value in statuses.items()}
    if len(set(names.values())) == 1:
        return next(iter(names.values()))
    return ",".join(f"{port}={name}" for port, name in names.items())


class _Agent:
    """One SNMP engine talking to the equipment's agent."""

    def __init__(self, equipment: SnmpEquipment, engine: SnmpEngine, target: UdpTransportTarget) -> None:
        self.equipment = equipment
        self.engine = engine
        self.target = target
        self.context = ContextData(contextName=equipment.context_name)
        self.auth = self._auth_data()
        self.heard = False  # the USM processed a message from the agent (a v3 discovery report at least)
        self.understood = False  # the agent answered a request: the keys are right
        engine.observer.register_observer(self._heard_from_agent, "rfc3414.processIncomingMsg")

    def _heard_from_agent(self, *_: object) -> None:
        self.heard = True

    def _auth_data(self) -> CommunityData | UsmUserData:
        equipment = self.equipment
        if equipment.version == "2c":
            return CommunityData(equipment.credentials.read(), mpModel=1)
        return UsmUserData(
            equipment.user,
            authKey=equipment.credentials.read(),
            privKey=equipment.priv_credentials.read() if equipment.priv_credentials else None,
            authProtocol=AUTH_PROTOCOLS[equipment.auth_protocol],
            privProtocol=privacy_protocol(equipment),
        )

    async def read(self) -> dict[int, int]:
        """ifAdminStatus of each configured port."""
        var_binds = await self._command(
            get_cmd, "GET", [ObjectType(ObjectIdentity(f"{IF_ADMIN_STATUS}.{p}")) for p in self.equipment.ports]
        )
        statuses = {}
        for port, (_, value) in zip(self.equipment.ports, var_binds, strict=True):
            if isinstance(value, (NoSuchInstance, NoSuchObject, EndOfMibView)):
                raise EquipmentMisconfigured(f"{self.equipment.id}: the agent has no port with ifIndex {port}")
            statuses[port] = int(value)
        return statuses

    async def write(self, statuses: dict[int, int]) -> None:
        """Set ifAdminStatus of these ports, in one request."""
        logger.info("%s: set ifAdminStatus %s", self.equipment.id, summarise(statuses))
        await self._command(
            set_cmd,
            "SET",
            [ObjectType(ObjectIdentity(f"{IF_ADMIN_STATUS}.{p}"), Integer(v)) for p, v in statuses.items()],
        )

    async def _command(self, command: Callable[..., Awaitable[tuple]], verb: str, var_binds: list[ObjectType]) -> list:
        equipment = self.equipment
        indication, status, index, answered = await command(
            self.engine, self.auth, self.target, self.context, *var_binds
        )
        if isinstance(indication, errind.RequestTimedOut):
            if self.heard and not self.understood:
                raise EquipmentMisconfigured(self._silent_after_discovery())
            silent_v2c = " (an SNMPv2c agent also stays silent when the community is wrong)"
            hint = silent_v2c if equipment.version == "2c" else ""
            raise EquipmentUnreachable(f"{equipment.id}: no answer from {equipment.endpoint}{hint}")
        if isinstance(indication, CREDENTIAL_FAILURES):
            hint = self._key_extension_hint() if isinstance(indication, errind.DecryptionError) else ""
            raise EquipmentAuthFailed(
                f"{equipment.id}: the agent refused the SNMPv3 credentials of {equipment.user!r}: {indication}{hint}"
            )
        if indication:
            raise EquipmentUnreachable(f"{equipment.id}: SNMP {verb} to {equipment.endpoint} failed: {indication}")
        self.understood = True
        if status:
            name = status.prettyPrint()
            where = answered[int(index) - 1][0].prettyPrint() if index and int(index) <= len(answered) else "?"
            message = f"{equipment.id}: the agent refused the {verb}: {name} at {where}"
            raise (EquipmentUnreachable if name in TRANSIENT_ERROR_STATUS else EquipmentMisconfigured)(message)
        return list(answered)

    def _silent_after_discovery(self) -> str:
        """Why an agent that answered the SNMPv3 discovery ignores the request: it could not decrypt it."""
        equipment = self.equipment
        return (
            f"{equipment.id}: the agent at {equipment.endpoint} answered the SNMPv3 discovery but not the request"
            f" of {equipment.user!r}; agents drop what they cannot decrypt, so the privacy key (priv_credentials)"
            f" or priv_protocol {equipment.priv_protocol!r} is probably wrong{self._key_extension_hint()}"
            " (not retried)"
        )

    def _key_extension_hint(self) -> str:
        """For AES-192/256: the agent may extend the key the other way."""
        equipment = self.equipment
        if equipment.priv_protocol not in LONG_AES:
            return ""
        other = "reeder" if equipment.aes_key_extension == "blumenthal" else "blumenthal"
        return (
            f", or the agent extends {equipment.priv_protocol} keys the other way"
            f" (aes_key_extension is {equipment.aes_key_extension!r}; try {other!r})"
        )


class SnmpAdapter:
    """Suspend, restore and read the configured ports of one router or switch."""

    def __init__(self, equipment: SnmpEquipment) -> None:
        self.equipment = equipment

    async def status(self) -> str:
        """The ports' ifAdminStatus now: 'up', 'down', or each port's when they differ."""
        async with self._agent() as agent:
            return summarise(await agent.read())

    async def suspend(self, request: EquipmentRequest, remember: Remember = not_remembered) -> Reading:
        """Set the configured ports' ifAdminStatus to down(2), once each port's status is remembered."""
        async with self._agent() as agent:
            before = await agent.read()
            await remember({str(port): STATUS_NAMES.get(value, str(value)) for port, value in before.items()})
            return await self._set_ports(agent, before, dict.fromkeys(before, DOWN))

    async def restore(self, request: EquipmentRequest, before: StateBeforeCut | None = None) -> Reading:
        """Set ifAdminStatus up(1) on the ports that were up before the cut (without ``before``: on all)."""
        async with self._agent() as agent:
            now = await agent.read()
            was_up = [port for port in now if before is None or before.get(str(port)) == STATUS_NAMES[UP]]
            return await self._set_ports(agent, now, dict.fromkeys(was_up, UP))

    async def _set_ports(self, agent: _Agent, now: dict[int, int], wanted: dict[int, int]) -> Reading:
        """Set the ports of ``wanted`` that differ from ``now``, then read them all back."""
        stale = {port: value for port, value in wanted.items() if now[port] != value}
        if not stale:
            return Reading(changed=False, state=summarise(now))
        await agent.write(stale)
        after = await agent.read()
        if any(after[port] != value for port, value in wanted.items()):
            raise EquipmentStateUnconfirmed(
                f"{self.equipment.id}: ifAdminStatus reads {summarise(after)} after setting {summarise(stale)}"
            )
        return Reading(changed=True, state=summarise(after))

    @asynccontextmanager
    async def _agent(self) -> AsyncIterator[_Agent]:
        equipment = self.equipment
        engine = new_engine()
        try:
            transport = Udp6TransportTarget if ":" in equipment.host else UdpTransportTarget
            try:
                target = await transport.create(
                    (equipment.host, equipment.port), timeout=equipment.request_timeout_s, retries=equipment.retries
                )
            except PySnmpError as exc:
                raise EquipmentUnreachable(f"{equipment.id}: cannot resolve {equipment.endpoint}: {exc}") from exc
            yield _Agent(equipment, engine, target)
        finally:
            engine.close_dispatcher()
