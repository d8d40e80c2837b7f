"""The event store: versioned schema migrations and the append-only ``invoice_events`` table.

Every event is checked against its kind's payload model (``workflows.events``) before it is
written, so readers can rely on the shape of what they read. Batches appended at the same time
(by concurrent activities of one worker) are written together: one statement, one commit, one
turn of the ordering lock (group commit, :class:`EventAppender`).
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from dataclasses import dataclass
from importlib.resources import files

import asyncpg
from asyncpg.pool import PoolConnectionProxy
from pydantic import ValidationError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from workflows import contracts
from workflows.events import InvoiceSnapshot, RecordedEvent, payload_of
from workflows.models import DomainEvent

MIGRATIONS = files("activities") / "migrations"
MIGRATION_LOCK = 4_150_001  # advisory lock id: one migrator at a time
SERVICE_GROUP = "dunning_service"  # the group role the migrations grant the service's privileges to


class MigrationRefused(Exception):
    """A pending migration the connected role may not apply: migrations run as the schema's owner."""


async def apply_schema(database_url: str) -> list[str]:
    """Apply the migrations not yet applied, in order, as ``database_url``'s role; returns their names.

    Applying needs the schema's owner. With nothing pending it only reads, so the service's own role
    (a member of ``SERVICE_GROUP``) may call it at start to check that the schema is current.
    """
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
        applied = []
        try:
            if await conn.fetchval("SELECT to_regclass('schema_migrations')") is None:
                await conn.execute(
                    "CREATE TABLE schema_migrations (name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
                )
            done = {r["name"] for r in await conn.fetch("SELECT name FROM schema_migrations")}
            for script in sorted(MIGRATIONS.iterdir(), key=lambda p: p.name):
                if not script.name.endswith(".sql") or script.name in done:
                    continue
                async with conn.transaction():
                    await conn.execute(script.read_text())
                    await conn.execute("INSERT INTO schema_migrations (name) VALUES ($1)", script.name)
                applied.append(script.name)
        except asyncpg.InsufficientPrivilegeError as err:
            role = await conn.fetchval("SELECT current_user")
            raise MigrationRefused(
                f"role {role} may not apply the pending migrations ({err}): run them as the schema's owner"
                " (DUNNING_DATABASE_OWNER_URL, `dunning migrate`)"
            ) from None
        return applied
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)
        await conn.close()


async def create_pool(database_url: str, max_size: int = 10) -> asyncpg.Pool:
    """A connection pool whose connections read and write jsonb as Python objects."""

    async def init(conn: asyncpg.Connection) -> None:
        await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")

    return await asyncpg.create_pool(database_url, min_size=1, max_size=max_size, init=init)


EVENT_COLUMNS = "position, invoice_id, sequence, kind, occurred_at, data"

Connection = asyncpg.Connection | PoolConnectionProxy
"""A connection, opened alone or acquired from a pool."""


async def read_events(pool: asyncpg.Pool | Connection, invoice_id: str) -> list[RecordedEvent]:
    """All events of one invoice, in order; ``event.payload()`` is typed."""
    rows = await pool.fetch(
        f"SELECT {EVENT_COLUMNS} FROM invoice_events WHERE invoice_id = $1 ORDER BY sequence", invoice_id
    )
    return [RecordedEvent(**dict(row)) for row in rows]


async def read_events_after(conn: Connection, position: int, limit: int) -> list[RecordedEvent]:
    """Up to ``limit`` events of all invoices after global ``position``, in the order they were appended."""
    rows = await conn.fetch(
        f"SELECT {EVENT_COLUMNS} FROM invoice_events WHERE position > $1 ORDER BY position LIMIT $2", position, limit
    )
    return [RecordedEvent(**dict(row)) for row in rows]


def check_payload(event: DomainEvent) -> None:
    """Refuse an event whose data is not its kind's payload: a non-retryable ``InvalidEvent``."""
    try:
        payload_of(event)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'data'}: {e['msg']}" for e in err.errors())
        raise ApplicationError(
            f"event {event.invoice_id}#{event.sequence} ({event.kind.value}) is malformed: {problems}",
            type="InvalidEvent",
            non_retryable=True,
        ) from None


INSERT_EVENTS = (
    "INSERT INTO invoice_events (invoice_id, sequence, kind, occurred_at, data, snapshot, format)"
    " SELECT * FROM unnest($1::text[], $2::int[], $3::text[], $4::timestamptz[], $5::jsonb[], $6::jsonb[], $7::int2[])"
    " ON CONFLICT (invoice_id, sequence) DO NOTHING RETURNING invoice_id, sequence"
)
WITH_SNAPSHOTS = 2  # ``format`` of rows whose batch ends with the workflow's snapshot; 1 before (upcast)


@dataclass
class Batch:
    """Events a workflow appends together, and the snapshot of the invoice after them (None before v5)."""

    events: list[DomainEvent]
    snapshot: InvoiceSnapshot | None = None

    def rows(self) -> list[tuple]:
        """Column values of ``INSERT_EVENTS``, the snapshot on the last event."""
        last = len(self.events) - 1
        document = self.snapshot.model_dump(mode="json") if self.snapshot else None
        form = WITH_SNAPSHOTS if self.snapshot else 1
        return [
            (e.invoice_id, e.sequence, e.kind.value, e.occurred_at, e.model_dump(mode="json")["data"],
             document if n == last else None, form)
            for n, e in enumerate(self.events)
        ]


async def _insert(pool: asyncpg.Pool, batches: list[Batch]) -> set[tuple[str, int]]:
    """Write ``batches`` in one statement, skipping rows already there; the keys of the rows written."""
    rows = [row for batch in batches for row in batch.rows()]
    inserted = await pool.fetch(INSERT_EVENTS, *(list(column) for column in zip(*rows, strict=True)))
    return {(row["invoice_id"], row["sequence"]) for row in inserted}


@dataclass
class _Queued:
    batch: Batch
    written: asyncio.Future[int]


class EventAppender:
    """Writes event batches; batches that arrive while a statement runs go together in the next one.

    A lone batch is written at once. Under load, one statement carries the batches of many
    activities, so appends stop queueing one by one for the ordering lock and the commit. Each
    batch is still all or nothing: it is never split across statements, and if a shared
    statement fails, every batch in it is tried again alone, so a batch the database refuses
    fails only its own caller.
    """

    def __init__(self, pool: asyncpg.Pool, max_events: int = 2_000) -> None:
        self._pool = pool
        self._max_events = max_events
        self._queue: deque[_Queued] = deque()
        self._writer: asyncio.Task[None] | None = None

    async def append(self, batch: Batch) -> int:
        """Write ``batch`` (rows already there are skipped); how many rows it added."""
        queued = _Queued(batch, asyncio.get_running_loop().create_future())
        self._queue.append(queued)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_queued())
        return await queued.written

    async def _write_queued(self) -> None:
        while self._queue:
            taken = self._take()
            try:
                await self._write(taken)
            except asyncio.CancelledError:  # the worker is stopping: the callers' activities will be retried
                for queued in taken:
                    queued.written.cancel()
                raise

    async def _write(self, taken: list[_Queued]) -> None:
        """Write the batches taken in one statement and tell each caller its count (or its error)."""
        if not taken:
            return
        try:
            written = await _insert(self._pool, [q.batch for q in taken])
        except Exception as err:
            if len(taken) == 1:
                _settle(taken[0], error=err)
                return
            for queued in taken:  # alone, so that one refused batch fails only its caller
                try:
                    _settle(queued, count=len(await _insert(self._pool, [queued.batch])))
                except Exception as alone_err:
                    _settle(queued, error=alone_err)
            return
        for queued in taken:
            mine = {(e.invoice_id, e.sequence) for e in queued.batch.events} & written
            written -= mine  # a row two batches share counts once
            _settle(queued, count=len(mine))

    def _take(self) -> list[_Queued]:
        """The next batches in arrival order, up to ``max_events`` (a larger batch goes alone); those whose
        callers gave up are dropped."""
        taken: list[_Queued] = []
        events = 0
        while self._queue and (not taken or events + len(self._queue[0].batch.events) <= self._max_events):
            queued = self._queue.popleft()
            if not queued.written.done():
                taken.append(queued)
                events += len(queued.batch.events)
        return taken


def _settle(queued: _Queued, *, count: int = 0, error: BaseException | None = None) -> None:
    if queued.written.done():  # the caller was cancelled meanwhile
        return
    if error is not None:
        queued.written.set_exception(error)
    else:
        queued.written.set_result(count)


class LedgerActivities(contracts.Ledger):
    """Activities that write the event log."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self._appender = EventAppender(pool)

    @activity.defn(name="append_events")
    async def append_events(self, events: list[DomainEvent], snapshot: InvoiceSnapshot | None = None) -> int:
        """Append a batch of events and the invoice's snapshot after them; a retried batch is a no-op for rows
        already there. Returns rows inserted.

        The whole batch is refused (nothing written) if any event's payload is malformed. Batches
        appended at the same time by other activities share its statement (``EventAppender``).
        A batch scheduled before v5 comes without a snapshot and is upcast by the projector.
        """
        for event in events:
            check_payload(event)
        return await self._appender.append(Batch(events, snapshot))
