"""The fault tests' stack: each real part runs on its own, so that a test can kill, stop and start it.

- the Temporal dev server, persisting to SQLite in the stack's folder on fixed ports, so that a
  restart finds every workflow, timer and task where it was;
- embedded PostgreSQL on a pgdata under /tmp (see ``tests.conftest.new_pgdata``), stopped and
  started again on the same folder (same Unix socket, same ``url``);
- ``dunning worker`` processes, killed with SIGKILL and started again (and, when a test asks,
  ``dunning api`` the same way: the API's payment intake and the provider's webhook);
- an SMTP server that keeps the ``X-Dunning-Step`` and ``Message-ID`` of every message it accepts,
  and refuses connections while stopped;
- the customers' equipment controller (the webhook peer of ``tests.equipment_peers``), which
  refuses connections while stopped, and a port where nothing ever answers.

Every fault is recorded with its start and end (``FaultStack.faults``): a message redelivered
with the same Message-ID is only explained by a fault that hit between its two copies.
Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import email.parser
import email.policy
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from pathlib import Path

import asyncpg
from aiosmtpd.controller import Controller
from pydantic import SecretStr
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client
from temporalio.service import RPCError

from activities.ledger import create_pool
from client.settings import Settings
from client.temporal import connect
from tests.conftest import free_port, new_pgdata
from tests.equipment_peers import ControllerPeer, controller_server
from worker.embedded import EmbeddedPostgres, TemporalDevServer, start_postgres, start_temporal_dev_server

LOOPBACK = "127.0.0.1"
NAMESPACE = "default"
TASK_QUEUE = "dunning-faults"
CONTROLLER_SECRET = "fault-controller-secret-1"
API_TOKEN = "fault-api-token-1"
WEBHOOK_SECRET = "fault-webhook-secret-1"
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
DUNNING = Path(sys.executable).with_name("dunning")
# a worker outlives a test process that is killed (it runs in a session of its own): setpriv makes the
# kernel kill it with its parent
DIE_WITH_THE_TEST = ["setpriv", "--pdeathsig", "KILL"] if shutil.which("setpriv") else []


@dataclass(frozen=True)
class Fault:
    """A fault the test caused: ``what`` was down from ``started`` to ``ended`` (``time.time()``)."""

    what: str
    started: float
    ended: float


# --- SMTP -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Delivery:
    """One message the SMTP server accepted."""

    step: str  # the X-Dunning-Step header: "<workflow id>/<step>"
    message_id: str
    received_at: float  # time.time()


class CountingSmtpServer:
    """An SMTP server on a fixed loopback port that keeps every message it accepts.

    Only the headers are read (the step and the Message-ID). ``stop()`` closes the port, so
    connections are refused until ``start()``. ``slow_down(n, step_s)`` makes it answer MAIL, RCPT and
    DATA of the next ``n`` messages ``step_s`` seconds late each; a slowed message counts as received
    when its content has arrived, and its slow answer to DATA is a ``Fault`` in ``slow_answers``.
    """

    def __init__(self) -> None:
        self.port = free_port()
        self._deliveries: list[Delivery] = []
        self._lock = threading.Lock()
        self._controller: Controller | None = None
        self._parser = email.parser.BytesHeaderParser(policy=email.policy.default)
        self._slow_messages = 0
        self._step_delay_s = 0.0
        self.slow_answers: list[Fault] = []

    def slow_down(self, messages: int, step_s: float) -> None:
        """Answer each step of the next ``messages`` messages ``step_s`` seconds late."""
        self._slow_messages, self._step_delay_s = messages, step_s

    async def handle_MAIL(self, server, session, envelope, address, mail_options) -> str:  # noqa: N802 - aiosmtpd's hook
        """aiosmtpd hook: a new message; slowed if one of the next ``slow_down`` ones."""
        envelope.slow = self._slow_messages > 0
        self._slow_messages -= envelope.slow
        await self._maybe_wait(envelope)
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options) -> str:  # noqa: N802 - aiosmtpd's hook
        await self._maybe_wait(envelope)
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope) -> str:  # noqa: N802 - aiosmtpd's hook name
        """aiosmtpd hook: keep the message's step and Message-ID."""
        headers = self._parser.parsebytes(envelope.original_content)
        delivery = Delivery(str(headers["X-Dunning-Step"] or ""), str(headers["Message-ID"] or ""), time.time())
        with self._lock:
            self._deliveries.append(delivery)
        if getattr(envelope, "slow", False):
            answer_at = delivery.received_at + self._step_delay_s
            self.slow_answers.append(Fault(f"smtp slow to accept {delivery.step}", delivery.received_at, answer_at))
            await self._maybe_wait(envelope)
        return "250 OK"

    async def _maybe_wait(self, envelope) -> None:
        if getattr(envelope, "slow", False):
            await asyncio.sleep(self._step_delay_s)

    def start(self) -> None:
        """Accept connections (again)."""
        self._controller = Controller(self, hostname=LOOPBACK, port=self.port, ready_timeout=READY_TIMEOUT_S)
        self._controller.start()

    def stop(self) -> None:
        """Close the port: every connection is refused."""
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    @property
    def deliveries(self) -> list[Delivery]:
        with self._lock:
            return list(self._deliveries)


# --- the equipment controller ------------------------------------------------------------------


class EquipmentController:
    """The customers' controller on a fixed loopback port; ``peer`` counts its calls per equipment.

    ``stop()`` closes the port, so connections are refused until ``start()``; the peer's memory
    (states and calls) survives.
    """

    def __init__(self) -> None:
        self.port = free_port()
        self.peer = ControllerPeer(url=f"http://{LOOPBACK}:{self.port}/dunning", secret=CONTROLLER_SECRET)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Accept connections (again)."""
        self._server = controller_server(self.peer, self.port)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Close the port: every connection is refused."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=STOP_TIMEOUT_S)
            self._server = self._thread = None

    def calls(self, equipment_id: str, action: str) -> int:
        """How many ``suspend`` or ``restore`` calls the controller received for this equipment."""
        return len(self.peer.calls_to(equipment_id, action))


class ClosedPort:
    """A loopback port held bound and never listening: every connection to it is refused."""

    def __init__(self) -> None:
        self._socket = socket.socket()
        self._socket.bind((LOOPBACK, 0))
        self.port = self._socket.getsockname()[1]

    def close(self) -> None:
        self._socket.close()


def write_registry(
    path: Path, equipment: Mapping[str, str], reachable_url: str, unreachable: Iterable[str], unreachable_url: str
) -> None:
    """An equipment registry (TOML) with one webhook entry per ``{equipment id: customer id}``; the ids in
    ``unreachable`` point where nothing answers."""
    secret = path.with_name("controller-secret")
    secret.write_text(CONTROLLER_SECRET + "\n")
    secret.chmod(0o600)
    dead = set(unreachable)
    entries = [
        "[[equipment]]\n"
        f'id = "{equipment_id}"\n'
        f'customer_id = "{customer_id}"\n'
        'kind = "webhook"\n'
        f'endpoint = "{unreachable_url if equipment_id in dead else reachable_url}"\n'
        f'credentials = {{ file = "{secret}" }}\n'
        "request_timeout_s = 5\n"
        for equipment_id, customer_id in equipment.items()
    ]
    path.write_text("\n".join(entries))


# --- Temporal, Postgres, workers ----------------------------------------------------------------


class TemporalServer:
    """The dev server on fixed ports with its SQLite file in ``folder``: a restart keeps everything."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.ui_port = free_port()
        self._server: TemporalDevServer | None = None

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def start(self) -> None:
        """Start (blocking until it serves the namespace; at most a minute)."""
        self._server = start_temporal_dev_server(self.folder, self.port, self.ui_port, NAMESPACE)

    def stop(self) -> None:
        """SIGTERM (SIGKILL after 10 s)."""
        if self._server is not None:
            self._server.stop()
            self._server = None


class PostgresServer:
    """Embedded PostgreSQL on one pgdata: stopped and started again, it keeps its data and its ``url``."""

    def __init__(self, pgdata: Path) -> None:
        self.pgdata = pgdata
        self._server: EmbeddedPostgres | None = start_postgres(pgdata)
        self.url = self._server.url

    def start(self) -> None:
        self._server = start_postgres(self.pgdata)
        assert self._server.url == self.url, (self._server.url, self.url)

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None


class Workers:
    """``dunning worker`` processes (or ``dunning api``: ``command``), each in its own session, logging to
    ``folder``."""

    def __init__(self, env: dict[str, str], folder: Path, command: str = "worker") -> None:
        self.env = env
        self.folder = folder
        self.command = command
        self.processes: dict[subprocess.Popen, Path] = {}
        self.incarnations = 0

    def start(self) -> None:
        """One more process, logging to ``<command>-<n>.log``."""
        self.incarnations += 1
        log_path = self.folder / f"{self.command}-{self.incarnations}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [*DIE_WITH_THE_TEST, str(DUNNING), self.command],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.processes[process] = log_path

    def pids(self) -> list[int]:
        """The process ids of the running workers."""
        return [process.pid for process in self.processes if process.poll() is None]

    def kill(self, pid: int | None = None) -> int:
        """SIGKILL every running worker (or the one with ``pid``); returns how many were killed. They are
        forgotten first, so that ``exited()`` (called from the event loop while this runs in a thread) never
        takes them for a crash."""
        killed = 0
        for process in self._forget(pid):
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
                killed += 1
            process.wait(timeout=STOP_TIMEOUT_S)
        return killed

    def stop(self, pid: int | None = None) -> list[int]:
        """SIGTERM every worker (or the one with ``pid``), then SIGKILL whatever has not exited within 10 s;
        returns their exit codes."""
        processes = self._forget(pid)
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=STOP_TIMEOUT_S)
        return [process.returncode for process in processes]

    def _forget(self, pid: int | None) -> list[subprocess.Popen]:
        chosen = [process for process in self.processes if pid is None or process.pid == pid]
        for process in chosen:
            del self.processes[process]
        return chosen

    def exited(self) -> list[str]:
        """Workers that exited on their own, with the end of their log."""
        return [
            f"{self.command} pid {process.pid} exited with {process.returncode}; {log.name} ends:\n{_tail(log)}"
            for process, log in self.processes.items()
            if process.poll() is not None
        ]


def api_environment(worker_env: dict[str, str], port: int) -> dict[str, str]:
    """The API's settings: the worker's, its port, an integration token (``API_TOKEN``) and the webhook's secret."""
    return {
        **worker_env,
        "DUNNING_API_HOST": LOOPBACK,
        "DUNNING_API_PORT": str(port),
        "DUNNING_API_TOKENS": json.dumps({API_TOKEN: "integration"}),
        "DUNNING_PAYMENT_WEBHOOK_SECRET": WEBHOOK_SECRET,
    }


async def wait_for_port(port: int, timeout: float = READY_TIMEOUT_S) -> None:
    """Until something accepts connections on the loopback ``port``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            _, writer = await asyncio.open_connection(LOOPBACK, port)
        except OSError:
            if time.monotonic() > deadline:
                raise AssertionError(f"nothing listened on port {port} within {timeout:.0f} s") from None
            await asyncio.sleep(0.3)
        else:
            writer.close()
            return


def worker_environment(
    temporal: TemporalServer,
    database_url: str,
    smtp_port: int,
    registry: Path,
    folder: Path,
    codec_keys: str | None = None,
) -> dict[str, str]:
    """The worker's settings for this stack; nothing ``DUNNING_*`` leaks in from the test's environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DUNNING_", "OTEL_")) and k != "DATABASE_URL"}
    if codec_keys:
        env["DUNNING_CODEC_KEYS"] = codec_keys
    env.update(
        DUNNING_TEMPORAL_ADDRESS=temporal.address,
        DUNNING_TEMPORAL_NAMESPACE=NAMESPACE,
        DUNNING_TASK_QUEUE=TASK_QUEUE,
        DATABASE_URL=database_url,
        DUNNING_SMTP_HOST=LOOPBACK,
        DUNNING_SMTP_PORT=str(smtp_port),
        DUNNING_SMTP_SECURITY="none",
        DUNNING_EQUIPMENT_FILE=str(registry),
        DUNNING_DATA_DIR=str(folder),
        PYTHONUNBUFFERED="1",
    )
    return env


# --- the stack --------------------------------------------------------------------------------


@dataclass
class FaultStack:
    """Everything a fault test runs against, and the faults it caused."""

    folder: Path
    temporal: TemporalServer
    postgres: PostgresServer
    smtp: CountingSmtpServer
    controller: EquipmentController
    workers: Workers
    client: Client
    pool: asyncpg.Pool
    faults: list[Fault] = field(default_factory=list)
    api: Workers | None = None  # ``dunning api`` when the test asked for it
    api_port: int | None = None

    @property
    def api_url(self) -> str:
        return f"http://{LOOPBACK}:{self.api_port}"

    async def kill_workers(self, down_for: float, *, only_one: bool = False) -> None:
        """SIGKILL every worker (``only_one``: the oldest), wait ``down_for`` seconds, start a new one."""
        started = time.time()
        await asyncio.to_thread(self.workers.kill, self.workers.pids()[0] if only_one else None)
        await asyncio.sleep(down_for)
        self.workers.start()
        self.faults.append(Fault("worker killed", started, time.time()))

    async def restart_temporal(self, down_for: float) -> None:
        """Stop the dev server, wait ``down_for`` seconds, start it again on the same ports and file."""
        started = time.time()
        await asyncio.to_thread(self.temporal.stop)
        await asyncio.sleep(down_for)
        await asyncio.to_thread(self.temporal.start)
        self.faults.append(Fault("temporal stopped", started, time.time()))

    async def stop_postgres(self, down_for: float) -> None:
        """Stop PostgreSQL for ``down_for`` seconds, then start it again on the same data (the test's own
        pool is closed meanwhile)."""
        started = time.time()
        await self.pool.close()
        await asyncio.to_thread(self.postgres.stop)
        await asyncio.sleep(down_for)
        await asyncio.to_thread(self.postgres.start)
        self.pool = await create_pool(self.postgres.url)
        self.faults.append(Fault("postgres stopped", started, time.time()))

    async def peers_down(self, smtp: bool, controller: bool, down_for: float) -> None:
        """Refuse connections to the SMTP server and/or the controller for ``down_for`` seconds."""
        started = time.time()
        if smtp:
            self.smtp.stop()
        if controller:
            self.controller.stop()
        await asyncio.sleep(down_for)
        if smtp:
            await asyncio.to_thread(self.smtp.start)
        if controller:
            self.controller.start()
        what = " and ".join(name for name, down in (("smtp", smtp), ("controller", controller)) if down)
        self.faults.append(Fault(f"{what} refusing", started, time.time()))

    async def kill_api(self, down_for: float) -> None:
        """SIGKILL the API, wait ``down_for`` seconds, start a new one and wait until it listens."""
        assert self.api is not None and self.api_port is not None
        started = time.time()
        await asyncio.to_thread(self.api.kill)
        await asyncio.sleep(down_for)
        self.api.start()
        await wait_for_port(self.api_port)
        self.faults.append(Fault("api killed", started, time.time()))

    def assert_workers_alive(self) -> None:
        exited = self.workers.exited() + (self.api.exited() if self.api else [])
        assert not exited, "\n".join(exited)


async def repeat_fault(fault: Callable[[], Awaitable[None]], *, first_after: float, between: float, times: int) -> None:
    """Cause ``fault`` ``times`` times: ``first_after`` seconds into the run, then ``between`` seconds apart."""
    await asyncio.sleep(first_after)
    for n in range(times):
        if n:
            await asyncio.sleep(between)
        await fault()


async def wait_for_poller(client: Client, timeout: float = READY_TIMEOUT_S, pids: Collection[int] = ()) -> None:
    """Until a worker polls the task queue for workflow tasks (each of the workers ``pids``, when given: a
    worker's Temporal identity starts with ``<pid>@``)."""
    request = DescribeTaskQueueRequest(
        namespace=NAMESPACE,
        task_queue=TaskQueue(name=TASK_QUEUE),
        task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
    )
    deadline = time.monotonic() + timeout
    while True:
        try:
            pollers = (await client.workflow_service.describe_task_queue(request)).pollers
            polling = {poller.identity.split("@")[0] for poller in pollers}
            if polling and all(str(pid) in polling for pid in pids):
                return
        except RPCError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"no worker polled task queue {TASK_QUEUE} within {timeout:.0f} s")
        await asyncio.sleep(0.5)


@asynccontextmanager
async def fault_stack(
    equipment: Mapping[str, str],
    *,
    unreachable: Iterable[str] = (),
    codec_keys: str | None = None,
    api: bool = False,
    registry: Path | None = None,
) -> AsyncIterator[FaultStack]:
    """Start everything: Postgres, the dev server, the SMTP server, the controller and a worker whose
    registry holds ``equipment`` (``{id: customer id}``, the ``unreachable`` ids where nothing answers),
    or is the test's own ``registry`` file (real Redfish and SNMP peers, say);
    with ``codec_keys`` (``DUNNING_CODEC_KEYS``) the worker and the test's client encrypt every payload;
    with ``api``, ``dunning api`` runs too (``FaultStack.api_url``).
    Everything is stopped and deleted afterwards; after a failure the folder (worker logs, the dev server's
    database) is kept, and named on stderr."""
    folder = Path(tempfile.mkdtemp(prefix="dunning-faults-"))
    failed = False
    async with AsyncExitStack() as cleanup:
        cleanup.callback(lambda: failed or shutil.rmtree(folder, ignore_errors=True))
        pgdata = cleanup.enter_context(new_pgdata())
        temporal = TemporalServer(folder / "temporal")
        cleanup.callback(temporal.stop)  # nothing to do if it did not start
        # PostgreSQL and the dev server start side by side; each is stopped afterwards if it started
        postgres, temporal_started = await asyncio.gather(
            asyncio.to_thread(PostgresServer, pgdata), asyncio.to_thread(temporal.start), return_exceptions=True
        )
        if isinstance(postgres, PostgresServer):
            cleanup.callback(postgres.stop)
        for outcome in (postgres, temporal_started):
            if isinstance(outcome, BaseException):
                raise outcome
        smtp = CountingSmtpServer()
        await asyncio.to_thread(smtp.start)
        cleanup.callback(smtp.stop)
        controller = EquipmentController()
        controller.start()
        cleanup.callback(controller.stop)
        closed = ClosedPort()
        cleanup.callback(closed.close)

        if registry is None:
            registry = folder / "equipment.toml"
            write_registry(
                registry, equipment, controller.peer.url, unreachable, f"http://{LOOPBACK}:{closed.port}/dunning"
            )
        env = worker_environment(temporal, postgres.url, smtp.port, registry, folder, codec_keys)
        processes = Workers(env, folder)
        processes.start()
        cleanup.callback(processes.stop)
        api_port = free_port() if api else None
        api_processes = Workers(api_environment(env, api_port), folder, "api") if api_port else None
        if api_processes:
            api_processes.start()
            cleanup.callback(api_processes.stop)

        settings = Settings(
            temporal_address=temporal.address,
            temporal_namespace=NAMESPACE,
            task_queue=TASK_QUEUE,
            database_url=postgres.url,
            codec_keys=SecretStr(codec_keys) if codec_keys else None,
            temporal_api_key=None,
            temporal_tls=False,
            temporal_metrics_bind=None,
        )
        client = await connect(settings)
        await wait_for_poller(client)
        if api_port:
            await wait_for_port(api_port)
        stack = FaultStack(
            folder,
            temporal,
            postgres,
            smtp,
            controller,
            processes,
            client,
            await create_pool(postgres.url),
            api=api_processes,
            api_port=api_port,
        )
        cleanup.push_async_callback(lambda: stack.pool.close())
        try:
            yield stack
        except BaseException:
            failed = True
            print(f"\nkept {folder} (worker logs, the dev server's database) to see what failed", file=sys.stderr)
            raise


def _tail(log: Path, lines: int = 20) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else ""
