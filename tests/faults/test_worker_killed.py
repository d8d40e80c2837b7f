"""The worker is killed with SIGKILL at random moments while invoices are in flight at every stage."""

from __future__ import annotations

import asyncio
import os
import random
import time
import uuid

import pytest

from tests.faults.checks import run_under_fault
from tests.faults.fates import STATUS_READS, scripted_invoices
from tests.faults.stack import FaultStack

SOAK = os.environ.get("DUNNING_SOAK") == "1"
pytestmark = pytest.mark.skipif(not SOAK, reason="runs in make soak (DUNNING_SOAK=1); make test runs test_together")
INVOICES = 200 if SOAK else 40
KILLS = 12 if SOAK else 3
STARTS_PER_SECOND = 2.0
FIRST_KILL_AFTER_S = 5.0
DOWN_FOR_S = (0.5, 3.0)
# the service's own timeouts bound the recovery: a notice in flight when its worker dies is retried
# after its start-to-close timeout (1 minute, and its delivery lease lasts as long)
DEADLINE_S = 10 * 60.0 if SOAK else 6 * 60.0


async def kill_at_random(stack: FaultStack, rng: random.Random, kills: int, within: float) -> None:
    """``kills`` SIGKILLs of the worker at random moments in the next ``within`` seconds, each followed by a
    restart after a random pause."""
    moments = sorted(rng.uniform(FIRST_KILL_AFTER_S, within) for _ in range(kills))
    began = time.monotonic()
    for moment in moments:
        await asyncio.sleep(max(0.0, began + moment - time.monotonic()))
        await stack.kill_workers(down_for=rng.uniform(*DOWN_FOR_S))


async def test_worker_killed_at_random_moments():
    """40 invoices (soak: 200) over every fate, started 2 a second; the worker is SIGKILLed 3 times (soak:
    12) at random moments while they are started, so while the first ones are issued, escalated, paid,
    disputed, factored and cut (soak: settled and written off too), and started again after up to 3 s.
    Every invoice ends as its fate says, every notice step reached the SMTP server once, every suspended
    piece of equipment was cut once (and restored once unless written off), and the event log has no gap
    and no duplicate, and every invoice's history replays (``unreplayable``: the SDK defect of
    ``test_worker_gone_mid_stage``, which needs a status query; ``DUNNING_SOAK_STATUS=live`` makes the
    driver's status reads such queries, as routine reads were before they moved to the read model). The
    seed of the kill moments is printed with the result line; ``DUNNING_FAULT_SEED`` replays it."""
    seed = int(os.environ.get("DUNNING_FAULT_SEED", time.time_ns() % 1_000_000))
    rng = random.Random(seed)
    scripts = scripted_invoices(INVOICES, run=f"WK{uuid.uuid4().hex[:4]}")
    # while invoices are started, the first ones escalating up to their suspension meanwhile: the recovery
    # from the last kill (up to a minute, see DEADLINE_S) is most of the test's time
    await run_under_fault(
        scripts,
        STARTS_PER_SECOND,
        DEADLINE_S,
        lambda stack: kill_at_random(stack, rng, KILLS, within=INVOICES / STARTS_PER_SECOND),
        f"worker killed {KILLS} times (seed {seed}, status from {STATUS_READS})",
    )
