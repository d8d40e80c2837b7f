"""A poison event never stops the projector: on a real PostgreSQL, rows the projector cannot apply
are written straight into the log as the schema's owner (as a release before the date bounds did),
and the projector, running as the service's role, quarantines them and projects the rest."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from typing import NamedTuple

import asyncpg
import pytest
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from activities import projections
from activities.ledger import apply_schema, create_pool
from activities.projections import (
    PROJECTION_TABLES,
    Projector,
    TooMuchPoison,
    _is_poison,
    catch_up,
    invoice_status,
    invoice_view,
    list_invoices,
    projection_lag,
    quarantined_events,
    rebuild,
    retry_quarantined,
)
from api.metrics import scrape_service_metrics
from cli.projections import app as projections_cli
from tests.event_stories import at
from tests.harness import eventually
from tests.test_projections import append, interleaved, ledger_events
from worker.embedded import provision_database
from workflows.models import EventKind, InvoiceState

YEAR_ONE = "0001-01-01T00:00:00+14:00"  # accepted before the date bounds: the upcaster overflows on it


class Database(NamedTuple):
    owner: asyncpg.Connection  # the schema's owner, who may write a row no workflow would
    pool: asyncpg.Pool  # the service's role, as the projector runs
    service_url: str


@pytest.fixture
async def database(postgres_url: str) -> AsyncIterator[Database]:
    name = f"quarantine_{uuid.uuid4().hex[:12]}"
    urls = await provision_database(postgres_url, name)
    await apply_schema(urls.owner)
    owner = await asyncpg.connect(urls.owner)
    pool = await create_pool(urls.service)
    try:
        yield Database(owner, pool, urls.service)
    finally:
        await pool.close()
        await owner.close()
        admin = await asyncpg.connect(postgres_url)
        try:
            await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        finally:
            await admin.close()


async def insert_row(db: Database, invoice_id: str, sequence: int, kind: EventKind, occurred_at: datetime, data: dict,
                     snapshot: dict | None = None) -> int:
    """A row written directly into the log, as no workflow of this release would; returns its position."""
    return await db.owner.fetchval(
        "INSERT INTO invoice_events (invoice_id, sequence, kind, occurred_at, data, snapshot, format)"
        " VALUES ($1, $2, $3, $4, $5::jsonb, $6::jsonb, $7) RETURNING position",
        invoice_id, sequence, kind.value, occurred_at, json.dumps(data),
        json.dumps(snapshot) if snapshot else None, 2 if snapshot else 1,
    )


async def table_rows(pool: asyncpg.Pool) -> dict[str, list[dict]]:
    return {
        table: [dict(r) for r in await pool.fetch(f"SELECT * FROM {table} ORDER BY 1, 2, 3")] for table in PROJECTION_TABLES
    }


async def quarantined_metric(pool: asyncpg.Pool) -> float:
    families = text_string_to_metric_families((await scrape_service_metrics(pool)).decode())
    family = next(f for f in families if f.name == "dunning_projection_quarantined_events")
    return family.samples[0].value


async def cli(db: Database, *args: str):
    env = {**os.environ, "DATABASE_URL": db.service_url, "DUNNING_DATABASE_OWNER_URL": db.service_url}
    return await asyncio.to_thread(CliRunner().invoke, projections_cli, list(args), env=env)


async def test_a_poisoned_row_is_quarantined_and_the_rest_projects(database: Database):
    db = database
    stories = ledger_events()
    a1 = stories[0]
    events = a1.events + interleaved(stories[1:])  # A1's own events all come before its poisoned one
    await append(db.pool, events[:30])
    stop = asyncio.Event()
    projector = asyncio.create_task(Projector(poll_interval=0.5, standby_interval=0.2).run(db.pool, stop))
    try:
        await eventually(lambda: _projected(db.pool, 30))
        a1_sequence = max(e.sequence for e in a1.events)
        poison = await insert_row(
            db, "A1", a1_sequence + 1, EventKind.PAYMENT_RECORDED, at(6, 20),
            {"payment_id": "a1-ancient", "amount_minor": 1_000, "received_at": YEAR_ONE, "balance_minor": 52_500},
        )
        later = await insert_row(  # the same invoice goes on after the poison
            db, "A1", a1_sequence + 2, EventKind.PAYMENT_RECORDED, at(6, 21),
            {"payment_id": "a1-p2", "amount_minor": 10_000, "received_at": at(6, 21).isoformat(), "balance_minor": 42_500},
        )
        await append(db.pool, events[30:])
        await eventually(lambda: _projected(db.pool, len(events) + 2), timeout=20)
    finally:
        stop.set()
        await asyncio.wait_for(projector, timeout=5)

    [held] = await quarantined_events(db.pool)
    assert (held.position, held.invoice_id, held.kind, held.attempts) == (poison, "A1", "payment_recorded", 1)
    assert held.error.startswith("OverflowError") and later > poison
    a1_view = await invoice_view(db.pool, "A1")
    assert (a1_view.paid_minor, a1_view.balance_minor, a1_view.quarantined_events) == (60_000, 43_500, 1)
    assert await invoice_status(db.pool, "A1") is None  # not from an incomplete row: the API asks the workflow
    views = await list_invoices(db.pool)
    assert sorted(v.invoice_id for v in views) == sorted(s.invoice.invoice_id for s in stories)
    assert all(v.quarantined_events == 0 for v in views if v.invoice_id != "A1")
    assert (await invoice_view(db.pool, "A3")).state == InvoiceState.PAID
    assert (await invoice_status(db.pool, "A3")).paid_minor == 21_500
    assert await quarantined_metric(db.pool) == 1

    listed = await cli(db, "quarantine", "list")
    assert listed.exit_code == 0, listed.output
    assert "1 quarantined event(s)" in listed.output and f"{poison}" in listed.output and "OverflowError" in listed.output
    as_json = await cli(db, "quarantine", "list", "--json")
    assert as_json.exit_code == 0, as_json.output
    [listed_event] = json.loads(as_json.output)
    assert (listed_event["position"], listed_event["invoice_id"], listed_event["attempts"]) == (poison, "A1", 1)
    assert listed_event["error"].startswith("OverflowError")

    # the row is still poison: a retry counts one more attempt and keeps it out
    retried = await cli(db, "quarantine", "retry", "--position", str(poison))
    assert retried.exit_code == 1 and "Applied 0 event(s)." in retried.output and "Still quarantined" in retried.output
    assert [(e.position, e.attempts) for e in await quarantined_events(db.pool)] == [(poison, 2)]
    assert (await invoice_view(db.pool, "A1")).balance_minor == 43_500
    missing = await cli(db, "quarantine", "retry", "--position", str(later))
    assert missing.exit_code == 1 and f"the event at position {later} is not quarantined" in missing.output

    projected = await table_rows(db.pool)
    rebuilt = await cli(db, "rebuild")
    assert rebuilt.exit_code == 0, rebuilt.output
    assert f"Rebuilt from {len(events) + 1} events" in rebuilt.output
    assert "Skipped 1 quarantined event(s)" in rebuilt.output
    assert await table_rows(db.pool) == projected
    assert (await projection_lag(db.pool)).events_behind == 0


async def test_a_snapshot_the_sql_cannot_read_is_quarantined_and_the_next_one_projects(database: Database):
    db = database
    story = ledger_events()[6]  # C1: issued, open
    await append(db.pool, story.events)
    await catch_up(db.pool)
    upcast = await db.pool.fetchval("SELECT snapshot FROM upcast_snapshots WHERE invoice_id = 'C1'")
    last = upcast["last_sequence"]
    unreadable = {**upcast, "last_sequence": last + 1, "receivables": [], "story": [{"at": "soon", "what": "?"}]}
    poison = await insert_row(db, "C1", last + 1, EventKind.INVOICE_RESENT, at(6, 25), {"balance_minor": 200_000},
                              unreadable)
    resent = {**upcast, "last_sequence": last + 2, "receivables": [],
              "story": [{"at": at(6, 26).isoformat(), "what": "Invoice sent again"}]}
    await insert_row(db, "C1", last + 2, EventKind.INVOICE_RESENT, at(6, 26), {"balance_minor": 200_000}, resent)

    assert await catch_up(db.pool) == 2
    [held] = await quarantined_events(db.pool)
    assert held.position == poison and held.error.startswith("InvalidDatetimeFormatError")
    view = await invoice_view(db.pool, "C1")
    assert (view.quarantined_events, view.balance_minor) == (1, 200_000)
    story_lines = await db.pool.fetch("SELECT sequence, what FROM projected_invoice_story WHERE invoice_id = 'C1'")
    assert [tuple(r) for r in story_lines] == [(last + 2, "Invoice sent again")]


async def test_retry_after_a_fix_projects_as_if_nothing_had_failed(database: Database, monkeypatch):
    """A release whose upcaster failed on factored invoices quarantined their factoring in a rebuild;
    the fixed release's retry projects the invoice again, as a clean rebuild does."""
    db = database
    await append(db.pool, interleaved(ledger_events()))
    await catch_up(db.pool)
    await db.pool.execute("DELETE FROM upcast_snapshots")  # the faulty release upcasts again
    clean = await table_rows(db.pool)
    real_upcast = projections.upcast

    def faulty_upcast(events, sequences, holidays_of):
        if any(e.kind == EventKind.INVOICE_FACTORED and e.sequence in sequences for e in events):
            raise KeyError("factor")
        return real_upcast(events, sequences, holidays_of)

    monkeypatch.setattr(projections, "upcast", faulty_upcast)
    steps = []
    assert await rebuild(db.pool, steps.append) == sum(len(s.events) for s in ledger_events()) - 1
    assert "quarantined 1 more event(s) that cannot be applied" in steps
    [held] = await quarantined_events(db.pool)
    assert (held.invoice_id, held.kind, held.error) == ("B2", "invoice_factored", "KeyError: 'factor'")
    b2 = await invoice_view(db.pool, "B2")
    assert (b2.state, b2.factored_to, b2.quarantined_events) == (InvoiceState.FACTORED, None, 1)

    monkeypatch.undo()  # the fixed release
    outcome = await retry_quarantined(db.pool)
    assert outcome.released == [held.position] and outcome.still_quarantined == []
    assert await quarantined_events(db.pool) == []
    assert await table_rows(db.pool) == clean
    assert (await invoice_view(db.pool, "B2")).quarantined_events == 0
    assert await quarantined_metric(db.pool) == 0


async def test_a_projector_failing_on_everything_quarantines_nothing(database: Database, monkeypatch):
    """More failures in one copy than poison could explain is a bug: the batch stays unprojected, retried."""
    db = database
    await append(db.pool, interleaved(ledger_events()))
    monkeypatch.setattr(projections, "MAX_QUARANTINED_AT_ONCE", 3)

    def broken_upcast(events, sequences, holidays_of):
        raise ValueError("a bug")

    monkeypatch.setattr(projections, "upcast", broken_upcast)
    with pytest.raises(TooMuchPoison, match="more than 3 events cannot be applied"):
        await catch_up(db.pool)
    assert await quarantined_events(db.pool) == []
    assert (await projection_lag(db.pool)).events_behind == sum(len(s.events) for s in ledger_events())


@pytest.mark.parametrize(
    ("error", "poison"),
    [
        (OverflowError("date value out of range"), True),
        (ValueError("bad amount"), True),
        (asyncpg.InvalidTextRepresentationError("invalid input syntax for type bigint"), True),
        (asyncpg.NotNullViolationError("null value in column"), True),
        (asyncpg.ConnectionDoesNotExistError("connection was closed"), False),
        (asyncpg.UndefinedColumnError("column does not exist"), False),
        (asyncpg.InsufficientPrivilegeError("permission denied"), False),
        (asyncpg.SerializationError("could not serialize"), False),
        (ConnectionResetError(), False),
        (TooMuchPoison("a bug"), False),
    ],
)
def test_only_what_an_event_says_is_poison(error: Exception, poison: bool):
    assert _is_poison(error) is poison


async def _projected(pool: asyncpg.Pool, events: int) -> bool:
    lag = await projection_lag(pool)
    total = await pool.fetchval("SELECT count(*) FROM invoice_events")
    return lag.events_behind == 0 and total == events
