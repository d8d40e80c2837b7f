"""`dunning equipment stop|resume|status`: the kill switches ops flip, in the real database."""

from __future__ import annotations

import asyncio
import shutil
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pytest
from typer.testing import CliRunner

from activities import ledger
from activities.equipment.journal import kill_switch_for
from cli.main import app

RUNNER = CliRunner()


async def dunning(db_url: str, *args: str):
    return await asyncio.to_thread(RUNNER.invoke, app, list(args), env={"DATABASE_URL": db_url})


async def switch_for(db_url: str, customer: str):
    pool = await asyncpg.create_pool(db_url, min_size=1, max_size=1)
    try:
        return await kill_switch_for(pool, customer)
    finally:
        await pool.close()


async def test_a_customer_switch_stops_that_customer_only(db_url: str):
    result = await dunning(db_url, "equipment", "stop", "--customer", "CUST-1", "--reason", "disputed cut")
    assert result.exit_code == 0, result.output
    assert "kill switch on for CUST-1: disputed cut" in result.stdout
    switch = await switch_for(db_url, "CUST-1")
    assert (switch.scope, switch.reason) == ("CUST-1", "disputed cut")
    assert await switch_for(db_url, "CUST-2") is None
    assert "stopped (CUST-1): disputed cut" in (await dunning(db_url, "equipment", "status", "CUST-1")).stdout
    assert (await dunning(db_url, "equipment", "status", "CUST-2")).stdout.strip() == "not stopped"

    assert "kill switch off for CUST-1" in (await dunning(db_url, "equipment", "resume", "--customer", "CUST-1")).stdout
    assert await switch_for(db_url, "CUST-1") is None
    assert "no kill switch was on" in (await dunning(db_url, "equipment", "resume", "--customer", "CUST-1")).stdout


async def test_the_global_switch_covers_every_customer(db_url: str):
    result = await dunning(db_url, "equipment", "stop", "--reason", "BMC firmware incident")
    assert result.exit_code == 0 and "kill switch on for every customer" in result.stdout
    assert (await switch_for(db_url, "ANYONE")).customer_id is None
    assert "stopped (every customer)" in (await dunning(db_url, "equipment", "status", "global")).stdout
    assert (await dunning(db_url, "equipment", "resume")).exit_code == 0
    assert await switch_for(db_url, "ANYONE") is None


async def test_a_customer_called_global_gets_a_switch_of_its_own(db_url: str):
    assert (await dunning(db_url, "equipment", "stop", "--customer", "global", "--reason", "disputed")).exit_code == 0
    assert (await switch_for(db_url, "global")).customer_id == "global"
    assert await switch_for(db_url, "ANYONE") is None
    assert "no kill switch was on for every customer" in (await dunning(db_url, "equipment", "resume")).stdout
    assert "kill switch off for global" in (await dunning(db_url, "equipment", "resume", "--customer", "global")).stdout


async def test_switches_set_before_the_customer_column_keep_their_meaning(
    postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    for script in ledger.MIGRATIONS.iterdir():
        if script.name < "007":
            shutil.copy(script, tmp_path / script.name)
    name = f"test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(postgres_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    db_url = urlsplit(postgres_url)._replace(path=f"/{name}").geturl()
    try:
        with monkeypatch.context() as before:
            before.setattr(ledger, "MIGRATIONS", tmp_path)
            await ledger.apply_schema(db_url)
        conn = await asyncpg.connect(db_url)
        await conn.execute(
            "INSERT INTO equipment_kill_switches (scope, reason, set_by)"
            " VALUES ('global', 'incident', 'ops:ion'), ('CUST-1', 'disputed', 'ops:ana')"
        )
        await conn.close()
        assert (await ledger.apply_schema(db_url))[0] == "007_kill_switch_customer.sql"
        assert (await switch_for(db_url, "ANYONE")).customer_id is None
        assert "kill switch off for CUST-1" in (await dunning(db_url, "equipment", "resume", "--customer", "CUST-1")).stdout
    finally:
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()


async def test_a_database_that_does_not_answer_is_one_line_on_stderr():
    result = await dunning("postgresql://nobody@127.0.0.1:1/none", "equipment", "status", "CUST-1")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ") and len(result.stderr.strip().splitlines()) == 1
