"""The embedded stack and the server fixtures, against the real servers."""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import sqlite3
import time
import uuid
from datetime import timedelta
from email.message import EmailMessage

from temporalio import workflow
from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.worker import Worker

# The workflow sandbox re-imports this module; let it reuse these instead of re-running them.
with workflow.unsafe.imports_passed_through():
    import aiosmtplib
    import asyncpg

    from tests.conftest import SmtpServer, free_port
    from worker.embedded import MailSink, start_postgres, start_temporal_dev_server
    from workflows.search_attributes import ALL as SEARCH_ATTRIBUTES
    from workflows.search_attributes import INVOICE_STATE


@workflow.defn
class SleepThirtyDays:
    @workflow.run
    async def run(self) -> str:
        workflow.upsert_search_attributes([INVOICE_STATE.value_set("waiting")])
        await workflow.sleep(timedelta(days=30))
        workflow.upsert_search_attributes([INVOICE_STATE.value_set("woken")])
        return "woken"


def a_message(subject: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = "billing@dunning.invalid"
    message["To"] = "ana@client.example"
    message["Subject"] = subject
    message.set_content("Hello Ana,\nplease pay.\n")
    return message


async def test_postgres_keeps_data_across_restarts(pgdata):
    server = start_postgres(pgdata)
    try:
        conn = await asyncpg.connect(server.url)
        await conn.execute("CREATE TABLE notes (body text); INSERT INTO notes VALUES ('kept')")
        await conn.close()
    finally:
        server.stop()

    server = start_postgres(pgdata)
    try:
        conn = await asyncpg.connect(server.url)
        assert await conn.fetchval("SELECT body FROM notes") == "kept"
        await conn.close()
    finally:
        server.stop()


async def test_db_url_is_a_fresh_database_with_the_schema(db_url):
    conn = await asyncpg.connect(db_url)
    try:
        assert await conn.fetchval("SELECT current_database()") != "postgres"
        assert await conn.fetchval("SELECT count(*) FROM invoice_events") == 0
    finally:
        await conn.close()


async def test_dev_server_registers_search_attributes_and_keeps_workflows_in_a_wal_database(tmp_path):
    port, expected = free_port(), {key.name: int(key.indexed_value_type) for key in SEARCH_ATTRIBUTES}
    for run in ("first", "restart on the same temporal.db"):
        server = start_temporal_dev_server(tmp_path, port, free_port(), "dunning-test")
        try:
            client = await Client.connect(f"localhost:{port}", namespace="dunning-test")
            listed = await client.operator_service.list_search_attributes(
                ListSearchAttributesRequest(namespace="dunning-test")
            )
            assert expected.items() <= dict(listed.custom_attributes).items(), run
            if run == "first":  # no worker: it just waits, and must still be there after the restart
                await client.start_workflow("NoSuchWorkflow", id="kept", task_queue="nobody")
            else:
                assert (await client.get_workflow_handle("kept").describe()).status == WorkflowExecutionStatus.RUNNING
        finally:
            server.stop()
        assert server.process.returncode is not None
    # the server's SQLite file keeps a write-ahead log (the mode is stored in the file)
    with contextlib.closing(sqlite3.connect(tmp_path / "temporal.db")) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)


async def test_mail_sink_saves_eml_files(tmp_path):
    port = free_port()
    sink = MailSink("127.0.0.1", port, tmp_path / "mail")
    sink.start()
    try:
        await aiosmtplib.send(a_message("Reminder: INV-1"), hostname="127.0.0.1", port=port)
    finally:
        sink.stop()
    [saved] = (tmp_path / "mail").glob("*.eml")
    message = email.message_from_bytes(saved.read_bytes(), policy=email.policy.default)
    assert message["Subject"] == "Reminder: INV-1"
    assert "please pay" in message.get_content()


async def test_smtp_server_collects_messages(smtp_server: SmtpServer):
    await aiosmtplib.send(a_message("First"), hostname=smtp_server.host, port=smtp_server.port)
    assert [m["Subject"] for m in smtp_server.messages] == ["First"]
    smtp_server.clear()
    assert smtp_server.messages == []


async def test_time_skipping_env_skips_thirty_days_and_accepts_search_attributes(time_skipping_env):
    client = time_skipping_env.client
    queue = f"test-{uuid.uuid4().hex[:8]}"
    started = time.monotonic()
    async with Worker(client, task_queue=queue, workflows=[SleepThirtyDays]):
        handle = await client.start_workflow(SleepThirtyDays.run, id=queue, task_queue=queue)
        assert await handle.result() == "woken"
    assert time.monotonic() - started < 10
    assert (await handle.describe()).typed_search_attributes.get(INVOICE_STATE) == "woken"


async def test_dev_env_accepts_search_attributes(dev_env):
    client = dev_env.client
    queue = f"test-{uuid.uuid4().hex[:8]}"
    async with Worker(client, task_queue=queue, workflows=[SleepThirtyDays]):
        handle = await client.start_workflow(SleepThirtyDays.run, id=queue, task_queue=queue)
        async with asyncio.timeout(10):
            while (state := (await handle.describe()).typed_search_attributes.get(INVOICE_STATE)) is None:
                await asyncio.sleep(0.05)
        assert state == "waiting"
        await handle.terminate()
