"""Real peers for the equipment adapters, started on loopback by the tests and stopped after them.

- Redfish and SNMP: ``worker.peers`` (sushy-emulator, snmpsim), shared with ``dunning dev --demo``;
  sushy-emulator has no SessionService, so a small session front of ours stands before it for the
  session-authentication test.
- Webhook: a customer's controller as a small ``http.server`` in a thread that checks each
  signature itself, keeps a state per equipment and counts calls per idempotency key.

Each peer is read by the tests directly (HTTP GET, their own SNMP GET, the controller's memory),
never through the adapter under test.
"""

from __future__ import annotations

import json
import secrets
import ssl
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from tests.conftest import whsec
from worker.peers import (
    IF_ADMIN_STATUS,
    LOOPBACK,
    RedfishPeer,
    SnmpPeer,
    _process,
    _wait_until_ready,
    free_port,
    redfish_peer,
    snmp_peer,
    write_secret,
)

__all__ = [
    "IF_ADMIN_STATUS", "LOOPBACK", "RedfishPeer", "SnmpPeer", "_process", "_wait_until_ready", "free_port",
    "redfish_peer", "snmp_peer", "write_secret", "ControllerPeer", "SessionFront", "controller_peer",
    "controller_server", "redfish_session_front",
]


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
            self.calls.append({**call, "idempotency_key": key, "at": time.time()})
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
