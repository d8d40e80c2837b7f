"""The embedded stack for the API tests: the dev server, a Postgres database, a real worker and SMTP
server, and the API served by uvicorn on a free loopback port, driven over real HTTP.

The fixture is registered for every test module by ``conftest.py`` (``pytest_plugins``); it is
module-scoped: one stack per test module, its own database and task queue.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import httpx
import pytest
from standardwebhooks.webhooks import Webhook
from temporalio.client import Client
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from activities.ledger import apply_schema, create_pool
from api.server import serve_api
from client.invoices import invoice_handle
from client.settings import Settings
from client.temporal import connect
from tests.conftest import SmtpServer, whsec
from worker.embedded import provision_database
from worker.worker import build_worker

OPS_TOKEN = "ops-" + uuid.uuid4().hex
INTEGRATION_TOKEN = "integration-" + uuid.uuid4().hex
METRICS_TOKEN = "metrics-" + uuid.uuid4().hex
WEBHOOK_SECRET = "whsec-" + uuid.uuid4().hex
STRIPE_SECRET = "whsec_" + uuid.uuid4().hex
PROBLEM_JSON = "application/problem+json"
TIME_ZONE = "Europe/Bucharest"


@dataclass
class ApiStack:
    """A running API and what the tests need to look behind it."""

    url: str
    settings: Settings
    client: Client
    pool: asyncpg.Pool
    smtp: SmtpServer

    def http(self, token: str | None = OPS_TOKEN) -> httpx.AsyncClient:
        """An HTTP client for the API, with ``token`` as its bearer token (None: no token)."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.AsyncClient(base_url=self.url, headers=headers, timeout=30)

    async def history_length(self, invoice_id: str) -> int:
        """Events in the invoice workflow's history (0 if there is no such workflow)."""
        try:
            return len((await invoice_handle(self.client, invoice_id).fetch_history()).events)
        except Exception:  # noqa: BLE001 - no workflow: nothing in its history
            return 0


# one piece of equipment, another customer's: invoices of CUST-API may not name it
EQUIPMENT_REGISTRY = """
[[equipment]]
id = "fw-other-customer"
customer_id = "CUST-OTHER"
kind = "webhook"
endpoint = "https://controller.other.example/dunning"
credentials = { env = "UNUSED_SECRET" }
"""


@pytest.fixture(scope="module")
async def api_stack(dev_env: WorkflowEnvironment, postgres_url: str) -> AsyncIterator[ApiStack]:
    """A fresh database, a worker on a fresh task queue, an SMTP server, and the API on a free port.

    The database is provisioned as ``dunning dev`` provisions its own: the owner role applies the
    migrations, the worker and the API run as the service's role (``stack.pool`` too).
    """
    name = f"api_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(postgres_url)
    database = await provision_database(postgres_url, name)
    smtp = SmtpServer()
    smtp.controller.start()
    registry = Path(tempfile.mkdtemp(prefix="dunning-api-")) / "equipment.toml"
    registry.write_text(EQUIPMENT_REGISTRY)
    settings = Settings(
        equipment_file=registry,
        temporal_address=dev_env.client.service_client.config.target_host,
        temporal_namespace=dev_env.client.namespace,
        task_queue=f"api-{uuid.uuid4().hex[:8]}",
        database_url=database.service,
        database_owner_url=database.owner,
        smtp_host=smtp.host,
        smtp_port=smtp.port,
        api_host="127.0.0.1",
        api_port=0,
        api_tokens={OPS_TOKEN: "ops", INTEGRATION_TOKEN: "integration", METRICS_TOKEN: "metrics"},
        payment_webhook_secret=WEBHOOK_SECRET,
        payment_webhook_tolerance_seconds=300,
        stripe_webhook_secret=STRIPE_SECRET,
    )
    await apply_schema(settings.resolved_owner_database_url())
    pool = await create_pool(settings.resolved_database_url())
    client = await connect(settings)
    stop = asyncio.Event()
    started: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    try:
        async with build_worker(client, pool, settings):
            api = asyncio.create_task(serve_api(settings, stop, on_started=started.set_result))
            done, _ = await asyncio.wait({api, started}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
            if started not in done:
                stop.set()
                await api  # raises the start-up failure
                raise AssertionError("the API did not start within 30 s")
            try:
                yield ApiStack(url=started.result(), settings=settings, client=client, pool=pool, smtp=smtp)
            finally:
                stop.set()
                await asyncio.wait_for(api, 30)
                await end_left_running(client, settings.task_queue)
    finally:
        await pool.close()
        smtp.controller.stop()
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()


async def end_left_running(client: Client, task_queue: str) -> None:
    """Terminate what the module left running on its task queue: the dev server outlives the module, and a
    customer workflow whose worker is gone (customer ``CUST-API``, say) would leave the next module's calls
    to that customer waiting for an answer."""
    query = f"TaskQueue = '{task_queue}' AND ExecutionStatus = 'Running'"
    async for execution in client.list_workflows(query):
        with contextlib.suppress(RPCError):  # closed meanwhile
            await client.get_workflow_handle(execution.id, run_id=execution.run_id).terminate(
                reason="the test module that started it has ended"
            )


# --- building requests ---------------------------------------------------------------------------


def local_today() -> date:
    return datetime.now(ZoneInfo(TIME_ZONE)).date()


def invoice_json(customer_id: str = "CUST-API", **changes: Any) -> dict[str, Any]:
    """An invoice (EUR 1,000.00) issued today, due in 14 days, that sends at any hour; ``changes`` override."""
    today = local_today()
    data: dict[str, Any] = {
        "invoice_id": f"INV-{uuid.uuid4().hex[:10]}",
        "customer_id": customer_id,
        "contact": {"name": "Ana Pop", "email": "ana@client.example"},
        "amount_minor": 100_000,
        "currency": "EUR",
        "issue_date": today.isoformat(),
        "due_date": (today + timedelta(days=14)).isoformat(),
        "time_zone": TIME_ZONE,
        "policy": {
            "stages": [{"action": "reminder", "offset": "P1D"}, {"action": "suspend", "offset": "P20D"}],
            "sending_window": None,
        },
    }
    data.update(changes)
    return data


def due_in(seconds: float, stages: list[dict[str, str]], **changes: Any) -> dict[str, Any]:
    """An invoice whose due moment is ``seconds`` from now, escalating by ``stages`` (offsets like 'PT2S')."""
    due = (datetime.now(ZoneInfo(TIME_ZONE)) + timedelta(seconds=seconds)).replace(microsecond=0)
    return invoice_json(
        issue_date=due.date().isoformat(),
        due_date=due.date().isoformat(),
        policy={"stages": stages, "due_time": due.time().isoformat(), "sending_window": None},
        **changes,
    )


def signed(
    body: dict[str, Any] | bytes, secret: str = WEBHOOK_SECRET, at: float | None = None, message_id: str | None = None
) -> tuple[bytes, dict[str, str]]:
    """A webhook body and its headers, signed the way a provider would: by the Standard Webhooks reference
    library with the secret's ``whsec_`` form, not by the service's code."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    message_id = message_id or f"msg_{uuid.uuid4().hex}"
    timestamp = int(time.time() if at is None else at)
    try:
        signature = Webhook(whsec(secret)).sign(message_id, datetime.fromtimestamp(timestamp, timezone.utc), raw)
    except (OverflowError, ValueError):  # past the year 9999 no library can sign: any signature will do
        signature = "v1," + base64.b64encode(bytes(32)).decode()
    headers = {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature,
        "Content-Type": "application/json",
    }
    return raw, headers


def assert_problem(response: httpx.Response, status: int, kind: str, *fragments: str) -> dict[str, Any]:
    """An RFC 9457 problem of this status and kind (the last part of its type URI) whose detail has ``fragments``."""
    assert response.status_code == status, f"{response.status_code}: {response.text}"
    assert response.headers["content-type"].startswith(PROBLEM_JSON), response.headers["content-type"]
    problem = response.json()
    assert problem["status"] == status
    assert problem["type"].rsplit("/", 1)[-1] == kind, problem
    assert problem["title"] and problem["detail"], problem
    for fragment in fragments:
        assert fragment in problem["detail"], problem
    return problem


async def eventually(check: Any, timeout: float = 20.0, interval: float = 0.2) -> Any:
    """Poll ``check`` (async) until it returns something truthy, which is returned."""
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s (last: {result!r})")
        await asyncio.sleep(interval)
