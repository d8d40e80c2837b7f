"""PostgreSQL is stopped for 30 s while invoices are in flight: activities retry, nothing is lost."""

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
OUTAGES = 2 if SOAK else 1
STARTS_PER_SECOND = 3.0
FIRST_STOP_AFTER_S = 6.0
BETWEEN_STOPS_S = 20.0
DOWN_FOR_S = 30.0
DEADLINE_S = 6 * 60.0


async def test_postgres_down_for_30_seconds():
    """24 invoices (soak: 120) over every fate; 6 s in, PostgreSQL is stopped for 30 s (soak: twice,
    20 s apart) and started again on the same data. Notices, events, service blocks and equipment
    records retry until it is back; afterwards every invoice ended as its fate says, the event log is
    complete and gap-free, every notice step reached the SMTP server once, and the projections (the
    worker's projector lost its connection too) equal a rebuild from the events."""
    scripts = scripted_invoices(INVOICES, run=f"PG{uuid.uuid4().hex[:4]}")
    outages = functools.partial(repeat_fault, first_after=FIRST_STOP_AFTER_S, between=BETWEEN_STOPS_S, times=OUTAGES)
    await run_under_fault(
        scripts,
        STARTS_PER_SECOND,
        DEADLINE_S,
        lambda stack: outages(functools.partial(stack.stop_postgres, down_for=DOWN_FOR_S)),
        f"postgres down {OUTAGES} x {DOWN_FOR_S:.0f} s",
    )
