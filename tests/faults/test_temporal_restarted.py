"""The Temporal dev server (SQLite persistence) is stopped and started again while invoices are in flight."""

from __future__ import annotations

import functools
import os
import uuid

import pytest

from tests.faults.checks import run_under_fault
from tests.faults.fates import scripted_invoices
from tests.faults.stack import repeat_fault

SOAK = os.environ.get("DUNNING_SOAK") == "1"
pytestmark = pytest.mark.skipif(not SOAK, reason="runs in make soak (DUNNING_SOAK=1); make test runs test_together")
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
    restarts = functools.partial(repeat_fault, first_after=FIRST_STOP_AFTER_S, between=BETWEEN_STOPS_S, times=RESTARTS)
    await run_under_fault(
        scripts,
        STARTS_PER_SECOND,
        DEADLINE_S,
        lambda stack: restarts(functools.partial(stack.restart_temporal, down_for=DOWN_FOR_S)),
        f"temporal restarted {RESTARTS} time(s)",
    )
