"""The event store on a real PostgreSQL: migrations, idempotent appends, append-only rows."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from importlib.resources import files

import asyncpg
import pytest
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


@pytest.mark.parametrize(
    "statement", ["UPDATE invoice_events SET kind = 'x'", "DELETE FROM invoice_events", "TRUNCATE invoice_events"]
)
async def test_events_are_append_only(pool, statement):
    await LedgerActivities(pool).append_events([event(1)])
    with pytest.raises(asyncpg.RaiseError, match="append-only"):
        await pool.execute(statement)
    assert len(await read_events(pool, "INV-L1")) == 1


# --- group commit: batches appended at the same time ----------------------------------------


def invoice_batch(invoice_id: str, sequences: range) -> list[DomainEvent]:
    return [
        DomainEvent(invoice_id=invoice_id, sequence=n, kind=EventKind.INVOICE_RESENT, occurred_at=AT, data={"balance_minor": n})
        for n in sequences
    ]


async def transactions_that_wrote(pool: asyncpg.Pool) -> int:
    """Rows of one transaction share its start time (``recorded_at``)."""
    return await pool.fetchval("SELECT count(DISTINCT recorded_at) FROM invoice_events")


async def test_batches_appended_together_share_a_statement_and_each_counts_its_own_rows(pool):
    ledger = LedgerActivities(pool)
    batches = [invoice_batch(f"INV-G{n}", range(1, 3)) for n in range(20)]
    await ledger.append_events(batches[0][:1])  # INV-G0#1 is there already

    counts = await asyncio.gather(*(ledger.append_events(batch) for batch in batches))

    assert counts == [1] + [2] * 19
    assert await pool.fetchval("SELECT count(*) FROM invoice_events") == 40
    assert await transactions_that_wrote(pool) <= 3  # the first append, then one or two for the 20
    for n in range(20):
        assert [e.sequence for e in await read_events(pool, f"INV-G{n}")] == [1, 2]


async def test_a_row_in_two_batches_at_once_is_written_and_counted_once(pool):
    ledger = LedgerActivities(pool)
    first, again = invoice_batch("INV-G1", range(1, 3)), invoice_batch("INV-G1", range(2, 4))
    counts = await asyncio.gather(ledger.append_events(first), ledger.append_events(again))
    assert counts == [2, 1]
    assert [e.sequence for e in await read_events(pool, "INV-G1")] == [1, 2, 3]


async def test_a_batch_the_database_refuses_fails_only_its_own_append(pool):
    await pool.execute(
        """
        CREATE FUNCTION refuse_boom() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.invoice_id = 'INV-BOOM' THEN RAISE EXCEPTION 'refused by the test'; END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER refuse_boom BEFORE INSERT ON invoice_events FOR EACH ROW EXECUTE FUNCTION refuse_boom();
        """
    )
    ledger = LedgerActivities(pool)
    batches = [invoice_batch("INV-OK1", range(1, 3)), invoice_batch("INV-BOOM", range(1, 3)), invoice_batch("INV-OK2", range(1, 2))]

    outcomes = await asyncio.gather(*(ledger.append_events(b) for b in batches), return_exceptions=True)

    assert outcomes[0] == 2 and outcomes[2] == 1
    assert isinstance(outcomes[1], asyncpg.RaiseError) and "refused by the test" in str(outcomes[1])
    assert await read_events(pool, "INV-BOOM") == []
    assert len(await read_events(pool, "INV-OK1")) == 2 and len(await read_events(pool, "INV-OK2")) == 1
