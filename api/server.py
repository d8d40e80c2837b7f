"""Serving the API with uvicorn inside a running event loop, beside the worker (``make run``, ``dunning api``)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import uvicorn

from api.app import create_app
from api.serving import serve
from client.settings import Settings

SHUTDOWN_GRACE_SECONDS = 10


async def serve_api(settings: Settings, stop: asyncio.Event, on_started: Callable[[str], None] | None = None) -> None:
    """Serve the API on ``settings.api_host:api_port`` until ``stop`` is set (or the task is cancelled).

    ``on_started`` gets the base URL once the API answers; with ``api_port`` 0 it names the port chosen.
    Raises ``ServerStartupError`` if the app's start-up (Temporal, Postgres) fails.
    """
    config = uvicorn.Config(
        create_app(settings),
        host=settings.api_host,
        port=settings.api_port,
        lifespan="on",
        log_level="warning",
        log_config=None,  # its records go through the process's logging (client.logs)
        timeout_graceful_shutdown=SHUTDOWN_GRACE_SECONDS,
    )
    await serve(config, "API", stop, on_started, port_setting="DUNNING_API_PORT")
