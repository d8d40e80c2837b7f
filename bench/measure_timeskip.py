"""Measurement 5: one invoice through the full default policy in the time-skipping test server.

Sending window, public holidays, every stage, the monthly late fees, legal review and a
write-off decision, with the recording activities of ``bench.recording``. Wall time per invoice
(target under 2 s), against a baseline workflow with as many timers and activities and one
update; and the same invoices unsandboxed, to show what the workflow sandbox costs.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from statistics import median

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import UnsandboxedWorkflowRunner, Worker, WorkflowRunner

from bench.baseline import BaselinePlan, BaselineWorkflow, do_nothing
from bench.recording import Recorder
from bench.report import Figure, Measurement, Target
from bench.workload import Say, history_shape, open_invoice, poll
from worker.embedded import find_executable
from worker.sandbox import workflow_runner
from workflows import policy
from workflows.customer import CustomerWorkflow
from workflows.invoice import InvoiceWorkflow
from workflows.models import DecideLegal, InvoiceState, LegalDecision, StageAction
from workflows.search_attributes import ALL as SEARCH_ATTRIBUTES
from workflows.state import InvoiceWorkflowInput

WALL_TIME_TARGET = Target(on="value", op="<=", bound=2.0)
# past the legal review, however far the sending window and holidays pushed it
AFTER_LEGAL_REVIEW = timedelta(days=6)
TIMEOUT = 120.0


@dataclass(frozen=True)
class TimeskipSizes:
    invoices: int


async def time_skipping_environment() -> WorkflowEnvironment:
    """The time-skipping test server with the invoice's search attributes registered."""
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=find_executable("temporal-test-server"),
        test_server_startup_timeout=timedelta(seconds=60),
    )
    await env.client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(
            namespace=env.client.namespace,
            search_attributes={key.name: IndexedValueType.ValueType(key.indexed_value_type) for key in SEARCH_ATTRIBUTES},
        )
    )
    return env


@dataclass(frozen=True)
class Run:
    """One invoice through the policy: wall time, its workflow, and the simulated time to its legal review."""

    seconds: float
    workflow_id: str
    span: timedelta


async def _one_invoice(env: WorkflowEnvironment, client: Client, queue: str) -> Run:
    began = time.perf_counter()
    started_at = await env.get_current_time()
    invoice = open_invoice(f"T-{uuid.uuid4().hex[:8]}", started_at.date())
    handle = await client.start_workflow(
        InvoiceWorkflow.run, InvoiceWorkflowInput(invoice=invoice), id=invoice.workflow_id, task_queue=queue
    )
    legal_review = policy.stage_due_at(invoice, invoice.policy.stage(StageAction.LEGAL_REVIEW), timedelta(0))
    await env.sleep(legal_review + AFTER_LEGAL_REVIEW - await env.get_current_time())
    await poll(
        lambda: handle.query(InvoiceWorkflow.status), lambda s: s.state == InvoiceState.LEGAL_REVIEW, TIMEOUT, 0.05
    )
    await handle.execute_update(InvoiceWorkflow.decide_legal, DecideLegal(decision=LegalDecision.WRITE_OFF))
    outcome = await handle.result()
    if outcome.state != InvoiceState.WRITTEN_OFF:
        raise RuntimeError(f"{invoice.invoice_id} ended {outcome.state}")
    return Run(time.perf_counter() - began, handle.id, legal_review - started_at)


async def _one_baseline(
    env: WorkflowEnvironment, client: Client, queue: str, shape: dict[str, int], span: timedelta
) -> float:
    """A baseline workflow with the invoice's timers (spread over the same span) and activities."""
    began = time.perf_counter()
    now = await env.get_current_time()
    timers = max(1, shape["timers"] - 1)  # the last timer is the wait the update ends
    activities = shape["activities"]
    per_step, first = divmod(activities, timers + 1)
    plan = BaselinePlan(
        start_activities=per_step + first,
        steps=[(now + span * (n + 1) / timers, per_step) for n in range(timers)],
    )
    handle = await client.start_workflow(BaselineWorkflow.run, plan, id=f"TB-{uuid.uuid4().hex[:8]}", task_queue=queue)
    await env.sleep(span + AFTER_LEGAL_REVIEW)
    await poll(lambda: handle.query(BaselineWorkflow.steps_done), lambda done: done == timers, TIMEOUT, 0.05)
    await handle.execute_update(BaselineWorkflow.pay, 1)
    await handle.result()
    return time.perf_counter() - began


def _worker(client: Client, queue: str, runner: WorkflowRunner) -> Worker:
    return Worker(
        client,
        task_queue=queue,
        workflows=[InvoiceWorkflow, CustomerWorkflow, BaselineWorkflow],
        activities=[*Recorder().activities, do_nothing],
        workflow_runner=runner,
    )


async def measure_timeskip(sizes: TimeskipSizes, report_progress: Say = lambda text: None) -> Measurement:
    real_s, unsandboxed_s, baseline_s = [], [], []
    async with await time_skipping_environment() as env:
        config = env.client.config()
        config["data_converter"] = pydantic_data_converter
        client = Client(**config)
        shape: dict[str, int] = {}
        async with _worker(client, "timeskip", workflow_runner()):
            for n in range(sizes.invoices):
                report_progress(f"time-skipping: invoice {n + 1} of {sizes.invoices}")
                run = await _one_invoice(env, client, "timeskip")
                real_s.append(run.seconds)
                shape = shape or history_shape(await client.get_workflow_handle(run.workflow_id).fetch_history())
                report_progress(f"time-skipping: baseline {n + 1} of {sizes.invoices}")
                baseline_s.append(await _one_baseline(env, client, "timeskip", shape, run.span))
        async with _worker(client, "timeskip-unsandboxed", UnsandboxedWorkflowRunner()):
            for n in range(sizes.invoices):
                report_progress(f"time-skipping: unsandboxed invoice {n + 1} of {sizes.invoices}")
                unsandboxed_s.append((await _one_invoice(env, client, "timeskip-unsandboxed")).seconds)
    return Measurement(
        name="time_skipping",
        figures=[
            Figure(
                name="full default policy, wall time per invoice (median)",
                unit="s",
                measured=median(real_s),
                baseline=median(baseline_s),
                target=WALL_TIME_TARGET,
            )
        ],
        details={
            "invoices": sizes.invoices,
            "dunning_s": [round(s, 3) for s in real_s],
            "baseline_s": [round(s, 3) for s in baseline_s],
            "unsandboxed_s": [round(s, 3) for s in unsandboxed_s],
            "history_shape": shape,
        },
    )
