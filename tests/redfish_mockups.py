"""Recorded Redfish trees of real BMCs (tests/data/redfish-mockups/<vendor>, see each NOTICE), served on
loopback with a small action layer where a recording cannot act.

The tree is read from the mockup folder as DMTF's Redfish-Mockup-Server lays it out
(``redfish/v1/Systems/1/index.json``); the system's ``PowerState`` is the peer's own state. The action
layer does what the vendors' BMCs do and a static tree cannot: sessions (``X-Auth-Token``, a
``Location`` that may be absolute and name the BMC's host name, ``DELETE``), the reset action with
the ResetTypes the tree lists (others answered 400), iDRAC's 409 "Server is already powered OFF.", a 202
with a task monitor, iLO 4's redirect of paths without a trailing slash, and an OS that shuts down a
while after ``GracefulShutdown`` or a press of the power button (or ignores them). HTTPS uses a
trustme CA and a certificate issued to the names given, like a factory certificate naming a host.

Tests read the outcome themselves: ``read_power_state`` is a plain HTTP GET, and the peer's memory
records every ResetType and session.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import shutil
import ssl
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import trustme

from tests.equipment_peers import LOOPBACK

MOCKUPS = Path(__file__).parent / "data" / "redfish-mockups"
SYSTEM_PATHS = {
    "idrac": "/redfish/v1/Systems/System.Embedded.1",
    "ilo5": "/redfish/v1/Systems/1/",
    "openbmc": "/redfish/v1/Systems/system",
    "supermicro": "/redfish/v1/Systems/1",
}
ALREADY_OFF_409 = {  # what iDRAC answers to a power-off when the server is off
    "error": {
        "@Message.ExtendedInfo": [
            {"Message": "Server is already powered OFF.", "MessageId": "IDRAC.2.8.PSU501", "Severity": "Informational"}
        ],
        "code": "Base.1.12.GeneralError",
        "message": "A general error has occurred. See ExtendedInfo for more information",
    }
}


def _refusal(reset_type: str) -> dict:
    return {
        "error": {
            "code": "Base.1.8.ActionParameterNotSupported",
            "message": "The parameter supplied for the action is not supported on the resource.",
            "@Message.ExtendedInfo": [
                {
                    "MessageId": "Base.1.8.ActionParameterNotSupported",
                    "Message": f"The parameter ResetType={reset_type} for the action Reset is not supported.",
                }
            ],
        }
    }


def _strip(path: str) -> str:
    return path.rstrip("/") or "/"


@dataclass
class MockupBmc:
    """A vendor's recorded tree served with the action layer; its fields are what the test set and saw."""

    vendor: str
    url: str
    username: str
    password: str
    power_state: str
    ca_file: Path | None = None
    fingerprint: str | None = None  # SHA-256 of the BMC's certificate, AB:CD:… as its web page shows it
    tls_names: tuple[str, ...] = ()
    os_shutdown_s: float | None = 0.0  # the OS is off this long after a soft power-off; None: it ignores it
    refuse: set[str] = field(default_factory=set)  # ResetTypes answered 400 although listed
    finishes_shutdown_at_force_off: bool = False  # the OS gets off just as ForceOff arrives (iDRAC 409)
    task_polls: int = 0  # >0: resets answered 202, done once the task monitor was read this often
    redirect_without_slash: bool = False  # iLO 4: /redfish/v1/Systems -> 301 /redfish/v1/Systems/
    redirect_host: str | None = None  # the redirect is absolute and names this host
    session_host: str | None = None  # the session Location is absolute and names this host
    resets: list[str] = field(default_factory=list)
    answers: list[tuple[str, int]] = field(default_factory=list)
    sessions_open: dict[str, str] = field(default_factory=dict)
    sessions_opened: int = 0
    lock: threading.RLock = field(default_factory=threading.RLock)
    _off_at: float | None = None
    _tasks: dict[str, list] = field(default_factory=dict)

    @property
    def system_path(self) -> str:
        return SYSTEM_PATHS[self.vendor]

    def read_power_state(self) -> str:
        """PowerState read with a plain GET, independent of the adapter."""
        verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=str(self.ca_file)) if self.ca_file else False
        extensions = {"sni_hostname": self.tls_names[0]} if self.tls_names else {}
        with httpx.Client(base_url=self.url, verify=verify, auth=(self.username, self.password), timeout=5) as client:
            response = client.get(self.system_path, extensions=extensions)
        response.raise_for_status()
        return response.json()["PowerState"]

    # --- the action layer ------------------------------------------------------------------

    def document(self, path: str) -> dict | None:
        with self.lock:
            if _strip(path) in self._tasks:
                return self._task(_strip(path))
            file = MOCKUPS / self.vendor / _strip(path).lstrip("/") / "index.json"
            if not file.is_file():
                return None
            document = json.loads(file.read_text())
            if _strip(path) == _strip(self.system_path):
                self._settle()
                document["PowerState"] = self.power_state
            return document

    def allowed_resets(self) -> set[str]:
        reset = json.loads((MOCKUPS / self.vendor / self.system_path.strip("/") / "index.json").read_text())
        reset = reset["Actions"]["#ComputerSystem.Reset"]
        allowed = set(reset.get("ResetType@Redfish.AllowableValues") or [])
        if "@Redfish.ActionInfo" in reset:
            info = self.document(reset["@Redfish.ActionInfo"]) or {}
            allowed |= {v for p in info.get("Parameters", []) for v in p.get("AllowableValues", [])}
        return allowed

    def reset_target(self) -> str:
        system = json.loads((MOCKUPS / self.vendor / self.system_path.strip("/") / "index.json").read_text())
        return system["Actions"]["#ComputerSystem.Reset"]["target"]

    def reset(self, reset_type: str) -> tuple[int, dict, dict[str, str]]:
        """Status, body and headers of the answer to a ComputerSystem.Reset."""
        with self.lock:
            self.resets.append(reset_type)
            self._settle()
            if reset_type not in self.allowed_resets() or reset_type in self.refuse:
                return self._answered(reset_type, 400, _refusal(reset_type))
            if self.vendor == "idrac" and reset_type in ("ForceOff", "GracefulShutdown"):
                if self.finishes_shutdown_at_force_off and reset_type == "ForceOff":
                    self.power_state = "Off"
                if self.power_state == "Off":
                    return self._answered(reset_type, 409, ALREADY_OFF_409)
            if self.task_polls:
                task = f"/redfish/v1/TaskService/Tasks/JID_{len(self._tasks) + 1}"
                self._tasks[task] = [self.task_polls, reset_type]
                return self._answered(reset_type, 202, self._task(task, peek=True), {"Location": task})
            self._apply(reset_type)
            return self._answered(reset_type, 204, {})

    def _answered(self, reset_type: str, status: int, body: dict, headers: dict | None = None) -> tuple:
        self.answers.append((reset_type, status))
        return status, body, headers or {}

    def _apply(self, reset_type: str) -> None:
        if reset_type in ("On", "ForceOn") or (reset_type == "PushPowerButton" and self.power_state == "Off"):
            self.power_state, self._off_at = "On", None
        elif reset_type == "ForceOff":
            self.power_state, self._off_at = "Off", None
        elif reset_type in ("GracefulShutdown", "PushPowerButton") and self.os_shutdown_s is not None:
            self._off_at = time.monotonic() + self.os_shutdown_s

    def _settle(self) -> None:
        if self._off_at is not None and time.monotonic() >= self._off_at:
            self.power_state, self._off_at = "Off", None

    def _task(self, path: str, peek: bool = False) -> dict:
        entry = self._tasks[path]
        if not peek and entry[0] > 0:
            entry[0] -= 1
            if entry[0] == 0:
                self._apply(entry[1])
        state = "Running" if entry[0] > 0 else "Completed"
        return {"@odata.id": path, "@odata.type": "#Task.v1_4_3.Task", "Id": path.rsplit("/", 1)[1], "TaskState": state}

    def task_running(self, path: str) -> bool:
        return self._tasks[_strip(path)][0] > 0

    def open_session(self) -> tuple[str, str]:
        with self.lock:
            self.sessions_opened += 1
            token, path = secrets.token_hex(16), f"/redfish/v1/SessionService/Sessions/{self.sessions_opened}"
            self.sessions_open[token] = path
            return token, path


def _handler(bmc: MockupBmc, scheme: str, port: int) -> type[BaseHTTPRequestHandler]:
    sessions_path = _strip(((bmc.document("/redfish/v1") or {}).get("Links") or {}).get("Sessions", {}).get("@odata.id", ""))

    class Handler(BaseHTTPRequestHandler):
        def _answer(self, status: int, body: dict | None = None, headers: dict[str, str] | None = None) -> None:
            payload = json.dumps(body).encode() if body is not None else b""
            self.send_response(status)
            for name, value in {"Content-Type": "application/json", **(headers or {})}.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def _body(self) -> dict:
            raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            return json.loads(raw) if raw else {}

        def _authorised(self) -> bool:
            if self.headers.get("X-Auth-Token") in bmc.sessions_open:
                return True
            expected = base64.b64encode(f"{bmc.username}:{bmc.password}".encode()).decode()
            return self.headers.get("Authorization") == f"Basic {expected}"

        def _path(self) -> str | None:
            """The request's path, or None after answering a redirect (iLO 4) or a refusal."""
            path = urlsplit(self.path).path
            if bmc.redirect_without_slash and not path.endswith("/"):
                host = f"{scheme}://{bmc.redirect_host}:{port}" if bmc.redirect_host else ""
                self._answer(301, None, {"Location": f"{host}{path}/"})
                return None
            if _strip(path) not in ("/redfish/v1", sessions_path) and not self._authorised():
                self._answer(401, {"error": {"message": "authentication required"}})
                return None
            return path

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            path = self._path()
            if path is None:
                return
            document = bmc.document(path)
            if document is None:
                return self._answer(404, {"error": {"message": f"{path} not found"}})
            running = _strip(path) in bmc._tasks and bmc.task_running(path)
            self._answer(202 if running else 200, document)

        def do_POST(self) -> None:  # noqa: N802
            path = self._path()
            if path is None:
                return
            body = self._body()
            if _strip(path) == sessions_path:
                if (body.get("UserName"), body.get("Password")) != (bmc.username, bmc.password):
                    return self._answer(401, {"error": {"message": "bad credentials"}})
                token, location = bmc.open_session()
                if bmc.session_host:
                    location = f"{scheme}://{bmc.session_host}:{port}{location}"
                return self._answer(201, {"@odata.id": location}, {"X-Auth-Token": token, "Location": location})
            if _strip(path) == _strip(bmc.reset_target()):
                status, answer, headers = bmc.reset(body.get("ResetType", ""))
                return self._answer(status, answer if status != 204 else None, headers)
            self._answer(405, {"error": {"message": "not an action"}})

        def do_DELETE(self) -> None:  # noqa: N802
            path = self._path()
            if path is None:
                return
            with bmc.lock:
                token = self.headers.get("X-Auth-Token")
                if bmc.sessions_open.get(token) != _strip(path):
                    return self._answer(404, {"error": {"message": "no such session"}})
                del bmc.sessions_open[token]
            self._answer(204)

        def log_message(self, *args) -> None:
            pass

    return Handler


@contextmanager
def mockup_bmc(vendor: str, power_state: str = "On", tls_names: tuple[str, ...] = (), **behaviour) -> Iterator[MockupBmc]:
    """The vendor's tree on a loopback port: HTTPS with a certificate for ``tls_names`` if given, else HTTP."""
    server = ThreadingHTTPServer((LOOPBACK, 0), BaseHTTPRequestHandler)
    port = server.server_address[1]
    scheme = "https" if tls_names else "http"
    bmc = MockupBmc(vendor, f"{scheme}://{LOOPBACK}:{port}", "dunning", "bmc-secret-2", power_state, **behaviour)
    folder = Path(tempfile.mkdtemp(prefix="dunning-mockup-"))
    if tls_names:
        ca = trustme.CA()
        leaf = ca.issue_cert(*tls_names)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        leaf.configure_cert(context)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        ca.cert_pem.write_to_path(str(folder / "ca.pem"))
        der = ssl.PEM_cert_to_DER_cert(leaf.cert_chain_pems[0].bytes().decode())
        bmc.ca_file, bmc.tls_names = folder / "ca.pem", tls_names
        bmc.fingerprint = ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())
    server.RequestHandlerClass = _handler(bmc, scheme, port)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield bmc
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
        shutil.rmtree(folder, ignore_errors=True)
