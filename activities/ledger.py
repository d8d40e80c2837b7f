"""The event store: versioned schema migrations and the append-only ``invoice_events`` table."""

from __future__ import annotations

import json
from importlib.resources import files

import asyncpg
from temporalio import activity

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


async def create_pool(database_url: str) -> asyncpg.Pool:
    """A connection pool whose connections read and write jsonb as Python objects."""

    async def init(conn: asyncpg.Connection) -> None:
        await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")

    return await asyncpg.create_pool(database_url, min_size=1, max_size=10, init=init)


async def read_events(pool: asyncpg.Pool, invoice_id: str) -> list[DomainEvent]:
    """All events of one invoice, in order."""
    rows = await pool.fetch(
        "SELECT invoice_id, sequence, kind, occurred_at, data FROM invoice_events"
        " WHERE invoice_id = $1 ORDER BY sequence",
        invoice_id,
    )
    return [DomainEvent(**dict(row)) for row in rows]


class LedgerActivities:
    """Activities that write the event log."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    @activity.defn(name="append_events")
    async def append_events(self, events: list[DomainEvent]) -> int:
        """Append events; a retried batch is a no-op for rows already there. Returns rows inserted."""
        rows = [(e.invoice_id, e.sequence, e.kind.value, e.occurred_at, e.model_dump(mode="json")["data"]) for e in events]
        async with self.pool.acquire() as conn, conn.transaction():
            before = await conn.fetchval(
                "SELECT count(*) FROM invoice_events WHERE (invoice_id, sequence) IN "
                "(SELECT * FROM unnest($1::text[], $2::int[]))",
                [r[0] for r in rows],
                [r[1] for r in rows],
            )
            await conn.executemany(
                "INSERT INTO invoice_events (invoice_id, sequence, kind, occurred_at, data)"
                " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (invoice_id, sequence) DO NOTHING",
                rows,
            )
        return len(rows) - before
