"""Serving the API with uvicorn inside a running event loop, beside the worker (``make run``, ``dunning api``)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator

import uvicorn

from api.app import create_app
from worker.settings import Settings

SHUTDOWN_GRACE_SECONDS = 10


class ApiStartupError(RuntimeError):
    """The API could not start (the reason is in the log above)."""


class _EmbeddedServer(uvicorn.Server):
    """uvicorn without its own signal handling: whoever runs the event loop decides when to stop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve_api(settings: Settings, stop: asyncio.Event, on_started: Callable[[str], None] | None = None) -> None:
    """Serve the API on ``settings.api_host:api_port`` until ``stop`` is set (or the task is cancelled).

    ``on_started`` gets the base URL once the API answers; with ``api_port`` 0 it names the port chosen.
    Raises :class:`ApiStartupError` if the app's start-up (Temporal, Postgres) fails.
    """
    config = uvicorn.Config(
        create_app(settings),
        host=settings.api_host,
        port=settings.api_port,
        lifespan="on",
        log_level="warning",
        timeout_graceful_shutdown=SHUTDOWN_GRACE_SECONDS,
    )
    sock = config.bind_socket()
    server = _EmbeddedServer(config)
    serving = asyncio.create_task(server.serve(sockets=[sock]), name="api")
    stopping = asyncio.create_task(stop.wait())
    try:
        while not (server.started or serving.done() or stop.is_set()):
            await asyncio.wait({serving, stopping}, timeout=0.05)
        if server.started and on_started:
            host, port = sock.getsockname()[:2]
            on_started(f"http://{_url_host(host)}:{port}")
        await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        server.should_exit = True
        stopping.cancel()
        await asyncio.shield(serving)
        sock.close()
    if not server.started and not stop.is_set():
        raise ApiStartupError("the API did not start: see the error above")


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
