"""Before ``dunning dev`` starts anything: is each port it needs free, and if not, who holds it."""

from __future__ import annotations

import socket


class PortTaken(RuntimeError):
    """A port the stack needs is in use; the message names the process and the setting to change."""


def check_ports_free(ports: dict[int, str]) -> None:
    """Raise ``PortTaken`` for the first of ``{port: setting}`` that something on this machine listens on."""
    for port, setting in ports.items():
        if _accepts_connections(port):
            holder = port_holder(port)
            by = f" by {holder}" if holder else ""
            raise PortTaken(
                f"port {port} is in use{by}: stop it (is another `dunning dev` running?) or set {setting} to a free port"
            )


def port_holder(port: int) -> str | None:
    """``pid 123 (temporal server start-dev ...)`` of the process listening on ``port``, when it can be told."""
    try:
        import psutil  # installed with the test extra; without it the message names no process
    except ImportError:
        return None
    try:
        connections = psutil.net_connections(kind="inet")
    except (psutil.AccessDenied, OSError):
        return None
    for connection in connections:
        if connection.status == psutil.CONN_LISTEN and connection.laddr and connection.laddr.port == port:
            if connection.pid is None:
                return "another user's process"
            try:
                command = " ".join(psutil.Process(connection.pid).cmdline()) or psutil.Process(connection.pid).name()
            except psutil.Error:
                command = "?"
            return f"pid {connection.pid} ({command[:80]})"
    return None


def _accepts_connections(port: int) -> bool:
    try:
        with socket.create_connection(("localhost", port), timeout=1):
            return True
    except OSError:
        return False
