"""The SMTP server and the equipment controller refuse connections for a while; one piece of equipment
never answers."""

from __future__ import annotations

import asyncio
import os
import time
import uuid

from tests.faults.checks import run_under_fault
from tests.faults.fates import LADDER, Fate, scripted_invoices
from tests.faults.stack import FaultStack

SOAK = os.environ.get("DUNNING_SOAK") == "1"
INVOICES = 64 if SOAK else 16
# slow enough that invoices are still being issued while the peers refuse
STARTS_PER_SECOND = 3.0 if SOAK else 1.0
DOWN_FOR_S = 60.0 if SOAK else 30.0  # the equipment's 6 tries span about 155 s: it must be back well before
# a piece nothing answers for is given up after its 6th try, about 155 s after the first: the soak waits for
# that against the real stack (the time-skipping tests in test_equipment_lifecycle.py prove it in make test)
NEVER_ANSWERING = SOAK
DEADLINE_S = 6 * 60.0
CUTS_TIMEOUT_S = 60.0
FAST_LADDER = [(stage, n) for n, (stage, _) in enumerate(LADDER, start=1)]  # a stage a second


async def peers_down(stack: FaultStack, cutting_first: list[str]) -> None:
    """Once the controller has cut the pieces ``cutting_first``, refuse SMTP and controller connections for
    ``DOWN_FOR_S``. (Their invoices' 155 s of tries on a never-answering piece, the test's longest wait, then
    run alongside the outage instead of after it: a refused notice holds an invoice's next stage back.)"""
    deadline = time.monotonic() + CUTS_TIMEOUT_S
    while not all(stack.controller.calls(equipment_id, "suspend") for equipment_id in cutting_first):
        if time.monotonic() > deadline:
            raise AssertionError(
                f"the controller saw no cut of {', '.join(cutting_first)} within {CUTS_TIMEOUT_S:.0f} s"
            )
        await asyncio.sleep(0.2)
    await stack.peers_down(smtp=True, controller=True, down_for=DOWN_FOR_S)


async def test_peers_refusing_then_back_and_one_never():
    """16 invoices (soak: 64) over every fate, started 1 a second (soak: 3); about 10 s in, the SMTP server
    and the customers' equipment controller refuse every connection for 30 s (soak: 60 s), while invoices
    are issued, warned and suspended. When they are back, every notice and every cut happens once, and
    nothing twice. The second piece of equipment of one invoice that is paid after its suspension and of
    one that is written off never answers (soak only): after its retries it is a ``suspend_failed`` event and
    in ``FailedEquipment`` (the ops query), the invoice goes on, and only what was cut is restored."""
    scripts = scripted_invoices(INVOICES, run=f"PD{uuid.uuid4().hex[:4]}")
    never = [next(s for s in scripts if s.fate == fate) for fate in (Fate.PAID_AFTER_SUSPENSION, Fate.WRITTEN_OFF)]
    for script in never:  # first and fast: the controller's outage starts once they are cut
        script.ladder = FAST_LADDER
    scripts = never + [s for s in scripts if s not in never]
    unreachable = frozenset(script.equipment_ids[1] for script in never) if NEVER_ANSWERING else frozenset()
    await run_under_fault(
        scripts,
        STARTS_PER_SECOND,
        DEADLINE_S,
        lambda stack: peers_down(stack, [script.equipment_ids[0] for script in never]),
        f"smtp and controller down {DOWN_FOR_S:.0f} s",
        unreachable=unreachable,
    )
