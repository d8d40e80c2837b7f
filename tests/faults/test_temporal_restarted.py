"""The Temporal dev server (SQLite persistence) is stopped and started again while invoices are in flight."""

from __future__ import annotations

import functools
import os
import time
import uuid

from tests.faults.checks import check_run
from tests.faults.fates import Driver, equipment_owners, play_through, scripted_invoices
from tests.faults.stack import fault_stack, repeat_fault

SOAK = os.environ.get("DUNNING_SOAK") == "1"
INVOICES = 120 if SOAK else 24
RESTARTS = 3 if SOAK else 1
STARTS_PER_SECOND = 3.0
FIRST_STOP_AFTER_S = 8.0
BETWEEN_STOPS_S = 15.0
DOWN_FOR_S = 5.0
DEADLINE_S = 6 * 60.0


async def test_temporal_restarted_mid_run():
    """24 invoices (soak: 120) over every fate; 8 s in, while they are issued and escalate, the dev
    server is stopped for 5 s and started again on its SQLite file (soak: 3 times, 15 s apart). The
    worker and the driver ride it out; every invoice ends as its fate says, with every notice step
    received once, every cut and restore done once, and a gap-free event log."""
    scripts = scripted_invoices(INVOICES, run=f"TR{uuid.uuid4().hex[:4]}")
    async with fault_stack(equipment_owners(scripts)) as stack:
        driver = Driver(stack.client, scripts, time.monotonic() + DEADLINE_S, stack.assert_workers_alive)
        await play_through(
            driver,
            STARTS_PER_SECOND,
            repeat_fault(
                functools.partial(stack.restart_temporal, down_for=DOWN_FOR_S),
                first_after=FIRST_STOP_AFTER_S,
                between=BETWEEN_STOPS_S,
                times=RESTARTS,
            ),
        )
        report = await check_run(stack, driver, f"temporal restarted {RESTARTS} time(s)")
        report.notes.append(driver.timeline())
    report.print()
    report.assert_clean()
