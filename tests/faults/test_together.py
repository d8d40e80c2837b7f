"""The fault cases in two runs, for ``make test``: each on its own, at volume, runs in ``make soak``.

The infrastructure run: the worker killed, the dev server restarted, PostgreSQL stopped (``test_worker_killed``,
``test_temporal_restarted``, ``test_postgres_down``). The newer cases' run: API intake, encryption, two workers,
a rebuild cut, slow SMTP (``test_api_intake``, ``test_encrypted``, ``test_two_workers``, ``test_rebuild_cut``,
``test_slow_smtp``)."""

from __future__ import annotations

import asyncio
import uuid

from client.codec import new_key
from tests.faults.checks import run_under_fault
from tests.faults.fates import scripted_invoices
from tests.faults.stack import FaultStack
from tests.faults.test_api_intake import nothing_unapplied
from tests.faults.test_encrypted import history_is_encrypted
from tests.faults.test_rebuild_cut import restart_during_rebuild
from tests.faults.test_slow_smtp import SLOW_STEP_S

INVOICES = 16
STARTS_PER_SECOND = 2.0
DEADLINE_S = 6 * 60.0
INFRASTRUCTURE_INVOICES = 24
POSTGRES_DOWN_S = 15.0
TEMPORAL_DOWN_S = 5.0


async def infrastructure_one_after_another(stack: FaultStack) -> None:
    """5 s in, the worker SIGKILLed (back after 2 s); 5 s later the dev server stopped for 5 s and started on its
    SQLite file; 5 s later PostgreSQL stopped for 15 s and started on its data: while invoices are being started,
    issued and escalated."""
    await asyncio.sleep(5.0)
    await stack.kill_workers(down_for=2.0)
    await asyncio.sleep(5.0)
    await stack.restart_temporal(down_for=TEMPORAL_DOWN_S)
    await asyncio.sleep(5.0)
    await stack.stop_postgres(down_for=POSTGRES_DOWN_S)


async def test_infrastructure_faults_one_after_another():
    """24 invoices over every fate, started 2 a second; the worker is SIGKILLed, the dev server restarted and
    PostgreSQL stopped for 15 s, one after the other. Every check of ``checks`` passes: each invoice ends as its
    fate says (money and last sequence the same in workflow, log and projection), every notice step reached the
    SMTP server once, every cut and restore was done once, and the event log has no gap and no duplicate."""
    scripts = scripted_invoices(INFRASTRUCTURE_INVOICES, run=f"TI{uuid.uuid4().hex[:4]}")
    await run_under_fault(
        scripts,
        STARTS_PER_SECOND,
        DEADLINE_S,
        infrastructure_one_after_another,
        f"worker killed, temporal restarted {TEMPORAL_DOWN_S:.0f} s, postgres down {POSTGRES_DOWN_S:.0f} s",
    )


async def one_after_another(stack: FaultStack) -> None:
    """4 s in, one of the two workers killed, then the API; then the next message slowed beyond its lease
    (after the kills, which could end its attempt; before the rebuild, while notices still flow: armed after
    it, the run sometimes had no message left to slow); then PostgreSQL stopped while a rebuild waits half-way."""
    await asyncio.sleep(4.0)
    await stack.kill_workers(down_for=2.0, only_one=True)
    await stack.kill_api(down_for=2.0)
    stack.smtp.slow_down(messages=1, step_s=SLOW_STEP_S)
    await restart_during_rebuild(stack)


async def test_new_faults_together():
    """16 invoices over every fate, started 2 a second on two workers (a projector each) with payload
    encryption on; payments through the API's intake and the signed webhook in turn. One worker, then the API,
    is SIGKILLed; PostgreSQL stops for 8 s while ``dunning projections rebuild`` waits half-way; then the SMTP
    server answers the next message slower than its lease. Every check of ``checks`` passes (money and
    last sequence in workflow, log, projection and script), no payment is kept unapplied, the history holds
    only encrypted payloads, and the slow message came twice with one Message-ID."""
    scripts = scripted_invoices(INVOICES, run=f"TG{uuid.uuid4().hex[:4]}")

    async def also_check(stack: FaultStack) -> list[str]:
        return await nothing_unapplied(stack) + await history_is_encrypted(stack, scripts[0].workflow_id)

    report = await run_under_fault(
        scripts,
        STARTS_PER_SECOND,
        DEADLINE_S,
        one_after_another,
        "api and webhook, encryption, two workers, worker and api killed, postgres cut mid-rebuild, slow smtp",
        codec_keys=f"k1:{new_key()}",
        through_api=True,
        workers=2,
        also_check=also_check,
    )
    assert any("(smtp slow to accept" in line for line in report.redelivered), report.redelivered
