"""The event store: versioned schema migrations and the append-only ``invoice_events`` table.

Every event is checked against its kind's payload model (``workflows.events``) before it is
written, so readers can rely on the shape of what they read.
"""

from __future__ import annotations

import json
from importlib.resources import files

import asyncpg
from pydantic import ValidationError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from workflows.events import RecordedEvent, payload_of
from workflows.models import DomainEvent

MIGRATIONS = files("activities") / "migrations"
MIGRATION_LOCK = 4_150_001  # advisory lock id: one migrator at a time


async def apply_schema(database_url: str) -> list[str]:
    """Apply the migrations not yet applied, in order; returns their names."""
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations"
            " (name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["name"] for r in await conn.fetch("SELECT name FROM schema_migrations")}
        applied = []
        for script in sorted(MIGRATIONS.iterdir(), key=lambda p: p.name):
            if not script.name.endswith(".sql") or script.name in done:
                continue
            async with conn.transaction():
                await conn.execute(script.read_text())
                await conn.execute("INSERT INTO schema_migrations (name) VALUES ($1)", script.name)
            applied.append(script.name)
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


async def read_events(pool: asyncpg.Pool, invoice_id: str) -> list[RecordedEvent]:
    """All events of one invoice, in order; ``event.payload()`` is typed."""
    rows = await pool.fetch(
        f"SELECT {EVENT_COLUMNS} FROM invoice_events WHERE invoice_id = $1 ORDER BY sequence", invoice_id
    )
    return [RecordedEvent(**dict(row)) for row in rows]


async def read_events_after(conn: asyncpg.Connection, position: int, limit: int) -> list[RecordedEvent]:
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


class LedgerActivities:
    """Activities that write the event log."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    @activity.defn(name="append_events")
    async def append_events(self, events: list[DomainEvent]) -> int:
        """Append events in one statement; a retried batch is a no-op for rows already there. Returns rows inserted.

        The whole batch is refused (nothing written) if any event's payload is malformed.
        """
        for event in events:
            check_payload(event)
        inserted = await self.pool.fetch(
            "INSERT INTO invoice_events (invoice_id, sequence, kind, occurred_at, data)"
            " SELECT * FROM unnest($1::text[], $2::int[], $3::text[], $4::timestamptz[], $5::jsonb[])"
            " ON CONFLICT (invoice_id, sequence) DO NOTHING RETURNING 1",
            [e.invoice_id for e in events],
            [e.sequence for e in events],
            [e.kind.value for e in events],
            [e.occurred_at for e in events],
            [e.model_dump(mode="json")["data"] for e in events],
        )
        return len(inserted)
