"""Equipment peers on loopback: a Redfish BMC emulator and an SNMP agent simulator.

The tests drive the equipment adapters against them, and ``dunning dev --demo`` cuts and restores
its demo customer's server and switch port on them (needs the test extra: sushy-tools, snmpsim,
trustme, bcrypt).

- Redfish: ``sushy-emulator`` (sushy-tools) with its fake system driver, HTTPS with a trustme CA,
  basic authentication from an htpasswd (bcrypt) file.
- SNMP: ``snmpsim-command-responder`` (snmpsim) with a data file whose ifAdminStatus rows are
  writable (the ``writecache`` variation module), SNMPv2c community and an SNMPv3 USM user.

Each peer is read directly (HTTP GET, our own SNMP GET), never through the adapter under test.
"""

from __future__ import annotations

import asyncio
import functools
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import bcrypt
import httpx
import trustme
from pysnmp.hlapi.v3arch.asyncio import (
    CommunityData,
    ContextData,
    ObjectIdentity,
    ObjectType,
    SnmpEngine,
    UdpTransportTarget,
    get_cmd,
    set_cmd,
)
from pysnmp.proto.rfc1902 import Integer
from pysnmp.smi.builder import MibBuilder
from pysnmp.smi.view import MibViewController

LOOPBACK = "127.0.0.1"
STARTUP_TIMEOUT_S = 30.0
IF_ADMIN_STATUS = "1.3.6.1.2.1.2.2.1.7"


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A TCP (or, with ``SOCK_DGRAM``, UDP) port on loopback that is free right now."""
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def write_secret(folder: Path, name: str, secret: str) -> Path:
    """A secret file for a registry ``credentials = { file = ... }`` reference."""
    path = folder / name
    path.write_text(secret + "\n")
    path.chmod(0o600)
    return path


@contextmanager
def _process(command: list[str], log: Path, env: dict[str, str] | None = None) -> Iterator[subprocess.Popen]:
    """Run a peer; terminate it (then kill it) when done."""
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def _wait_until_ready(process: subprocess.Popen, log: Path, ready: Callable[[], bool]) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    command = process.args if isinstance(process.args, list | tuple) else [process.args]
    program = str(command[0])
    while not ready():
        if process.poll() is not None:
            raise RuntimeError(f"{program} exited with {process.returncode}:\n{log.read_text()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{program} not ready after {STARTUP_TIMEOUT_S}s:\n{log.read_text()}")
        time.sleep(0.1)


# --- Redfish: sushy-emulator ------------------------------------------------------------------


@dataclass
class RedfishPeer:
    """A running sushy-emulator; ``systems`` maps each fake system's name to its UUID."""

    url: str
    ca_file: Path
    username: str
    password: str
    systems: dict[str, str]
    log: Path

    def system_path(self, name: str) -> str:
        return f"/redfish/v1/Systems/{self.systems[name]}"

    def power_state(self, name: str) -> str:
        """PowerState read with a plain GET, independent of the adapter."""
        response = httpx.get(
            self.url + self.system_path(name),
            auth=(self.username, self.password),
            verify=ssl.create_default_context(cafile=str(self.ca_file)),
            timeout=5,
        )
        response.raise_for_status()
        return response.json()["PowerState"]

    def reset(self, name: str, reset_type: str) -> None:
        """Ask the emulator for a reset with a plain POST (as the server's owner would)."""
        response = httpx.post(
            f"{self.url}{self.system_path(name)}/Actions/ComputerSystem.Reset",
            json={"ResetType": reset_type},
            auth=(self.username, self.password),
            verify=ssl.create_default_context(cafile=str(self.ca_file)),
            timeout=5,
        )
        response.raise_for_status()

    def resets_received(self, name: str) -> list[str]:
        """The ResetTypes the emulator logged for this system, in order."""
        pattern = re.compile(rf'System "{re.escape(self.systems[name])}" power state set to "(\w+)"')
        return pattern.findall(self.log.read_text())


@contextmanager
def redfish_peer(power_states: dict[str, str]) -> Iterator[RedfishPeer]:
    """sushy-emulator over HTTPS with a fake system per ``{name: initial PowerState}``."""
    folder = Path(tempfile.mkdtemp(prefix="dunning-redfish-"))
    try:
        ca = trustme.CA()
        ca_file, cert_file, key_file = folder / "ca.pem", folder / "cert.pem", folder / "key.pem"
        ca.cert_pem.write_to_path(str(ca_file))
        leaf = ca.issue_cert(LOOPBACK)
        leaf.cert_chain_pems[0].write_to_path(str(cert_file))
        leaf.private_key_pem.write_to_path(str(key_file))
        username, password = "dunning", "bmc-secret-1"
        hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
        (folder / "htpasswd").write_text(f"{username}:{hashed}\n")
        systems = {name: f"{index:08d}-0000-4000-8000-000000000000" for index, name in enumerate(power_states, 1)}
        fake_systems = [
            {"uuid": uuid, "name": name, "power_state": power_states[name], "external_notifier": False, "nics": []}
            for name, uuid in systems.items()
        ]
        port = free_port()
        config = folder / "emulator.conf"
        # the emulator reads its configuration as Python; logging at INFO makes it log each ResetType it gets
        config.write_text(
            "import logging\n"
            "logging.basicConfig(level=logging.INFO)\n"
            f"SUSHY_EMULATOR_LISTEN_IP = {LOOPBACK!r}\n"
            f"SUSHY_EMULATOR_LISTEN_PORT = {port}\n"
            "SUSHY_EMULATOR_FAKE_DRIVER = True\n"
            f"SUSHY_EMULATOR_FAKE_SYSTEMS = {fake_systems!r}\n"
            f"SUSHY_EMULATOR_STATE_DIR = {str(folder / 'state')!r}\n"
            f"SUSHY_EMULATOR_AUTH_FILE = {str(folder / 'htpasswd')!r}\n"
            f"SUSHY_EMULATOR_SSL_CERT = {str(cert_file)!r}\n"
            f"SUSHY_EMULATOR_SSL_KEY = {str(key_file)!r}\n"
        )
        log = folder / "emulator.log"
        url = f"https://{LOOPBACK}:{port}"
        trust = ssl.create_default_context(cafile=str(ca_file))

        def ready() -> bool:
            try:
                return httpx.get(url + "/redfish/v1/", verify=trust, timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        command = [sys.executable, "-m", "sushy_tools.emulator.main", "--config", str(config)]
        with _process(command, log) as process:
            _wait_until_ready(process, log, ready)
            yield RedfishPeer(url, ca_file, username, password, systems, log)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# --- SNMP: snmpsim ----------------------------------------------------------------------------


@functools.cache
def _mib_view() -> MibViewController:
    return MibViewController(MibBuilder())


@dataclass
class SnmpPeer:
    """A running snmpsim agent; ``community`` is also the SNMPv3 context name of its data."""

    endpoint: str
    port: int
    community: str
    user: str
    auth_key: str
    priv_key: str
    aes256_users: dict[str, str] = field(default_factory=dict)  # key extension -> user with AES-256 privacy

    async def admin_status(self, *ports: int, timeout: float = 2.0) -> dict[int, int]:
        """ifAdminStatus of these ports, read with our own SNMPv2c GET."""
        oids = [ObjectType(ObjectIdentity(f"{IF_ADMIN_STATUS}.{port}")) for port in ports]
        var_binds = await self._v2c(get_cmd, oids, timeout)
        return {port: int(value) for port, (_, value) in zip(ports, var_binds, strict=True)}

    async def set_admin_status(self, port: int, value: int) -> None:
        """Set a port's ifAdminStatus with our own SNMPv2c SET (as the switch's operator would)."""
        await self._v2c(set_cmd, [ObjectType(ObjectIdentity(f"{IF_ADMIN_STATUS}.{port}"), Integer(value))], 2.0)

    async def _v2c(self, command: Callable, var_binds: list[ObjectType], timeout: float) -> list:
        engine = SnmpEngine()
        engine.cache["mibViewController"] = _mib_view()  # see activities.equipment.snmp.shared_mib_view
        try:
            target = await UdpTransportTarget.create((LOOPBACK, self.port), timeout=timeout, retries=1)
            indication, status, _, answered = await command(
                engine, CommunityData(self.community, mpModel=1), target, ContextData(), *var_binds
            )
        finally:
            engine.close_dispatcher()
        assert not indication and not status, (indication, status)
        return list(answered)


@contextmanager
def snmp_peer(admin_status: dict[int, int]) -> Iterator[SnmpPeer]:
    """snmpsim answering for ``{ifIndex: ifAdminStatus}`` (writable), over v2c and v3 (SHA-256 + AES-128;
    and a user with SHA-1 + AES-256 per key extension, in ``aes256_users``)."""
    folder = Path(tempfile.mkdtemp(prefix="dunning-snmp-"))
    try:
        community = "switch-cluj"
        data = folder / "data"
        data.mkdir()
        rows = ["1.3.6.1.2.1.1.1.0|4|Dunning test switch"]
        rows += [f"{IF_ADMIN_STATUS}.{port}|2:writecache|value={value}" for port, value in sorted(admin_status.items())]
        (data / f"{community}.snmprec").write_text("\n".join(rows) + "\n")
        port = free_port(socket.SOCK_DGRAM)
        peer = SnmpPeer(
            endpoint=f"udp://{LOOPBACK}:{port}",
            port=port,
            community=community,
            user="dunning",
            auth_key="snmp-auth-key-1",
            priv_key="snmp-priv-key-1",
        )
        command = [
            str(Path(sys.executable).with_name("snmpsim-command-responder")),
            f"--data-dir={data}",
            f"--cache-dir={folder / 'cache'}",
            f"--agent-udpv4-endpoint={LOOPBACK}:{port}",
            f"--v3-user={peer.user}",
            f"--v3-auth-key={peer.auth_key}",
            "--v3-auth-proto=SHA256",
            f"--v3-priv-key={peer.priv_key}",
            "--v3-priv-proto=AES128",
        ]
        for extension, proto in (("blumenthal", "AES256BLMT"), ("reeder", "AES256")):
            peer.aes256_users[extension] = f"{peer.user}-{extension}"
            command += [
                f"--v3-user={peer.aes256_users[extension]}",
                f"--v3-auth-key={peer.auth_key}",
                "--v3-auth-proto=SHA",  # SHA-1's 20 bytes must be extended to 32 (SHA-256's need not be)
                f"--v3-priv-key={peer.priv_key}",
                f"--v3-priv-proto={proto}",
            ]
        command.append("--log-level=error")

        def ready() -> bool:
            try:
                asyncio.run(peer.admin_status(*admin_status, timeout=0.2))
                return True
            except AssertionError:
                return False

        log = folder / "snmpsim.log"
        # snmpsim refuses to run as root unless told to drop to another user or allowed to stay
        with _process(command, log, env={"SNMPSIM_ALLOW_ROOT": "true"}) as process:
            _wait_until_ready(process, log, ready)
            yield peer
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# --- Webhook: a customer's controller -------------------------------------------------------
