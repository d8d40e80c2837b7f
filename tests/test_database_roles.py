"""Least privilege on a real PostgreSQL: the owner role migrates, the service role appends and
projects but can neither change the event log nor switch off what keeps it append-only."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import asyncpg
import pytest

from activities.ledger import SERVICE_GROUP, LedgerActivities, MigrationRefused, apply_schema, create_pool, read_events
from activities.projections import catch_up, invoice_view, rebuild
from tests.cli_helpers import dunning, failed, succeeded
from tests.test_projections import ledger_events
from worker.embedded import DatabaseUrls, provision_database
from workflows.models import InvoiceState


@pytest.fixture
async def database(postgres_url: str) -> AsyncIterator[DatabaseUrls]:
    """A new database provisioned as ``dunning dev`` provisions its own, with no migration applied yet."""
    name = f"roles_{uuid.uuid4().hex[:12]}"
    urls = await provision_database(postgres_url, name)
    yield urls
    admin = await asyncpg.connect(postgres_url)
    try:
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
async def migrated(database: DatabaseUrls) -> DatabaseUrls:
    """``database`` with the migrations applied by ``dunning migrate`` as the owner."""
    output = succeeded(await dunning({"DUNNING_DATABASE_OWNER_URL": database.owner}, "migrate"))
    assert output.startswith("applied 001_event_store.sql") and "006_least_privilege.sql" in output
    return database


@pytest.fixture
async def service_pool(migrated: DatabaseUrls) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(migrated.service)
    yield pool
    await pool.close()


async def test_the_roles_are_who_the_urls_say(migrated: DatabaseUrls):
    for url, role in ((migrated.owner, "dunning_owner"), (migrated.service, "dunning")):
        assert urlsplit(url).username == role
        conn = await asyncpg.connect(url)
        try:
            assert await conn.fetchval("SELECT current_user") == role
            superuser = await conn.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
            assert superuser is False
            member = await conn.fetchval("SELECT pg_has_role(current_user, $1, 'MEMBER')", SERVICE_GROUP)
            assert member is (role == "dunning")
            owns_log = await conn.fetchval("SELECT pg_get_userbyid(relowner) FROM pg_class WHERE relname = 'invoice_events'")
            assert owns_log == "dunning_owner"
        finally:
            await conn.close()


async def test_the_service_role_appends_and_projects(migrated: DatabaseUrls, service_pool: asyncpg.Pool):
    story = ledger_events()[2]  # A3: paid and closed
    assert await LedgerActivities(service_pool).append_events(story.events) == len(story.events)
    assert await catch_up(service_pool) == len(story.events)
    assert (await invoice_view(service_pool, story.invoice.invoice_id)).state == InvoiceState.PAID
    assert await rebuild(service_pool) == len(story.events)
    # at start the service checks that the schema is current; with nothing pending it only reads
    assert await apply_schema(migrated.service) == []


@pytest.mark.parametrize(
    "statement",
    [
        "TRUNCATE invoice_events",
        "DELETE FROM invoice_events",
        "UPDATE invoice_events SET kind = 'x'",
        "ALTER TABLE invoice_events DISABLE TRIGGER invoice_events_append_only",
        "ALTER TABLE invoice_events DISABLE TRIGGER ALL",
        "DROP TRIGGER invoice_events_append_only ON invoice_events",
        "DROP TRIGGER invoice_events_no_truncate ON invoice_events",
        "CREATE TRIGGER t BEFORE INSERT ON invoice_events EXECUTE FUNCTION serialize_event_appends()",
        "CREATE OR REPLACE FUNCTION refuse_event_change() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN RETURN NULL; END'",
        "DROP FUNCTION refuse_event_change() CASCADE",
        "ALTER TABLE invoice_events OWNER TO dunning",
        "DROP TABLE invoice_events",
        "SET session_replication_role = replica",  # would skip every trigger
        "TRUNCATE equipment_actions",
        "DELETE FROM equipment_actions",
        "CREATE TABLE shadow (id int)",
    ],
)
async def test_the_service_role_cannot_change_the_log_or_its_guards(service_pool: asyncpg.Pool, statement: str):
    story = ledger_events()[0]
    await LedgerActivities(service_pool).append_events(story.events)
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await service_pool.execute(statement)
    assert len(await read_events(service_pool, story.invoice.invoice_id)) == len(story.events)


async def test_the_owner_cannot_truncate_the_log_either(migrated: DatabaseUrls):
    conn = await asyncpg.connect(migrated.owner)
    try:
        await conn.execute(
            "INSERT INTO invoice_events (invoice_id, sequence, kind, occurred_at) VALUES ('INV-T', 1, 'invoice_resent', now())"
        )
        for table in ("invoice_events", "equipment_actions"):
            with pytest.raises(asyncpg.RaiseError, match=f"{table} is append-only: TRUNCATE refused"):
                await conn.execute(f"TRUNCATE {table}")
        assert await conn.fetchval("SELECT count(*) FROM invoice_events") == 1
    finally:
        await conn.close()


async def test_no_table_grants_the_service_truncate_references_or_trigger(migrated: DatabaseUrls):
    conn = await asyncpg.connect(migrated.owner)
    try:
        await conn.execute("CREATE TABLE later_read_model (id int)")  # as a later migration would
        rows = await conn.fetch(
            "SELECT c.relname,"
            " has_table_privilege($1, c.oid, 'SELECT') AS reads,"
            " has_table_privilege($1, c.oid, 'TRUNCATE, REFERENCES, TRIGGER') AS more,"
            " has_table_privilege($1, c.oid, 'UPDATE, DELETE') AS changes"
            " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = 'public' AND c.relkind IN ('r', 'v')",
            SERVICE_GROUP,
        )
    finally:
        await conn.close()
    tables = {row["relname"]: row for row in rows}
    assert {"invoice_events", "projected_invoices", "later_read_model"} <= set(tables)
    assert all(row["reads"] and not row["more"] for row in tables.values()), [dict(r) for r in rows]
    assert not tables["invoice_events"]["changes"] and not tables["equipment_actions"]["changes"]
    assert tables["later_read_model"]["changes"] and tables["projected_invoices"]["changes"]


async def test_the_service_role_may_not_migrate(database: DatabaseUrls):
    with pytest.raises(MigrationRefused, match="role dunning may not apply the pending migrations"):
        await apply_schema(database.service)
    failed(await dunning({"DATABASE_URL": database.service}, "migrate"), "DUNNING_DATABASE_OWNER_URL")


async def test_provisioning_twice_changes_nothing(postgres_url: str, database: DatabaseUrls):
    assert await provision_database(postgres_url, urlsplit(database.owner).path.lstrip("/")) == database
