"""The embedded stack with the Temporal UI, for tests that drive the UI in a real browser.

The Temporal dev server serves its UI on a free port and points it at a codec server started
here on another; a worker runs the real invoice workflow with recording activities through a
client that encrypts every payload. The browser is Debian's headless Chromium, driven by Playwright.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.async_api import Browser, BrowserContext, Route, async_playwright
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from api.codec_server import serve_codec
from bench.recording import Recorder, recording_worker
from client.codec import AesGcmCodec, with_encryption
from tests.conftest import free_port
from worker.embedded import start_temporal_dev_server

NAMESPACE = "default"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
STARTUP_TIMEOUT = 30.0
PAGE_TIMEOUT_MS = 20_000


@dataclass
class UiStack:
    """A running dev server with its UI, the codec server the UI calls, and a worker."""

    ui_url: str
    codec_url: str
    client: Client
    """Encrypts every payload, as the service does with keys set."""
    task_queue: str
    """Served by a worker running the real invoice workflow with recording activities."""


@asynccontextmanager
async def codec_server(codec: AesGcmCodec, allowed_origin: str) -> AsyncIterator[str]:
    """The codec server on a free loopback port, callable from ``allowed_origin``; yields its URL."""
    stop, started = asyncio.Event(), asyncio.get_running_loop().create_future()
    serving = asyncio.create_task(serve_codec("127.0.0.1", 0, codec, [allowed_origin], stop, on_started=started.set_result))
    try:
        yield await asyncio.wait_for(asyncio.shield(started), timeout=STARTUP_TIMEOUT)
    finally:
        stop.set()
        await asyncio.wait_for(serving, timeout=STARTUP_TIMEOUT)


async def wait_for_ui(ui_url: str) -> None:
    """Poll the UI until it serves its page: it starts a moment after the frontend answers."""
    deadline = asyncio.get_running_loop().time() + STARTUP_TIMEOUT
    async with httpx.AsyncClient(timeout=5) as http:
        while True:
            try:
                if (await http.get(ui_url)).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if asyncio.get_running_loop().time() > deadline:
                raise RuntimeError(f"the Temporal UI at {ui_url} did not answer within {STARTUP_TIMEOUT:g} s")
            await asyncio.sleep(0.2)


@asynccontextmanager
async def running_ui_stack(data_dir: Path) -> AsyncIterator[UiStack]:
    """Start the codec server, the dev server with its UI (state in ``data_dir``) and a worker; stop them after."""
    port, ui_port = free_port(), free_port()
    ui_url = f"http://localhost:{ui_port}"
    codec = AesGcmCodec({"ui-test": os.urandom(32)}, "ui-test")
    async with codec_server(codec, allowed_origin=ui_url) as codec_url:
        server = await asyncio.to_thread(start_temporal_dev_server, data_dir, port, ui_port, NAMESPACE, codec_url)
        try:
            await wait_for_ui(ui_url)
            client = await Client.connect(
                f"localhost:{port}", namespace=NAMESPACE, data_converter=with_encryption(pydantic_data_converter, codec)
            )
            async with recording_worker(client, Recorder()) as task_queue:
                yield UiStack(ui_url, codec_url, client, task_queue)
        finally:
            await asyncio.to_thread(server.stop)


@asynccontextmanager
async def headless_chromium() -> AsyncIterator[Browser]:
    """Debian's Chromium, headless; fails the test (never skips) when it is not installed."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(
            f"{CHROMIUM} is missing: install Debian's browser (apt-get install -y chromium) to run the UI test",
            pytrace=False,
        )
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, timeout=30_000)
        try:
            yield browser
        finally:
            await browser.close()


@asynccontextmanager
async def loopback_only_context(browser: Browser, unreachable: str | None = None) -> AsyncIterator[BrowserContext]:
    """A fresh browser context that can reach loopback servers only (the UI fetches a news feed from the
    internet otherwise), and not even ``unreachable`` (a base URL), as if that server were down."""

    down = unreachable.rstrip("/") + "/" if unreachable else None

    def blocked(url: str) -> bool:
        return urlsplit(url).hostname not in LOOPBACK_HOSTS or (down is not None and url.startswith(down))

    async def refuse(route: Route) -> None:
        await route.abort("connectionrefused")

    context = await browser.new_context(viewport={"width": 1400, "height": 1000})
    try:
        context.set_default_timeout(PAGE_TIMEOUT_MS)
        await context.route(blocked, refuse)
        yield context
    finally:
        await context.close()
