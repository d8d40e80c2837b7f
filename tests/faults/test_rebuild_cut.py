"""PostgreSQL restarts while ``dunning projections rebuild`` is half-way: the rebuild fails, readers keep the old
projections (it is one transaction), and a second rebuild and the projectors put everything right."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid

import asyncpg
import pytest

from tests.faults.checks import run_under_fault
from tests.faults.fates import scripted_invoices
from tests.faults.stack import DUNNING, Fault, FaultStack

SOAK = os.environ.get("DUNNING_SOAK") == "1"
INVOICES = 60 if SOAK else 16
STARTS_PER_SECOND = 2.0
REBUILD_AFTER_S = 10.0
DOWN_FOR_S = 8.0
HELD_TIMEOUT_S = 30.0
REBUILD_TIMEOUT_S = 60.0
DEADLINE_S = 6 * 60.0
# a rebuild empties the projection tables in turn, in one transaction: the test holds a row of the last one,
# so the rebuild waits in its DELETE with the others already emptied (the projectors, which only add rows
# there, are not held)
HELD_AT = "DELETE FROM projected_invoice_story"

# in ``make test`` through ``test_together`` (all the newer faults in one run); alone, at volume, in ``make soak``
pytestmark = pytest.mark.skipif(not SOAK, reason="runs in make soak (DUNNING_SOAK=1); make test runs test_together")


async def start_rebuild(stack: FaultStack) -> asyncio.subprocess.Process:
    """``dunning projections rebuild`` against the stack's database, as ops run it."""
    return await asyncio.create_subprocess_exec(
        str(DUNNING),
        "projections",
        "rebuild",
        env=stack.workers.env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )


async def held_at(pool: asyncpg.Pool, rebuild: asyncio.subprocess.Process) -> str:
    """Until the rebuild waits for a lock: the statement it waits in. (Read outside the lock holder's transaction,
    which sees one snapshot of ``pg_stat_activity``.)"""
    deadline = time.monotonic() + HELD_TIMEOUT_S
    while True:
        if rebuild.returncode is not None:
            output = (await rebuild.stdout.read()).decode()
            raise AssertionError(f"the rebuild ended ({rebuild.returncode}) before it waited for the lock:\n{output}")
        queries = await pool.fetch(
            "SELECT pid, state, wait_event, pg_blocking_pids(pid) AS by, query FROM pg_stat_activity"
            " WHERE wait_event_type = 'Lock'"
        )
        for row in queries:
            if row["query"].startswith(HELD_AT):
                return row["query"]
        assert time.monotonic() < deadline, (
            f"no rebuild waited for the lock within {HELD_TIMEOUT_S:.0f} s; waiting: {[dict(r) for r in queries]}"
        )
        await asyncio.sleep(0.1)


async def restart_during_rebuild(stack: FaultStack) -> None:
    """10 s in: hold a row of the last projection table, start a rebuild, and once it waits for the row stop
    PostgreSQL for 8 s. The rebuild must fail; once PostgreSQL is back, a second one must succeed."""
    await asyncio.sleep(REBUILD_AFTER_S)
    holder = await asyncpg.connect(stack.postgres.url)
    await holder.execute("BEGIN")
    deadline = time.monotonic() + HELD_TIMEOUT_S
    while not await holder.fetchval("SELECT 1 FROM projected_invoice_story LIMIT 1 FOR UPDATE"):
        assert time.monotonic() < deadline, f"no story line was projected within {HELD_TIMEOUT_S:.0f} s"
        await asyncio.sleep(0.5)
    cut = await start_rebuild(stack)
    waiting = await held_at(stack.pool, cut)
    await stack.stop_postgres(down_for=DOWN_FOR_S)
    stopped = stack.faults.pop()
    stack.faults.append(Fault(f"{stopped.what} while a rebuild waited in {waiting!r}", stopped.started, stopped.ended))
    with contextlib.suppress(Exception):  # its server went away under it
        await holder.close(timeout=1)
    output, _ = await asyncio.wait_for(cut.communicate(), REBUILD_TIMEOUT_S)
    assert cut.returncode != 0, f"the rebuild cut by the restart exited 0:\n{output.decode()}"
    again = await start_rebuild(stack)
    output, _ = await asyncio.wait_for(again.communicate(), REBUILD_TIMEOUT_S)
    assert again.returncode == 0, f"the second rebuild failed:\n{output.decode()}"


async def test_postgres_restarted_during_a_rebuild():
    """16 invoices (soak: 60) over every fate, started 2 a second; 10 s in, ``dunning projections rebuild``
    runs and, held half-way (the test locks a row of the last projection table), loses PostgreSQL for 8 s. It exits
    with an error; run again it succeeds; the workers' projectors catch up; every invoice's projection agrees
    with its workflow and its log, and the projections equal a rebuild."""
    scripts = scripted_invoices(INVOICES, run=f"RB{uuid.uuid4().hex[:4]}")
    await run_under_fault(
        scripts, STARTS_PER_SECOND, DEADLINE_S, restart_during_rebuild, "postgres restarted during a rebuild"
    )
