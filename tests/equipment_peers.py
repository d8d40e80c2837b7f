"""Real peers for the equipment adapters, started on loopback by the tests and stopped after them.

- Redfish: ``sushy-emulator`` (sushy-tools) with its fake system driver, HTTPS with a trustme CA,
  basic authentication from an htpasswd (bcrypt) file; it has no SessionService, so a small
  session front of ours stands before it for the session-authentication test.
- SNMP: ``snmpsim-command-responder`` (snmpsim) with a data file whose ifAdminStatus rows are
  writable (the ``writecache`` variation module), SNMPv2c community and an SNMPv3 USM user.
- Webhook: a customer's controller as a small ``http.server`` in a thread that checks each
  signature itself, keeps a state per equipment and counts calls per idempotency key.

Each peer is read by the tests directly (HTTP GET, their own SNMP GET, the controller's memory),
never through the adapter under test.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import re
import secrets
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

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
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from tests.conftest import whsec

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
    while not ready():
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[0]} exited with {process.returncode}:\n{log.read_text()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{process.args[0]} not ready after {STARTUP_TIMEOUT_S}s:\n{log.read_text()}")
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


@dataclass
class SessionFront:
    """What the session front saw: sessions opened and closed, calls refused for want of a token."""

    url: str
    open_sessions: dict[str, str] = field(default_factory=dict)  # token -> session path
    opened: int = 0
    refused: int = 0


@contextmanager
def redfish_session_front(bmc: RedfishPeer) -> Iterator[SessionFront]:
    """A Redfish SessionService in front of sushy-emulator, which has none.

    Sessions are opened with ``POST /redfish/v1/SessionService/Sessions`` (the credentials are
    checked against the emulator itself), answered with ``X-Auth-Token`` and ``Location``, closed
    with ``DELETE``; every other call needs a live token and is passed on to the emulator, whose
    state stays the truth. Only the session handshake is ours.
    """
    port = free_port()
    front = SessionFront(url=f"http://{LOOPBACK}:{port}")
    upstream = httpx.Client(base_url=bmc.url, verify=ssl.create_default_context(cafile=str(bmc.ca_file)), timeout=5)
    sessions = "/redfish/v1/SessionService/Sessions"

    class Handler(BaseHTTPRequestHandler):
        def _answer(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            for name, value in {"Content-Type": "application/json", **(headers or {})}.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _forward(self, method: str) -> None:
            if self.headers.get("X-Auth-Token") not in front.open_sessions:
                front.refused += 1
                return self._answer(401, b'{"error": "no session"}')
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            answer = upstream.request(
                method, self.path, content=body or None, auth=(bmc.username, bmc.password),
                headers={"Content-Type": "application/json"} if body else None,
            )
            self._answer(answer.status_code, answer.content)

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            if self.path.rstrip("/") == "/redfish/v1":
                root = upstream.get("/redfish/v1/").json()
                root.setdefault("Links", {})["Sessions"] = {"@odata.id": sessions}
                return self._answer(200, json.dumps(root).encode())
            self._forward("GET")

        def do_POST(self) -> None:  # noqa: N802
            if self.path != sessions:
                return self._forward("POST")
            login = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            check = upstream.get("/redfish/v1/Systems", auth=(login.get("UserName", ""), login.get("Password", "")))
            if check.status_code != 200:
                return self._answer(401, b'{"error": "bad credentials"}')
            front.opened += 1
            token, location = secrets.token_hex(16), f"{sessions}/{front.opened}"
            front.open_sessions[token] = location
            self._answer(201, b"{}", {"X-Auth-Token": token, "Location": location})

        def do_DELETE(self) -> None:  # noqa: N802
            token = self.headers.get("X-Auth-Token")
            if front.open_sessions.get(token) != self.path:
                return self._answer(404)
            del front.open_sessions[token]
            self._answer(204)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer((LOOPBACK, port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield front
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
        upstream.close()


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


@dataclass
class ControllerPeer:
    """What the controller saw: states per equipment, calls per idempotency key, bad signatures."""

    url: str
    secret: str
    states: dict[str, str] = field(default_factory=dict)
    calls: list[dict] = field(default_factory=list)
    calls_per_key: Counter = field(default_factory=Counter)
    bad_signatures: int = 0
    delay_s: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def state(self, equipment_id: str) -> str:
        with self.lock:
            return self.states.get(equipment_id, "active")

    def calls_to(self, equipment_id: str, action: str | None = None) -> list[dict]:
        with self.lock:
            return [c for c in self.calls if c["equipment_id"] == equipment_id and action in (None, c["action"])]

    def verified(self, headers: Any, body: bytes) -> bool:
        """The receiving side of the scheme: the Standard Webhooks reference verifier, not the adapter's code."""
        try:
            Webhook(whsec(self.secret)).verify(body, dict(headers), json_parse=False)
        except WebhookVerificationError:
            return False
        return True

    def handle(self, headers, body: bytes) -> tuple[int, dict]:
        signed = self.verified(headers, body)
        with self.lock:
            if not signed:
                self.bad_signatures += 1
                return 401, {"error": "bad signature"}
            call = json.loads(body)
            key = headers.get("Idempotency-Key", "")
            first_time = self.calls_per_key[key] == 0
            self.calls_per_key[key] += 1
            self.calls.append({**call, "idempotency_key": key})
            equipment_id = call["equipment_id"]
            if first_time and call["action"] in ("suspend", "restore"):
                self.states[equipment_id] = "suspended" if call["action"] == "suspend" else "active"
            return 200, {"state": self.states.get(equipment_id, "active")}


def controller_server(peer: ControllerPeer, port: int) -> ThreadingHTTPServer:
    """An HTTP server on a loopback ``port`` that answers as ``peer`` (serve it from a thread)."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            time.sleep(peer.delay_s)
            status, answer = peer.handle(self.headers, body)
            payload = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args) -> None:
            pass

    return ThreadingHTTPServer((LOOPBACK, port), Handler)


@contextmanager
def controller_peer(secret: str = "controller-secret-1") -> Iterator[ControllerPeer]:
    """The controller on a loopback port, served from a thread."""
    port = free_port()
    peer = ControllerPeer(url=f"http://{LOOPBACK}:{port}/dunning", secret=secret)
    server = controller_server(peer, port)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield peer
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
