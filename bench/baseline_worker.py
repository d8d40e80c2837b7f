"""``python -m bench.baseline_worker``: the baseline workflows on their own task queue, in their own process.

Connects like the service's worker (``client.temporal.connect``: same data converter, same
sandbox, same slots and cache) with ``DUNNING_TEMPORAL_ADDRESS`` and ``DUNNING_TASK_QUEUE`` from the
environment.
"""

from __future__ import annotations

import asyncio
import contextlib

from temporalio.worker import Worker

from bench.baseline import BareWorkflow, BaselineWorkflow, do_nothing
from client.settings import Settings
from client.temporal import connect
from worker.sandbox import workflow_runner


async def run_baseline_worker(settings: Settings) -> None:
    """Poll the baseline task queue until cancelled."""
    client = await connect(settings)
    worker = Worker(
        client,
        task_queue=settings.task_queue,
        workflows=[BaselineWorkflow, BareWorkflow],
        activities=[do_nothing],
        workflow_runner=workflow_runner(),
        max_concurrent_activities=settings.worker_activity_slots,
        max_concurrent_workflow_tasks=settings.worker_workflow_task_slots,
        max_cached_workflows=settings.worker_cached_workflows,
    )
    await worker.run()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_baseline_worker(Settings()))
