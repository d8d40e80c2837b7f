"""A real net-snmp ``snmpd`` serving virtual interfaces in a network namespace the test creates.

The namespace holds its own loopback and veth pairs only (this machine's interfaces are never
seen by the agent nor touched). snmpd listens on the namespace's 127.0.0.1:161; a relay thread
carries UDP between a port on this machine's loopback and that address, so the adapter talks to
an ordinary ``udp://127.0.0.1:<port>`` endpoint. Tests read the links back with ``ip -n <ns>
link show`` and net-snmp's own ``snmpget`` run inside the namespace, never through the adapter.

Needs root (or CAP_SYS_ADMIN) for ``ip netns add`` and the Debian package ``snmpd`` (``make snmpd``);
where either is missing, ``snmpd_peer`` raises ``Unavailable`` saying which.
"""

from __future__ import annotations

import ctypes
import json
import os
import secrets
import selectors
import shutil
import socket
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.equipment_peers import IF_ADMIN_STATUS, LOOPBACK, _process, _wait_until_ready

CLONE_NEWNET = 0x40000000
AGENT_PORT = 161


class Unavailable(Exception):
    """Network namespaces or snmpd cannot be used here; the message says why."""


@dataclass
class SnmpdPeer:
    """A running snmpd in ``namespace``; ``links`` maps each veth link's name to its ifIndex."""

    namespace: str
    endpoint: str
    links: dict[str, int]
    community: str
    user: str  # SHA-256 + AES-128
    aes256_user: str  # SHA-1 + AES-256 (net-snmp extends the key as Blumenthal's draft says)
    auth_key: str
    priv_key: str
    env: dict[str, str]

    def admin_up(self, *names: str) -> dict[str, bool]:
        """Whether each of these links is administratively up, as ``ip -n <ns> -j link show`` reports it."""
        shown = json.loads(_run(["ip", "-n", self.namespace, "-j", "link", "show"]))
        flags = {link["ifname"]: link["flags"] for link in shown}
        return {name: "UP" in flags[name] for name in names}

    def snmpget_admin_status(self, *names: str) -> dict[str, int]:
        """ifAdminStatus of these links, read by net-snmp's ``snmpget`` (SNMPv2c) inside the namespace."""
        oids = [f"{IF_ADMIN_STATUS}.{self.links[name]}" for name in names]
        output = _run(
            ["ip", "netns", "exec", self.namespace, "snmpget", "-v2c", "-c", self.community, "-Oqv", "-r", "1",
             f"{LOOPBACK}:{AGENT_PORT}", *oids],
            env=self.env,
        )
        return dict(zip(names, map(int, output.split()), strict=True))


def _run(command: list[str], env: dict[str, str] | None = None) -> str:
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=30)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({result.returncode}): {result.stderr.strip()}")
    return result.stdout


def _socket_in(namespace: str) -> socket.socket:
    """A UDP socket that lives in ``namespace`` (made by a thread that entered it; the thread then ends)."""
    made: dict[str, object] = {}

    def enter_and_make() -> None:
        try:
            with open(f"/run/netns/{namespace}") as handle:
                if ctypes.CDLL(None, use_errno=True).setns(handle.fileno(), CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns into {namespace}")
            made["socket"] = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        except OSError as exc:
            made["error"] = exc

    thread = threading.Thread(target=enter_and_make)
    thread.start()
    thread.join()
    if "error" in made:
        raise made["error"]
    return made["socket"]


@contextmanager
def _udp_relay(namespace: str) -> Iterator[int]:
    """Carry datagrams between a port on this machine's loopback and the agent in ``namespace``."""
    outside = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    outside.bind((LOOPBACK, 0))
    inside = _socket_in(namespace)
    inside.connect((LOOPBACK, AGENT_PORT))
    stop = threading.Event()

    def relay() -> None:
        client = None  # the adapter opens one socket per action: answers go to the latest sender
        with selectors.DefaultSelector() as selector:
            selector.register(outside, selectors.EVENT_READ)
            selector.register(inside, selectors.EVENT_READ)
            while not stop.is_set():
                for key, _ in selector.select(timeout=0.2):
                    if key.fileobj is outside:
                        data, client = outside.recvfrom(65535)
                        inside.send(data)
                    else:
                        data = inside.recv(65535)
                        if client is not None:
                            outside.sendto(data, client)

    thread = threading.Thread(target=relay, daemon=True)
    thread.start()
    try:
        yield outside.getsockname()[1]
    finally:
        stop.set()
        thread.join(timeout=5)
        outside.close()
        inside.close()


def _make_namespace(links: dict[str, bool]) -> str:
    """A new namespace with loopback up and a veth pair per link (its far end down and unlisted)."""
    if shutil.which("snmpd") is None or shutil.which("snmpget") is None:
        raise Unavailable("net-snmp's snmpd and snmpget are not installed (Debian packages snmpd, snmp: `make snmpd`)")
    namespace = f"dunning-snmpd-{secrets.token_hex(4)}"
    try:
        _run(["ip", "netns", "add", namespace])
    except (RuntimeError, FileNotFoundError) as exc:
        raise Unavailable(f"cannot create a network namespace here (needs root or CAP_SYS_ADMIN): {exc}") from None
    try:
        _run(["ip", "-n", namespace, "link", "set", "lo", "up"])
        for name, up in links.items():
            _run(["ip", "-n", namespace, "link", "add", name, "type", "veth", "peer", "name", f"{name}-far"])
            if up:
                _run(["ip", "-n", namespace, "link", "set", name, "up"])
    except BaseException:
        _run(["ip", "netns", "del", namespace])
        raise
    return namespace


@contextmanager
def snmpd_peer(links: dict[str, bool]) -> Iterator[SnmpdPeer]:
    """snmpd in a fresh namespace with a veth link per ``{name: admin up}``, over v2c and v3 (authPriv)."""
    namespace = _make_namespace(links)
    folder = Path(tempfile.mkdtemp(prefix="dunning-snmpd-"))
    try:
        community, user, auth_key, priv_key = "switch-netns", "dunning", "snmpd-auth-key-1", "snmpd-priv-key-1"
        aes256_user = f"{user}-aes256"
        (folder / "snmpd.conf").write_text(
            f"agentaddress udp:{LOOPBACK}:{AGENT_PORT}\n"
            f"rwcommunity {community} {LOOPBACK}\n"
            f'createUser {user} SHA-256 "{auth_key}" AES "{priv_key}"\n'
            f'createUser {aes256_user} SHA "{auth_key}" AES-256 "{priv_key}"\n'
            f"rwuser {user} priv\n"
            f"rwuser {aes256_user} priv\n"
        )
        # no system configuration, no MIB files (numeric OIDs only), state kept in the test's folder
        env = {"SNMPCONFPATH": str(folder), "SNMP_PERSISTENT_DIR": str(folder / "state"), "MIBS": ""}
        shown = json.loads(_run(["ip", "-n", namespace, "-j", "link", "show"]))
        peer = SnmpdPeer(
            namespace=namespace,
            endpoint="",
            links={link["ifname"]: link["ifindex"] for link in shown if link["ifname"] in links},
            community=community,
            user=user,
            aes256_user=aes256_user,
            auth_key=auth_key,
            priv_key=priv_key,
            env=env,
        )
        command = [
            "ip", "netns", "exec", namespace, "snmpd", "-f", "-C", "-c", str(folder / "snmpd.conf"),
            "-Lf", str(folder / "snmpd.log"), "-p", str(folder / "snmpd.pid"),
        ]

        def ready() -> bool:
            try:
                peer.snmpget_admin_status(*links)
                return True
            except RuntimeError:
                return False

        log = folder / "snmpd.out"
        with _process(command, log, env=env) as process:
            _wait_until_ready(process, log, ready)
            with _udp_relay(namespace) as port:
                peer.endpoint = f"udp://{LOOPBACK}:{port}"
                yield peer
    finally:
        _run(["ip", "netns", "del", namespace])
        shutil.rmtree(folder, ignore_errors=True)
