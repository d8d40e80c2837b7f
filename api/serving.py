"""Serving an ASGI app with uvicorn inside a running event loop, beside the worker (API, codec server)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator

import uvicorn

from client.ports import port_holder


class ServerStartupError(RuntimeError):
    """The server could not start (the reason is in the log above)."""


class _EmbeddedServer(uvicorn.Server):
    """uvicorn without its own signal handling: whoever runs the event loop decides when to stop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve(
    config: uvicorn.Config, name: str, stop: asyncio.Event, on_started: Callable[[str], None] | None = None,
    port_setting: str = "its port setting",
) -> None:
    """Serve ``config`` until ``stop`` is set (or the task is cancelled).

    ``on_started`` gets the base URL once it listens; with port 0 it names the port chosen.
    Raises :class:`ServerStartupError` if it cannot start (port taken, start-up failed).
    """
    where = f"the {name} cannot listen on {config.host}:{config.port}"
    if config.port and (holder := port_holder(config.port)):
        raise ServerStartupError(f"{where}: the port is in use by {holder}: stop it or set {port_setting}")
    try:
        sock = config.bind_socket()
    except SystemExit:  # uvicorn exits the process when it cannot bind; here that is the caller's decision
        raise ServerStartupError(f"{where}: see the error above; free the port or set {port_setting}") from None
    server = _EmbeddedServer(config)
    serving = asyncio.create_task(server.serve(sockets=[sock]), name=name)
    stopping = asyncio.create_task(stop.wait())
    try:
        while not (server.started or serving.done() or stop.is_set()):
            await asyncio.wait({serving, stopping}, timeout=0.05)
        if server.started and on_started:
            host, port = sock.getsockname()[:2]
            on_started(f"http://{f'[{host}]' if ':' in host else host}:{port}")
        await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        server.should_exit = True
        stopping.cancel()
        await asyncio.shield(serving)
        sock.close()
    if not server.started and not stop.is_set():
        raise ServerStartupError(f"the {name} did not start on {config.host}:{config.port}: see the error above")
