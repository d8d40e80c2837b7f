"""An SMTP server slower than the notice's lease: each step within the sender's timeout, the whole message not
within the activity's start-to-close timeout (the lease). The next attempt sends the notice again once the lease
has ended: the server has it twice, with the same Message-ID, which a receiver drops; nothing else twice."""

from __future__ import annotations

import asyncio
import os
import uuid

import pytest

from tests.faults.checks import run_under_fault
from tests.faults.fates import Fate, scripted_invoices
from tests.faults.stack import FaultStack

SOAK = os.environ.get("DUNNING_SOAK") == "1"
INVOICES = 4
STARTS_PER_SECOND = 1.0
SLOW_STEP_S = 25.0  # MAIL, RCPT and DATA: 75 s in all, against a 30 s timeout per step and a 60 s lease
DEADLINE_S = 5 * 60.0

# in ``make test`` through ``test_together`` (all the newer faults in one run); alone, at volume, in ``make soak``
pytestmark = pytest.mark.skipif(not SOAK, reason="runs in make soak (DUNNING_SOAK=1); make test runs test_together")


async def slow_first_message(stack: FaultStack) -> None:
    stack.smtp.slow_down(messages=1, step_s=SLOW_STEP_S)
    await asyncio.sleep(0)


async def test_smtp_slower_than_the_notice_lease():
    """4 invoices, paid when issued or once reminded; the SMTP server answers MAIL, RCPT and DATA of the first
    message 25 s late each. The first invoice's notice reaches the server twice with one Message-ID (one
    redelivery), and every other check passes."""
    scripts = scripted_invoices(
        INVOICES, run=f"SL{uuid.uuid4().hex[:4]}", fates=[Fate.PAID_WHEN_ISSUED, Fate.PAID_EARLY]
    )
    report = await run_under_fault(
        scripts, STARTS_PER_SECOND, DEADLINE_S, slow_first_message, "smtp slower than the notice lease"
    )
    assert len(report.redelivered) == 1, f"expected one second copy of the slow message: {report.redelivered}"
