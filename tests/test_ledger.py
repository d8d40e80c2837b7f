"""The event store on a real PostgreSQL: migrations, idempotent appends, append-only rows."""

from __future__ import annotations

from datetime import datetime, timezone

import asyncpg
import pytest

from importlib.resources import files

from temporalio.exceptions import ApplicationError

from activities.ledger import LedgerActivities, apply_schema, create_pool, read_events
from workflows.models import DomainEvent, EventKind

AT = datetime(2026, 11, 23, 9, 0, tzinfo=timezone.utc)


def event(sequence: int, kind: EventKind = EventKind.INVOICE_RESENT, data: dict | None = None) -> DomainEvent:
    data = data if data is not None else {"balance_minor": 100 * sequence}
    return DomainEvent(invoice_id="INV-L1", sequence=sequence, kind=kind, occurred_at=AT, data=data)


@pytest.fixture
async def pool(db_url: str):
    pool = await create_pool(db_url)
    yield pool
    await pool.close()


async def test_migrations_apply_once(db_url: str):
    assert await apply_schema(db_url) == []  # db_url already applied them
    conn = await asyncpg.connect(db_url)
    try:
        names = [r["name"] for r in await conn.fetch("SELECT name FROM schema_migrations ORDER BY name")]
    finally:
        await conn.close()
    shipped = sorted(p.name for p in (files("activities") / "migrations").iterdir() if p.name.endswith(".sql"))
    assert names == shipped
    assert names[0] == "001_event_store.sql"


async def test_a_retried_batch_inserts_nothing_twice(pool):
    ledger = LedgerActivities(pool)
    sent = {"kind": "reminder", "step": "0002-reminder", "to": "a@b.example"}
    batch = [event(1), event(2, EventKind.NOTICE_SENT, sent), event(3)]
    assert await ledger.append_events(batch) == 3
    assert await ledger.append_events(batch) == 0
    assert await ledger.append_events([*batch, event(4)]) == 1
    stored = await read_events(pool, "INV-L1")
    assert [e.sequence for e in stored] == [1, 2, 3, 4]
    assert stored[0].data == {"balance_minor": 100} and stored[1].data == sent


async def test_a_batch_with_a_malformed_payload_is_refused_whole(pool):
    ledger = LedgerActivities(pool)
    bad = event(2, EventKind.NOTICE_SENT, {"kind": "reminder"})  # no step, no recipient
    with pytest.raises(ApplicationError) as refused:
        await ledger.append_events([event(1), bad])
    assert refused.value.type == "InvalidEvent" and refused.value.non_retryable
    assert await read_events(pool, "INV-L1") == []


@pytest.mark.parametrize("statement", ["UPDATE invoice_events SET kind = 'x'", "DELETE FROM invoice_events"])
async def test_events_are_append_only(pool, statement):
    await LedgerActivities(pool).append_events([event(1)])
    with pytest.raises(asyncpg.RaiseError, match="append-only"):
        await pool.execute(statement)
    assert len(await read_events(pool, "INV-L1")) == 1
