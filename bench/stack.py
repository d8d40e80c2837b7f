"""The embedded stack a measurement runs on, and the processes it watches.

One :class:`BenchStack` per measurement: a fresh PostgreSQL, Temporal dev server (persisting to
SQLite, as ``make run`` does) and mail sink in a new folder, the service's worker
(``dunning worker``) and the baseline worker each in their own process, so that the driver in
this process shares no event loop with either. Everything is stopped and deleted afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import httpx
import psutil
from prometheus_client.parser import text_string_to_metric_families
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client

from activities.ledger import apply_schema, create_pool
from client.settings import Settings
from client.temporal import connect
from worker.embedded import MailSink, find_executable, start_postgres, start_temporal_dev_server

REPO_ROOT = Path(__file__).resolve().parent.parent
INVOICE_QUEUE = "bench-invoices"
BASELINE_QUEUE = "bench-baseline"
READY_TIMEOUT = 90.0
BENCH_DATABASE = "bench"
# the dev server's own counters: requests its frontend served (clients' calls), and its reads and writes
REQUEST_METRICS = {
    "service_requests": "frontend",
    "persistence_requests": "persistence",
    "visibility_persistence_requests": "visibility",
}
# the SDK's histograms of the worker's task times, by the label that names the workflow or activity type
SDK_TASK_METRICS = {
    "temporal_workflow_task_execution_latency": "workflow",
    "temporal_activity_execution_latency": "activity",
}
METRICS_LAG = 2.0  # seconds; the server publishes its counters about once a second (seen up to 1.2 s late)
# what the SDK logs when the worker is too busy to finish a workflow task in time
OVERLOAD_SIGNS = {
    "workflow_tasks_over_5s": "Workflow task duration exceeded 5 seconds",
    "workflow_tasks_timed_out": "Task not found when completing",
}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def database_url(server_url: str, name: str) -> str:
    """The server's URL with another database name."""
    return urlsplit(server_url)._replace(path=f"/{name}").geturl()


async def new_database(server_url: str, name: str) -> str:
    """Create database ``name`` with the service's schema; its URL."""
    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = database_url(server_url, name)
    await apply_schema(url)
    return url


def folder_bytes(path: Path) -> int:
    """Bytes of every file under ``path`` (files that vanish while counting are skipped)."""
    total = 0
    for root, _, names in os.walk(path):
        for name in names:
            with contextlib.suppress(OSError):
                total += (Path(root) / name).stat().st_size
    return total


# --- processes -----------------------------------------------------------------------------


def _tree(pid: int, descendants: bool = True) -> list[psutil.Process]:
    """The process and (unless told otherwise) its descendants, such as a worker's render processes, those still alive."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)] if descendants else [root]
    except psutil.NoSuchProcess:
        return []


def _peak_rss_kb(process: psutil.Process) -> int:
    """Resident memory now, or its peak since the last reset (VmHWM) if higher."""
    peak = 0
    with contextlib.suppress(OSError, psutil.Error):
        for line in Path(f"/proc/{process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                peak = int(line.split()[1])
        return max(peak, process.memory_info().rss // 1024)
    return peak


def _cpu_seconds(process: psutil.Process) -> float:
    with contextlib.suppress(psutil.Error):
        times = process.cpu_times()
        return times.user + times.system
    return 0.0


@dataclass
class Usage:
    """What one process and its descendants used during a measurement."""

    peak_rss_mb: float
    cpu_seconds: float


@dataclass
class ProcessWatch:
    """Samples the resident memory of some processes (each with its descendants, except those named in
    ``alone``) in the background; the peak of their sum and their CPU seconds, per watched process,
    from the start of the watch to its end."""

    pids: dict[str, int]
    alone: frozenset[str] = frozenset()
    interval: float = 0.5
    _ended: bool = False
    _peak_kb: dict[str, int] = field(default_factory=dict)
    _cpu_start: dict[int, float] = field(default_factory=dict)
    _cpu_seen: dict[str, dict[int, float]] = field(default_factory=dict)
    _task: asyncio.Task | None = None

    async def __aenter__(self) -> ProcessWatch:
        for name, pid in self.pids.items():
            self._cpu_seen[name] = {}
            for process in _tree(pid, name not in self.alone):
                _reset_peak(process.pid)
                self._cpu_start[process.pid] = _cpu_seconds(process)
        self._sample_once()
        self._task = asyncio.create_task(self._sample())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._sample_once()
        self._ended = True

    async def _sample(self) -> None:
        while True:
            self._sample_once()
            await asyncio.sleep(self.interval)

    def _sample_once(self) -> None:
        for name, pid in self.pids.items():
            tree = _tree(pid, name not in self.alone)
            # VmHWM catches peaks between samples (it was reset at the start, where the kernel allows it)
            self._peak_kb[name] = max(self._peak_kb.get(name, 0), sum(_peak_rss_kb(p) for p in tree))
            for process in tree:  # a process that appeared during the watch used all its CPU in it
                self._cpu_seen[name][process.pid] = _cpu_seconds(process) - self._cpu_start.get(process.pid, 0.0)

    def usage(self) -> dict[str, Usage]:
        """Peak resident memory and CPU seconds of each process (with its descendants) during the watch:
        since it started, up to now or to its end, whichever came first."""
        if not self._ended:
            self._sample_once()
        return {
            name: Usage(
                peak_rss_mb=round(self._peak_kb[name] / 1024, 1), cpu_seconds=round(sum(self._cpu_seen[name].values()), 2)
            )
            for name in self.pids
        }


def _reset_peak(pid: int) -> None:
    with contextlib.suppress(OSError):  # not allowed here: sampling alone tells the peak
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # resets VmHWM to the current RSS


class WorkerProcess:
    """A worker in a process of its own, logging to a file.

    It stops on SIGINT: start it only where this process handles SIGINT (``python -m bench`` does),
    since a child inherits an ignored SIGINT, as in a process started in the background.
    """

    def __init__(self, name: str, command: list[str], env: dict[str, str], log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        with log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command, cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    def overload_signs(self) -> dict[str, int]:
        """How often the log says so far that a workflow task was slow or timed out (see ``OVERLOAD_SIGNS``)."""
        text = self.log_path.read_text(errors="replace")
        return {name: text.count(sign) for name, sign in OVERLOAD_SIGNS.items()}

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        """Ctrl-C (the worker stops in order), then SIGKILL if it has not exited within 15 s."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


# --- the stack -----------------------------------------------------------------------------


class BenchStack:
    """Postgres, the Temporal dev server, a mail sink and both workers, in a new folder.

    ``temporal=False`` starts Postgres only (for measurements that need nothing else).
    """

    def __init__(self, temporal: bool = True) -> None:
        self._temporal = temporal
        self._exit = AsyncExitStack()
        self.root = Path(tempfile.mkdtemp(prefix="dunning-bench-"))
        self.server_url = ""
        self.db_url = ""
        self.pool: asyncpg.Pool | None = None
        self.client: Client | None = None
        self.temporal_dir = self.root / "temporal"
        self.pgdata = self.root / "pgdata"
        self.workers: dict[str, WorkerProcess] = {}
        self.dev_server_pid = 0
        self.dev_server_metrics = ""
        self.worker_metrics = ""
        self.postgres_pid = 0
        self.started_in = 0.0

    async def __aenter__(self) -> BenchStack:
        began = time.monotonic()
        self._exit.callback(shutil.rmtree, self.root, ignore_errors=True)
        try:
            postgres = await asyncio.to_thread(start_postgres, self.pgdata)
            self._exit.callback(postgres.stop)
            self.server_url = postgres.url
            self.postgres_pid = postgres.pid or 0
            self.db_url = await new_database(self.server_url, BENCH_DATABASE)
            self.pool = await create_pool(self.db_url)
            self._exit.push_async_callback(self.pool.close)
            if self._temporal:
                await self._start_temporal()
        except BaseException:
            await self._exit.aclose()
            raise
        self.started_in = round(time.monotonic() - began, 1)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._exit.aclose()

    async def _start_temporal(self) -> None:
        smtp_port = free_port()
        mail = MailSink("127.0.0.1", smtp_port, self.root / "mail")
        mail.start()
        self._exit.callback(mail.stop)
        port = free_port()
        metrics_port = free_port()
        server = await asyncio.to_thread(
            start_temporal_dev_server, self.temporal_dir, port, free_port(), "default", metrics_port=metrics_port
        )
        self._exit.callback(server.stop)
        self.dev_server_pid = server.process.pid
        self.dev_server_metrics = f"http://127.0.0.1:{metrics_port}/metrics"
        address = f"localhost:{port}"
        self.client = await connect(Settings(temporal_address=address))
        # workers run as deployed: their own settings, and bytecode cached (without it the sandbox compiles
        # the workflow module from source for every workflow it creates)
        ignored = {"DATABASE_URL", "PYTHONDONTWRITEBYTECODE"}
        env = {key: value for key, value in os.environ.items() if not key.startswith("DUNNING_") and key not in ignored}
        env.update(
            DUNNING_TEMPORAL_ADDRESS=address,
            DUNNING_DATA_DIR=str(self.root / "data"),
            DATABASE_URL=self.db_url,
            DUNNING_SMTP_HOST="127.0.0.1",
            DUNNING_SMTP_PORT=str(smtp_port),
            PYTHONPATH=str(REPO_ROOT),
        )
        commands = {
            "worker": ([find_executable("dunning"), "worker"], INVOICE_QUEUE),
            "baseline_worker": ([sys.executable, "-m", "bench.baseline_worker"], BASELINE_QUEUE),
        }
        sdk_metrics = f"127.0.0.1:{free_port()}"
        self.worker_metrics = f"http://{sdk_metrics}/metrics"
        for name, (command, queue) in commands.items():
            own = {"DUNNING_TASK_QUEUE": queue, **({"DUNNING_TEMPORAL_METRICS_BIND": sdk_metrics} if name == "worker" else {})}
            process = WorkerProcess(name, command, {**env, **own}, self.root / f"{name}.log")
            self._exit.callback(process.stop)
            self.workers[name] = process
        for name, (_, queue) in commands.items():
            await self._wait_for_poller(self.workers[name], queue)

    async def _wait_for_poller(self, process: WorkerProcess, queue: str) -> None:
        assert self.client is not None
        request = DescribeTaskQueueRequest(
            namespace=self.client.namespace,
            task_queue=TaskQueue(name=queue),
            task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
        )
        deadline = time.monotonic() + READY_TIMEOUT
        while not (await self.client.workflow_service.describe_task_queue(request)).pollers:
            if process.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{process.name} did not start polling {queue}; its log ends:\n{process.log_tail()}")
            await asyncio.sleep(0.2)

    def watch(self) -> ProcessWatch:
        """Watch both workers, the dev server, PostgreSQL (with its backends) and this process (the
        measurement's clients and the mail sink) for the span of an ``async with``."""
        pids = {name: process.pid for name, process in self.workers.items()}
        if self.dev_server_pid:
            pids["dev_server"] = self.dev_server_pid
        pids["postgres"] = self.postgres_pid
        pids["driver"] = os.getpid()
        return ProcessWatch(pids, alone=frozenset({"driver"}))

    async def dev_server_requests(self) -> Counter[str]:
        """How many requests the dev server has served (``frontend:<call>``) and made of its persistence
        (``persistence:<operation>``, ``visibility:<operation>``) since it started, read once the
        server has published what it did until now (its counters reach ``/metrics`` with a lag)."""
        await asyncio.sleep(METRICS_LAG)
        async with httpx.AsyncClient(timeout=10) as http:
            text = (await http.get(self.dev_server_metrics)).raise_for_status().text
        counts: Counter[str] = Counter()
        for family in text_string_to_metric_families(text):
            kind = REQUEST_METRICS.get(family.name)
            for sample in family.samples if kind else ():
                if kind == "frontend" and sample.labels.get("service_name") != "frontend":
                    continue  # the services' calls to one another
                counts[f"{kind}:{sample.labels.get('operation', '?')}"] += int(sample.value)  # a counter's samples are whole
        return counts

    async def worker_task_seconds(self) -> dict[str, float]:
        """Seconds the service's worker has spent running tasks since it started, from the SDK's own histograms:
        ``workflow:<type>`` (workflow tasks, the workflow code) and ``activity:<type>`` (activity executions)."""
        async with httpx.AsyncClient(timeout=10) as http:
            text = (await http.get(self.worker_metrics)).raise_for_status().text
        seconds: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            label = SDK_TASK_METRICS.get(family.name)
            for sample in family.samples if label else ():
                if sample.name.endswith("_sum"):  # milliseconds, the SDK's default unit
                    name = f"{label}:{sample.labels.get(f'{label}_type', '?')}"
                    seconds[name] = seconds.get(name, 0.0) + sample.value / 1000
        return seconds

    async def disk_usage_mb(self) -> dict[str, float]:
        """Size on disk of the service's database and of the dev server's SQLite files."""
        assert self.pool is not None
        database = await self.pool.fetchval("SELECT pg_database_size(current_database())")
        return {
            "postgres_database_mb": round(database / 2**20, 1),
            "postgres_pgdata_mb": round(folder_bytes(self.pgdata) / 2**20, 1),
            "dev_server_mb": round(sum(p.stat().st_size for p in self.temporal_dir.glob("temporal.db*")) / 2**20, 1),
        }
