"""``dunning dev`` (``worker.dev_stack``) run in the test's event loop on free ports, in a fresh data folder."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from unittest import mock

from client.settings import Settings
from tests.conftest import free_port
from worker.dev_stack import run_dev_stack

STARTUP_TIMEOUT_S = 120


@dataclass
class DevStack:
    """A running stack: its settings, the environment that points a ``dunning`` command at it, and the
    lines it printed so far."""

    settings: Settings
    env: dict[str, str]
    lines: list[str] = field(default_factory=list)

    @property
    def data_dir(self) -> Path:
        return self.settings.data_dir

    def process_env(self) -> dict[str, str]:
        """This process's environment with the stack's settings, for a ``dunning`` process."""
        return {**os.environ, **self.env}

    def printed(self, fragment: str) -> list[str]:
        return [line for line in self.lines if fragment in line]


@asynccontextmanager
async def dev_stack(demo_unit: timedelta | None = None, **env: str) -> AsyncIterator[DevStack]:
    """Run the stack until the block ends; yields once the API answers (the banner is printed by then).

    The data folder is under /tmp, not pytest's folder (see ``tests.conftest.new_pgdata``)."""
    data_dir = Path(tempfile.mkdtemp(prefix="dunning-dev-"))
    env = {
        "DUNNING_DATA_DIR": str(data_dir),
        "DUNNING_TEMPORAL_ADDRESS": f"localhost:{free_port()}",
        "DUNNING_TEMPORAL_UI_PORT": str(free_port()),
        "DUNNING_API_PORT": str(free_port()),
        "DUNNING_SMTP_PORT": str(free_port()),
        **env,
    }
    with mock.patch.dict(os.environ, env):
        settings = Settings()
    stack = DevStack(settings, env)
    running = asyncio.create_task(run_dev_stack(settings, demo_unit=demo_unit, say=stack.lines.append))
    try:
        deadline = asyncio.get_running_loop().time() + STARTUP_TIMEOUT_S
        while not _banner_printed(stack):
            if running.done():
                running.result()
                raise AssertionError("the dev stack ended before it was up")
            assert asyncio.get_running_loop().time() < deadline, "the dev stack did not come up"
            await asyncio.sleep(0.2)
        yield stack
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
        shutil.rmtree(data_dir, ignore_errors=True)


def _banner_printed(stack: DevStack) -> bool:
    return any("dunning dev: ready" in line for line in stack.lines)
