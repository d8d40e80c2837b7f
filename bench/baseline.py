"""Baseline workflows: the same timers, activities and updates as an invoice, doing nothing.

Kept apart from the measurements so that the workflow sandbox loads only this module.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from temporalio import activity, workflow

NOOP_TIMEOUT = timedelta(seconds=30)
# the real invoice waits for its next stage with a timer that a payment cancels; so does the baseline
IDLE_WAIT = timedelta(days=3650)


@dataclass
class BaselinePlan:
    """What a baseline workflow does: activities at start, then at each moment, then after a payment."""

    start_activities: int
    steps: list[tuple[datetime, int]] = field(default_factory=list)
    wait_for_payment: bool = True
    payment_activities: int = 0


@activity.defn(name="do_nothing")
async def do_nothing(label: str) -> str:
    """An activity that does nothing: the cost of scheduling and completing one."""
    return label


@workflow.defn(name="BaselineWorkflow")
class BaselineWorkflow:
    """Runs a :class:`BaselinePlan` with no-op activities; its ``pay`` update ends it."""

    def __init__(self) -> None:
        self._steps_done = 0
        self._paid = False

    @workflow.run
    async def run(self, plan: BaselinePlan) -> int:
        await self._activities(plan.start_activities)
        for moment, activities in plan.steps:
            delay = moment - workflow.now()
            if delay > timedelta(0):
                await workflow.sleep(delay)
            await self._activities(activities)
            self._steps_done += 1
        if plan.wait_for_payment:
            try:
                await workflow.wait_condition(lambda: self._paid, timeout=IDLE_WAIT)
            except TimeoutError:
                return self._steps_done
            await self._activities(plan.payment_activities)
        return self._steps_done

    async def _activities(self, count: int) -> None:
        for n in range(count):
            await workflow.execute_activity(do_nothing, str(n), start_to_close_timeout=NOOP_TIMEOUT)

    @workflow.query
    def steps_done(self) -> int:
        """How many of the plan's steps have run."""
        return self._steps_done

    @workflow.update
    def pay(self, amount_minor: int) -> int:
        """Stands for ``record_payment``: accepted at once, ends the wait."""
        self._paid = True
        return 0


@workflow.defn(name="BareWorkflow")
class BareWorkflow:
    """A workflow that only waits: the cheapest start, and a ``ping`` update that only answers."""

    def __init__(self) -> None:
        self._pings = 0

    @workflow.run
    async def run(self) -> int:
        await workflow.wait_condition(lambda: False)  # no timer: nothing but the start
        return self._pings

    @workflow.update
    def ping(self, amount_minor: int) -> int:
        """Stands for ``record_payment`` with nothing behind it."""
        self._pings += 1
        return self._pings
