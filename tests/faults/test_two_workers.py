"""Two workers, each with its own projector, share the task queue and the event log under load."""

from __future__ import annotations

import asyncio
import os
import uuid

import pytest

from tests.faults.checks import run_under_fault
from tests.faults.fates import scripted_invoices
from tests.faults.stack import FaultStack

SOAK = os.environ.get("DUNNING_SOAK") == "1"
INVOICES = 200 if SOAK else 40
STARTS_PER_SECOND = 8.0 if SOAK else 4.0
DEADLINE_S = 8 * 60.0

# in ``make test`` through ``test_together`` (all the newer faults in one run); alone, at volume, in ``make soak``
pytestmark = pytest.mark.skipif(not SOAK, reason="runs in make soak (DUNNING_SOAK=1); make test runs test_together")


async def no_fault(stack: FaultStack) -> None:
    await asyncio.sleep(0)


async def test_two_workers_each_with_a_projector_under_load():
    """40 invoices (soak: 200) over every fate, started 4 a second (soak: 8) on two worker processes: their
    projectors race for the same batches of the log. Every invoice's money and last sequence agree between
    its workflow, its log and its projection, and the projections equal a rebuild."""
    scripts = scripted_invoices(INVOICES, run=f"TW{uuid.uuid4().hex[:4]}")
    await run_under_fault(
        scripts, STARTS_PER_SECOND, DEADLINE_S, no_fault, "two workers with a projector each", workers=2
    )
